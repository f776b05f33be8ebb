"""Defaults of the toy world's commands, in a module that imports nothing: the command line shows them in
``--help`` without loading the toy model (which needs torch). Each is re-exported where it is used."""

from __future__ import annotations

__all__ = ["BENCH_N", "BENCH_SEED"]

#: held-out scenes of the toy bench (:func:`cliplens.experiments.bench.run_bench`) and their seed (stream "test")
BENCH_N = 500
BENCH_SEED = 2024
