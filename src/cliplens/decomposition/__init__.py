"""The exact decomposition of an image embedding into direct effects (:mod:`.decomposition`, the result;
:mod:`.recording`, the forward that makes it; :mod:`.replay`, the factored spatial split of heads that read every
token; :mod:`.algebra`, the frozen head's mapping into the joint space), the LN-sharing rule (:mod:`.shares`),
scores against texts (:mod:`.scores`) and readable summaries (:mod:`.summary`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.decomposition.decomposition import CHECK_TOLERANCE, Decomposition, resolve_layers
    from cliplens.decomposition.recording import decompose
    from cliplens.decomposition.scores import ComponentScores
    from cliplens.decomposition.summary import Contribution, TextSummary, summarize

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "CHECK_TOLERANCE": "cliplens.decomposition.decomposition",
    "ComponentScores": "cliplens.decomposition.scores",
    "Contribution": "cliplens.decomposition.summary",
    "Decomposition": "cliplens.decomposition.decomposition",
    "TextSummary": "cliplens.decomposition.summary",
    "decompose": "cliplens.decomposition.recording",
    "resolve_layers": "cliplens.decomposition.decomposition",
    "summarize": "cliplens.decomposition.summary",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CHECK_TOLERANCE", "ComponentScores", "Contribution", "Decomposition", "TextSummary", "decompose",
    "resolve_layers", "summarize",
]
