"""Segment Anything (SAM) from a local checkpoint, shared by the text-to-points task
(:mod:`cliplens.tasks.points`) and the map methods that use SAM's masks (:mod:`cliplens.maps.corrclip`).

Imports nothing heavy at module level (torch and segment_anything only when a model is built), so that the
command line can list :data:`SAM_TYPES` in ``--help`` without loading them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliplens.errors import InvalidInputError, MissingDependencyError, ModelLoadError, install_hint

if TYPE_CHECKING:
    import torch

__all__ = ["SAM_INSTALL", "SAM_TYPES", "check_sam_checkpoint", "load_sam", "segment_anything"]

#: SAM's image-encoder sizes (``segment_anything.sam_model_registry`` keys)
SAM_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
SAM_INSTALL = install_hint("segment-anything", "sam")


def segment_anything() -> Any:
    """The segment_anything module, or one paragraph saying how to install it."""
    try:
        import segment_anything
    except ImportError:
        raise MissingDependencyError(f"SAM masks need Segment Anything, which is not installed: {SAM_INSTALL}") from None
    return segment_anything


def check_sam_checkpoint(checkpoint: str | os.PathLike, model_type: str = "vit_b") -> Path:
    """Check, before any work, that SAM can be built: the package is installed, the type is known, the
    checkpoint is a local file."""
    segment_anything()
    if model_type not in SAM_TYPES:
        raise InvalidInputError(f"unknown SAM type {model_type!r}; use one of {', '.join(SAM_TYPES)} (the size of "
                                "the checkpoint's image encoder)")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise InvalidInputError(f"SAM checkpoint {str(path)!r} {where}: pass a local SAM checkpoint file (e.g. "
                                f"sam_vit_b_01ec64.pth from the segment-anything repository) for type {model_type}")
    return path


def load_sam(checkpoint: str | os.PathLike, model_type: str = "vit_b", device: str | torch.device = "cpu", *,
             trust_checkpoint: bool = False) -> Any:
    """A SAM model from a local checkpoint (``segment_anything.sam_model_registry[model_type]``).

    SAM is built without weights and the checkpoint is read through cliplens's safe loader
    (:func:`cliplens.checkpoints.load_state_dict`: tensors only unless ``trust_checkpoint``), never by
    segment_anything's own ``torch.load``.
    """
    from cliplens.checkpoints import load_state_dict

    path = check_sam_checkpoint(checkpoint, model_type)
    sa = segment_anything()
    what = f"the SAM checkpoint ({model_type})"
    state = load_state_dict(path, what=what, trust=trust_checkpoint,
                            expected="a SAM checkpoint such as sam_vit_b_01ec64.pth")
    try:
        sam = sa.sam_model_registry[model_type](checkpoint=None)
        sam.load_state_dict(state)
    except Exception as e:  # a wrong type for the file, weights of another model, ...
        raise ModelLoadError(f"cannot load the SAM checkpoint {str(path)!r} as {model_type}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}. Is --sam-type/model_type the checkpoint's (vit_b, "
                             "vit_l or vit_h)?") from None
    return sam.to(device).eval()
