"""What the library asks of a model: :class:`ImageTextModel`, the typed protocol of a CLIP model seen through
cliplens.

Every function that takes ``model`` (maps, tasks, the store, analyses, evaluation, reports) takes one of
these. :class:`cliplens.models.base.CLIPAdapter` (what :func:`cliplens.load` and :func:`cliplens.wrap` return,
for every family) is the one implementation; the protocol lives here, at the bottom of the house, so that
packages which must not import ``models/`` (the store, the analyses, the text side) can name it in their
signatures. It states the members those packages use, with :class:`CLIPAdapter`'s signatures
(``tests/core/test_model_protocol.py`` holds the two together); it adds no behaviour, and is
``runtime_checkable``, so ``isinstance(model, ImageTextModel)`` checks that the members are there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from cliplens.core.forward import ForwardOutput
    from cliplens.core.hooks import Hook
    from cliplens.core.plan import Plan
    from cliplens.core.view import VisionView

__all__ = ["ImageTextModel"]


@runtime_checkable
class ImageTextModel(Protocol):
    """A CLIP-like model as cliplens uses it: a read-only view of its image tower, its own preprocessing and
    text side, the functional forward, and the records that name it (see
    :class:`~cliplens.models.base.CLIPAdapter` for what each member does)."""

    #: the source library (``"open_clip"``, ``"transformers"``, ``"toy"``)
    family: str
    #: the name the model was loaded by
    name: str
    #: where its weights came from (a tag, a file, a Hub id, ``"wrapped"`` or ``"random"``)
    weights: str
    #: the source model object itself
    model: Any
    #: the model's own prompt form (a :data:`cliplens.text.TEMPLATE_SETS` name), ``None`` for CLIP's ensembles
    prompt_templates: str | None

    @property
    def vision(self) -> VisionView: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def preprocess_config(self) -> Any: ...

    @property
    def context_length(self) -> int: ...

    @property
    def random_weights(self) -> bool: ...

    @property
    def logit_scale(self) -> float: ...

    @property
    def logit_bias(self) -> float: ...

    @property
    def score_kind(self) -> str: ...

    def fingerprint(self) -> str: ...

    def text_fingerprint(self) -> str | None: ...

    def describe(self) -> dict[str, Any]: ...

    def preprocess(self, images: Any, *, skip_bad: bool = False, max_pixels: int = ...) -> Tensor: ...

    def encode_text(self, texts: str | Sequence[str], *, normalize: bool = True, batch_size: int = 256,
                    progress: bool = False) -> Tensor: ...

    def encode_image(self, pixel_values: Tensor, *, normalize: bool = False) -> Tensor: ...

    def encode_dense(self, pixel_values: Tensor, *, plan: Plan | None = None, side: str | None = None,
                     normalize: bool = False) -> Tensor: ...

    def run(self, pixel_values: Tensor, *, plan: Plan | None = None, names: Iterable[str] = (),
            hooks: Mapping[str, Hook] | None = None, cls_only: bool = False) -> ForwardOutput: ...

    def decompose(self, pixel_values: Tensor, *, spatial: bool = True, layers: Iterable[int] | int | None = None,
                  last: int | None = None, dtype: torch.dtype | None = None, plan: Plan | None = None,
                  hooks: Mapping[str, Hook] | None = None) -> Any: ...
