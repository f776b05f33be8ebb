"""Neurons' second-order effects next to building the store of the same images, side by side in one run:

    python benchmarks/bench_neurons.py            # add --images N / --layers 7,8,9,10 / --repeats R / --threads T

Model: a ViT-B-16-shaped open_clip model with random weights (224 px, 12 layers, 3,072 neurons per MLP). Images:
``--images`` random 224×224 photos-as-arrays (16 by default: CPU-sized; issue 18's setting is 5,000). Methods,
interleaved, median of ``--repeats`` (each includes preprocessing):

    store           ``build_store`` (float16, non-spatial, no zero-shot classifier): the reference time
    store+neurons   the same with ``neuron_layers`` (what ``cliplens store build --neuron-layers`` keeps)
    effects         every neuron of ``--layers`` (4 layers), from the model's forward: ``SecondOrder`` (weight
                    products computed once inside the timing) then each batch's effects, scaled and written to
                    memory-mapped float16 ``.npy`` files, as ``cliplens neurons`` does on a store without them
    from store      the same effects read back from the store+neurons store (``store_effects``; no forward)

Ratios are to ``store``; the target (issue 18) is effects <= 10x the store.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_store import random_images, vitb16  # the same random ViT-B-16 and images as the store benchmark
from cliplens.analyses.neurons import SecondOrder, store_effects
from cliplens.store import Store, StoreSettings, build_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--layers", default="7,8,9,10")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    model = vitb16()
    data = random_images(args.images)
    tmp = Path(tempfile.mkdtemp(prefix="bench-neurons-"))
    bs = args.batch_size

    def store(neurons: bool = False) -> Path:
        out = tmp / ("store-neurons" if neurons else "store")
        shutil.rmtree(out, ignore_errors=True)
        build_store(model, data, out, settings=StoreSettings(dtype="float16", chunk_size=256, batch_size=bs,
                                                             templates="none",
                                                             neuron_layers=tuple(layers) if neurons else ()))
        return out

    def effects() -> None:
        out = tmp / "effects"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        lens = SecondOrder(model, layers)
        n, E = lens.neurons.numel(), model.vision.embed_dim
        arrays = {k: np.lib.format.open_memmap(out / f"effects-L{k}.npy", mode="w+", dtype=np.float16,
                                               shape=(len(data), n, E)) for k in lens.layers}
        for s in range(0, len(data), bs):
            px = model.preprocess([data[i].image for i in range(s, min(s + bs, len(data)))])
            for k, eff in lens(px).items():
                arrays[k][s:s + px.shape[0]] = eff.scaled().numpy()
        for a in arrays.values():
            a.flush()

    def from_store() -> None:
        out = tmp / "from-store"
        shutil.rmtree(out, ignore_errors=True)
        res = store_effects(Store(tmp / "store-neurons"), model, layers, out, batch_size=bs, dtype="float16")
        assert res.source == "store"

    methods = {"store": store, "store+neurons": lambda: store(True), "effects": effects, "from store": from_store}
    times: dict[str, list[float]] = {k: [] for k in methods}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["store"])
    print(f"ViT-B-16 (random weights), {args.images} images at 224 px, neurons of layers {args.layers} "
          f"(4 x 3,072), batch {bs}, {args.threads} threads, torch {torch.__version__}, {platform.processor() or 'cpu'}")
    print(f"{'method':<16}{'seconds':>10}{'per image':>12}{'x store':>10}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:<16}{t:>10.2f}{t / args.images:>12.3f}{t / base:>10.2f}")


if __name__ == "__main__":
    main()
