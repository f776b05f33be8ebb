"""The values task options take, in a module that imports nothing heavy: the command line lists them in ``--help``
without loading the tasks (which need torch). Each is re-exported by the module that uses it."""

from __future__ import annotations

from cliplens.models.sam import SAM_TYPES  # SAM's image-encoder sizes, defined beside SAM's loading

__all__ = ["MULTILABEL_METHODS", "SAM_TYPES"]

#: how classes are scored for multi-label recognition (:func:`cliplens.tasks.multilabel.score_classes`)
MULTILABEL_METHODS: tuple[str, ...] = ("surgery", "global")
