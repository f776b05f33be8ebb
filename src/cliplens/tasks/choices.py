"""The values task options take, in a module that imports nothing: the command line lists them in ``--help``
without loading the tasks (which need torch). Each is re-exported by the module that uses it."""

from __future__ import annotations

__all__ = ["MULTILABEL_METHODS", "SAM_TYPES"]

#: how classes are scored for multi-label recognition (:func:`cliplens.tasks.multilabel.score_classes`)
MULTILABEL_METHODS: tuple[str, ...] = ("surgery", "global")
#: SAM's image-encoder sizes (``segment_anything.sam_model_registry`` keys; :func:`cliplens.tasks.points.load_sam`)
SAM_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
