"""The one model abstraction every family plugs into.

A family adapter (open_clip, Hugging Face ``transformers``, the toy CLIP, …)
subclasses :class:`CLIPAdapter` and implements only what differs between
libraries:

* :meth:`_build_vision_view` – a read-only :class:`~cliplens.models.view.VisionView`
  over the source's image-tower weights (no copies);
* :meth:`_tokenize` / :meth:`_count_tokens` / :meth:`_encode_tokens` – the
  source's own tokenizer and text tower;
* :attr:`preprocess_config` – the source's preprocessing, as data;
* :meth:`source_encode_image` – the source library's own image forward
  (used for parity tests and benchmarks, never by cliplens itself).

Everything else (the functional forward, decomposition, text validation,
batching, image loading) is written once, here and in the modules it calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cliplens.models.view import VisionView

if TYPE_CHECKING:  # pragma: no cover
    from cliplens.decomposition import Decomposition
    from cliplens.forward import ForwardOutput
    from cliplens.images import ImageInput, PreprocessConfig


class CLIPAdapter(ABC):
    """A loaded CLIP model, seen through cliplens.

    Attributes:
        family: the source library (``"open_clip"``, ``"transformers"``, ``"toy"``).
        name: the name the model was loaded by.
        model: the source model object itself (never copied).
    """

    family: str = ""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name
        self._view: VisionView | None = None
        self._preprocessor: Any = None

    # ---- what a family implements -------------------------------------------
    @abstractmethod
    def _build_vision_view(self) -> VisionView: ...

    @property
    @abstractmethod
    def preprocess_config(self) -> PreprocessConfig: ...

    @property
    @abstractmethod
    def context_length(self) -> int: ...

    @abstractmethod
    def _tokenize(self, texts: Sequence[str]) -> Any:
        """Tokenize already-validated texts into whatever :meth:`_encode_tokens` takes."""

    @abstractmethod
    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text needs, start/end tokens included, before truncation."""

    @abstractmethod
    def _encode_tokens(self, tokens: Any) -> Tensor:
        """The source's text tower: tokens -> un-normalised ``[B, E]`` embeddings."""

    @abstractmethod
    def source_encode_image(self, pixel_values: Tensor) -> Tensor:
        """The source library's own ``encode_image`` (un-normalised), for parity checks."""

    # ---- shared -------------------------------------------------------------
    @property
    def vision(self) -> VisionView:
        """The read-only view of the image tower (built once)."""
        if self._view is None:
            self._view = self._build_vision_view()
        return self._view

    @property
    def device(self) -> torch.device:
        return self.vision.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.dtype

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        return float(torch.as_tensor(scale).detach().float().exp())

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> CLIPAdapter:
        """Move the source model (in place) and rebuild the view."""
        self.model.to(device=device, dtype=dtype)
        self._view = None
        return self

    def __repr__(self) -> str:
        v = self.vision
        return (
            f"{type(self).__name__}(name={self.name!r}, layers={v.num_layers}, heads={v.num_heads}, "
            f"width={v.width}, embed_dim={v.embed_dim}, image_size={v.image_size}, "
            f"patch={v.patch_size})"
        )

    # ---- images -------------------------------------------------------------
    def preprocess(self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False) -> Tensor:
        """Load and preprocess images exactly as the source model does -> ``[B, 3, H, W]``."""
        return self.preprocess_with_report(images, skip_bad=skip_bad).pixel_values

    def preprocess_with_report(self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False) -> Any:
        """Like :meth:`preprocess`, also saying which inputs were kept and which skipped.

        Returns a :class:`cliplens.images.PreprocessResult` (``pixel_values``, ``kept``, ``skipped``).
        """
        import dataclasses

        from cliplens.errors import ImageLoadError
        from cliplens.images import Preprocessor

        if self._preprocessor is None:
            self._preprocessor = Preprocessor(self.preprocess_config)
        report = self._preprocessor.preprocess_with_report(images, skip_bad=skip_bad)
        if report.pixel_values.shape[0] == 0 and report.skipped:
            first = report.skipped[0]
            raise ImageLoadError(f"none of the {len(report.skipped)} images could be loaded; first problem: "
                                 f"{first.source}: {first.reason}")
        return dataclasses.replace(report, pixel_values=report.pixel_values.to(self.device, self.dtype))

    # ---- text ---------------------------------------------------------------
    @torch.no_grad()
    def encode_text(
        self,
        texts: str | Sequence[str],
        *,
        normalize: bool = True,
        batch_size: int = 256,
        progress: bool = False,
    ) -> Tensor:
        """Embed texts with the source's own tokenizer and text tower -> ``[T, E]``.

        Empty texts raise :class:`~cliplens.errors.EmptyTextError`; texts longer than the
        context are truncated with a warning naming them.
        """
        from cliplens.text import encode_texts

        return encode_texts(self, texts, normalize=normalize, batch_size=batch_size, progress=progress)

    # ---- image side: cliplens's own functional forward ----------------------
    def run(
        self,
        pixel_values: Tensor,
        *,
        names: Iterable[str] = (),
        hooks: Mapping[str, Callable[[Tensor, str], Tensor | None]] | None = None,
        cls_only: bool = False,
        attention: str = "vanilla",
    ) -> ForwardOutput:
        """Run the functional forward, recording ``names`` (see :mod:`cliplens.forward`)."""
        from cliplens.forward import run_vision

        return run_vision(
            self.vision, self._check_pixels(pixel_values), names=names, hooks=hooks,
            cls_only=cls_only, attention=attention,
        )

    def run_with_cache(
        self, pixel_values: Tensor, names: Iterable[str], **kwargs: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """TransformerLens-style: ``(embedding, cache)`` for the recorded ``names``."""
        out = self.run(pixel_values, names=names, **kwargs)
        return out.embedding, out.cache

    @torch.no_grad()
    def encode_image(self, pixel_values: Tensor, *, normalize: bool = False) -> Tensor:
        """The image embedding from cliplens's functional forward (equals the source's)."""
        emb = self.run(pixel_values).embedding
        return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb

    @torch.no_grad()
    def decompose(
        self,
        pixel_values: Tensor,
        *,
        spatial: bool = True,
        layers: Iterable[int] | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Decomposition:
        """Decompose the image embedding into direct effects; see :mod:`cliplens.decomposition`.

        Args:
            pixel_values: preprocessed ``[B, 3, H, W]`` (see :meth:`preprocess`).
            spatial: keep each attention head's contribution per source token.
            layers: which layers get per-head (and per-token) attention terms; an int ``k``
                means the last ``k`` layers; ``None`` means all. Other layers keep one
                attention term each. The decomposition is exact either way.
            dtype: dtype for the decomposition's stored terms (default float32).
        """
        from cliplens.decomposition import decompose

        dec = decompose(self.vision, self._check_pixels(pixel_values), spatial=spatial, layers=layers, dtype=dtype)
        dec.text_encoder = self
        return dec

    def _check_pixels(self, pixel_values: Tensor) -> Tensor:
        from cliplens.images import check_pixel_values

        return check_pixel_values(pixel_values, self.vision)
