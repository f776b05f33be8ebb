"""The exact decomposition of an image embedding into direct effects (:mod:`.decomposition`), the
LN-sharing rule (:mod:`.shares`), scores against texts (:mod:`.scores`) and readable summaries
(:mod:`.summary`)."""

from __future__ import annotations

from cliplens.decomposition.decomposition import CHECK_TOLERANCE, Decomposition, decompose, resolve_layers
from cliplens.decomposition.scores import ComponentScores
from cliplens.decomposition.summary import Contribution, TextSummary, summarize

__all__ = [
    "CHECK_TOLERANCE", "ComponentScores", "Contribution", "Decomposition", "TextSummary", "decompose",
    "resolve_layers", "summarize",
]
