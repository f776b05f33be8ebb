"""The one model abstraction every family plugs into.

A family adapter (open_clip, Hugging Face ``transformers``, the toy CLIP, …) subclasses
:class:`CLIPAdapter` and implements only what differs between libraries:

* :meth:`_build_vision_view` – a read-only :class:`~cliplens.core.view.VisionView` over the
  source's image-tower weights (no copies);
* :meth:`_tokenize` / :meth:`_count_tokens` / :meth:`_encode_tokens` – the source's own tokenizer
  and text tower; optionally :meth:`_pooled_positions` (which towers may run only up to the longest
  prompt of a batch: the rule is stated there), :meth:`_text_parts` (what the text-side fingerprint
  covers), :meth:`_warn_texts` (words the tokenizer cannot read) and :attr:`prompt_templates`;
* :attr:`preprocess_config` – the source's preprocessing, as data;
* :meth:`source_encode_image` – the source library's own image forward (used for parity tests and
  benchmarks, never by cliplens itself).

Everything else (the functional forward, decomposition, text validation, batching, image loading)
is written once, here and in the modules it calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cliplens.core.forward import ForwardOutput, run_vision
from cliplens.core.hooks import Hook
from cliplens.core.plan import Plan
from cliplens.core.view import VisionView, fingerprint_tensors, fingerprint_view
from cliplens.decomposition.decomposition import Decomposition
from cliplens.decomposition.recording import decompose
from cliplens.errors import InvalidInputError
from cliplens.images.config import PreprocessConfig
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.images.preprocess import (
    ImageInput,
    Preprocessor,
    PreprocessResult,
    check_pixel_values,
    pixels_or_raise,
)
from cliplens.models.hub import DEFAULT_SEED, RANDOM_WEIGHTS
from cliplens.text.cache import tokenizer_state
from cliplens.text.encode import encode_texts

__all__ = ["DEFAULT_SEED", "RANDOM_WEIGHTS", "CLIPAdapter"]


class CLIPAdapter(ABC):
    """A loaded CLIP model, seen through cliplens.

    Attributes:
        family: the source library (``"open_clip"``, ``"transformers"``, ``"toy"``).
        name: the name the model was loaded by.
        weights: where its weights came from (a pretrained tag, a file, a Hub id, ``"wrapped"`` for a
            model object the user passed, or ``"random"``).
        seed: the seed random weights were drawn from (``None`` for other weights).
        model: the source model object itself (never copied).
    """

    family: str = ""
    #: the model's own prompt form (a :data:`cliplens.text.TEMPLATE_SETS` name) where CLIP's prompt ensembles
    #: do not suit it (the toy CLIP's vocabulary has none of their words); ``None``: a real CLIP, which takes
    #: CLIP's ensembles (each command's default). :func:`cliplens.text.default_templates` reads it.
    prompt_templates: str | None = None

    def __init__(self, model: Any, name: str, *, weights: str = "") -> None:
        self.model = model
        self.name = name
        self.weights = weights
        self.seed: int | None = None
        self._view: VisionView | None = None
        self._preprocessor: Preprocessor | None = None
        self._fingerprint: tuple[Any, str] | None = None
        self._text_fingerprint: tuple[Any, str | None] | None = None

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

    # ---- what a family may add on the text side ----------------------------------
    def _pooled_positions(self, tokens: Any) -> Tensor | None:
        """For each row of ``tokens`` (from :meth:`_tokenize`), the last position its embedding reads; ``None``
        when the tower must always see the whole context.

        **The rule** (one place for every family): a text tower may run only up to the longest prompt of a
        batch when (1) its attention is causal (a position attends to itself and earlier positions only) and
        (2) its embedding is read at one position, the end-of-text token (open_clip's ``argmax`` / ``eos``
        pooling, transformers CLIP's eos pooling), or pooled over the positions up to it (the toy CLIP's
        mean). The embedding then depends on no later position, so the padding after the batch's largest
        pooled position can be cut (:func:`cliplens.text.encode.encode_validated` does, and the family's
        :meth:`_encode_tokens` takes the shorter tokens); the result equals the full-length one up to float
        rounding (other matrix shapes). Towers that must keep the full length return ``None``: bidirectional
        attention (SigLIP-style, trained with max-length padding), ``'last'`` / ``'first'`` / class-token
        pooling, Hugging Face towers inside open_clip, and any class the family does not know (a subclass
        may change the forward). The default is ``None``.
        """
        return None

    def _text_parts(self) -> tuple[list[Tensor], Any, str] | None:
        """What the text embedding depends on: the text tower's tensors (parameters and buffers), its
        tokenizer, and a string of its settings (module structure, pooling, context); ``None`` when unknown
        (then nothing on the text side is cached). See :meth:`text_fingerprint`."""
        return None

    def _warn_texts(self, texts: Sequence[str]) -> None:
        """Warn about what the tokenizer cannot read as written (the toy CLIP: words not in its vocabulary);
        called once per set of texts before they are embedded (never on a cache hit of the same adapter)."""
        return None

    # ---- shared -------------------------------------------------------------
    def text_fingerprint(self) -> str | None:
        """A digest of the text tower's weights, its settings and its tokenizer (``None`` when the family does
        not say what its text side is: nothing is cached for it).

        The key of the text-embedding cache (:mod:`cliplens.text.cache`). Like :meth:`fingerprint` it is
        computed once and recomputed when a text weight changed (in place under ``torch.no_grad()``, by
        ``load_state_dict`` or an optimiser step, or by :meth:`to`), or the tokenizer was replaced or grew.
        Changes made through ``tensor.data`` bypass PyTorch's version counter and are not seen (by either
        fingerprint).
        """
        parts = self._text_parts()
        if parts is None:
            return None
        tensors, tokenizer, settings = parts
        key = (tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for t in tensors),
               id(tokenizer), _vocab_size(tokenizer), settings)
        if self._text_fingerprint is None or self._text_fingerprint[0] != key:
            tok = tokenizer_state(tokenizer)
            digest = None
            if tok is not None:
                h = hashlib.blake2b(f"{self.family}\n{settings}\n".encode(), digest_size=16)
                h.update(hashlib.blake2b(tok.encode(), digest_size=16).digest())
                h.update(fingerprint_tensors(tensors).encode())
                digest = h.hexdigest()
            self._text_fingerprint = (key, digest)
        return self._text_fingerprint[1]

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
    def random_weights(self) -> bool:
        """Whether the model was built with random weights (its scores mean nothing)."""
        return self.weights == RANDOM_WEIGHTS

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        return float(torch.as_tensor(scale).detach().float().exp())

    @property
    def logit_bias(self) -> float:
        """The source model's ``logit_bias`` (SigLIP's, learned; open_clip ``model.logit_bias``, transformers
        ``SiglipModel.logit_bias``); 0.0 for models without one (CLIP)."""
        bias = getattr(self.model, "logit_bias", None)
        if bias is None:
            return 0.0
        return float(torch.as_tensor(bias).detach().float().reshape(-1)[0])

    @property
    def score_kind(self) -> str:
        """How the model turns ``logit_scale · cos + logit_bias`` into probabilities: ``"sigmoid"`` (each
        image–text pair on its own: models trained with the sigmoid loss, which carry a ``logit_bias``) or
        ``"softmax"`` (over the texts: CLIP). :func:`cliplens.text.zeroshot.probabilities` applies it."""
        return "sigmoid" if getattr(self.model, "logit_bias", None) is not None else "softmax"

    def load_tokenizer(self, folder: str | os.PathLike[str]) -> Any:
        """Use the Hugging Face tokenizer saved in ``folder`` (open_clip and transformers models; the CLI's
        ``--tokenizer``)."""
        raise InvalidInputError(f"{self.name or 'this model'} ({self.family}) keeps its own tokenizer: a tokenizer "
                                "folder applies to open_clip and transformers models")

    def fingerprint(self) -> str:
        """A digest of the image tower's weights and of the preprocessing.

        Recomputed only when a weight changed (in place or by :meth:`to`).
        """
        params = self.vision.parameters()
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in params)
        if self._fingerprint is None or self._fingerprint[0] != key:
            cfg = json.dumps(self.preprocess_config.to_dict(), sort_keys=True)
            digest = hashlib.blake2b((fingerprint_view(self.vision) + cfg).encode(), digest_size=16).hexdigest()
            self._fingerprint = (key, digest)
        return self._fingerprint[1]

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> CLIPAdapter:
        """Move the source model (in place) and rebuild the view."""
        self.model.to(device=device, dtype=dtype)
        self._view = None
        return self

    def describe(self) -> dict[str, Any]:
        """Name, family, weights (and the seed of random weights) and shapes (what reports, JSON outputs and
        store headers record)."""
        v = self.vision
        seed = {"seed": self.seed} if self.random_weights else {}
        return {"name": self.name, "family": self.family, "weights": self.weights,
                "random_weights": self.random_weights, **seed, "layers": v.num_layers, "heads": v.num_heads,
                "width": v.width, "embed_dim": v.embed_dim, "image_size": list(v.image_size),
                "patch_size": list(v.patch_size), "dtype": str(v.dtype).replace("torch.", "")}

    def __repr__(self) -> str:
        v = self.vision
        return (
            f"{type(self).__name__}(name={self.name!r}, weights={self.weights!r}, layers={v.num_layers}, "
            f"heads={v.num_heads}, width={v.width}, embed_dim={v.embed_dim}, image_size={v.image_size}, "
            f"patch={v.patch_size})"
        )

    # ---- images -------------------------------------------------------------
    def preprocess(self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
        """Load and preprocess images exactly as the source model does -> ``[B, 3, H, W]``."""
        return pixels_or_raise(self.preprocess_with_report(images, skip_bad=skip_bad, max_pixels=max_pixels))

    def preprocess_with_report(self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False,
                               max_pixels: int = DEFAULT_MAX_PIXELS) -> PreprocessResult:
        """Like :meth:`preprocess`, also saying which inputs were kept and which skipped (it never raises
        for unreadable inputs when ``skip_bad``: an all-skipped batch has 0 rows)."""
        if self._preprocessor is None or self._preprocessor.max_pixels != max_pixels:
            self._preprocessor = Preprocessor(self.preprocess_config, max_pixels=max_pixels)
        report = self._preprocessor.preprocess_with_report(images, skip_bad=skip_bad)
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
        return encode_texts(self, texts, normalize=normalize, batch_size=batch_size, progress=progress)

    # ---- image side: cliplens's own functional forward ----------------------
    def run(
        self,
        pixel_values: Tensor,
        *,
        plan: Plan | None = None,
        names: Iterable[str] = (),
        hooks: Mapping[str, Hook] | None = None,
        cls_only: bool = False,
    ) -> ForwardOutput:
        """Run the functional forward under ``plan``, recording ``names`` (see :mod:`cliplens.core.forward`).

        Follows the ambient autograd mode: with gradients enabled, the outputs and recorded tensors
        carry autograd history (for gradient methods); inside ``torch.no_grad()`` they do not.
        """
        return run_vision(self.vision, self._check_pixels(pixel_values), plan=plan, names=names, hooks=hooks,
                          cls_only=cls_only)

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
    def encode_dense(self, pixel_values: Tensor, *, plan: Plan | None = None, side: str | None = None,
                     normalize: bool = False) -> Tensor:
        """Every token through ``ln_post`` and the projection -> ``[B, N, E]`` (CLS first).

        ``side`` picks a side path of ``plan`` (e.g. CLIP Surgery's) instead of the main stream.
        """
        name = "dense" if side is None else f"side.{side}.dense"
        out = self.run(pixel_values, plan=plan, names=[name]).cache[name]
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def decompose(
        self,
        pixel_values: Tensor,
        *,
        spatial: bool = True,
        layers: Iterable[int] | int | None = None,
        last: int | None = None,
        dtype: torch.dtype | None = None,
        plan: Plan | None = None,
        hooks: Mapping[str, Hook] | None = None,
    ) -> Decomposition:
        """Decompose the image embedding into direct effects; see :mod:`cliplens.decomposition`.

        Args:
            pixel_values: preprocessed ``[B, 3, H, W]`` (see :meth:`preprocess`).
            spatial: keep each attention head's contribution per source token.
            layers: which layers get per-head (and per-token) attention terms: layer indices
                (negatives count from the end); ``None`` means all (or ``last``). Other layers keep
                one attention term each. The decomposition is exact either way.
            last: the last ``k`` layers instead of ``layers`` (an int ``layers=k``, which used to mean
                that, is refused with a message naming ``last=k``).
            dtype: dtype for the decomposition's stored terms (default float32).
            plan: run the forward with other attention (a :class:`~cliplens.core.plan.Plan`); the
                decomposition is that forward's, and sums to its embedding.
            hooks: run the forward with edits (hook name -> function); likewise exact.
        """
        dec = decompose(self.vision, self._check_pixels(pixel_values), spatial=spatial, layers=layers, last=last, dtype=dtype,
                        plan=plan, hooks=hooks)
        dec.model = self
        dec.fingerprint = self.fingerprint()
        return dec

    def _check_pixels(self, pixel_values: Tensor) -> Tensor:
        return check_pixel_values(pixel_values, self.vision)


def _vocab_size(tokenizer: Any) -> int:
    """The tokenizer's vocabulary size where cheap to read (a tokenizer that grew in place is re-fingerprinted)."""
    for attr in ("encoder", "tokenizer"):  # open_clip's SimpleTokenizer; its wrapper of a transformers tokenizer
        inner = getattr(tokenizer, attr, None)
        if inner is not None:
            try:
                return len(inner)
            except TypeError:
                continue
    try:
        return len(tokenizer)
    except TypeError:
        return -1


def text_tensors(module: Any, skip: Sequence[str] = ()) -> list[Tensor]:
    """The parameters and buffers of ``module`` whose names start with none of ``skip`` (in module order)."""
    out = [t for n, t in module.named_parameters() if not n.startswith(tuple(skip))]
    return out + [t for n, t in module.named_buffers() if not n.startswith(tuple(skip))]
