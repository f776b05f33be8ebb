"""The toy family: the embedded toy CLIP (:mod:`cliplens.toyworld`), shipped inside the package.

``cliplens.load("toy")`` opens the shipped weights with no network;
``cliplens.load("toy", pretrained="/path/to/toy-clip.safetensors")`` opens weights trained
with ``cliplens toy train``. ``"toy-spurious"`` is the variant trained on the toy
"waterbirds" split (a shape co-occurring with a background), when it is shipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.core.view import VisionView
from cliplens.errors import ModelLoadError
from cliplens.images.config import PreprocessConfig
from cliplens.models.base import CLIPAdapter, text_tensors
from cliplens.models.hub import checkpoint_error
from cliplens.toyworld.model import DEFAULT_WEIGHTS, load_toy_clip

SPURIOUS_WEIGHTS = "toy-clip-spurious.safetensors"
SIGLIP_WEIGHTS = "toy-siglip.safetensors"
#: what ``pretrained=`` names for the toy models, besides "default"
TOY_WEIGHTS = "a .safetensors file written by 'cliplens toy train'"


class ToyCLIPAdapter(CLIPAdapter):
    """The toy CLIP seen through cliplens: same interface as every real CLIP."""

    family = "toy"
    prompt_templates = "toy"  # "a photo of a {}": the words of CLIP's templates are not in the toy vocabulary

    def __init__(self, model: Any, tokenizer: Any, name: str = "toy", weights: str = "") -> None:
        super().__init__(model, name, weights=weights or name)
        self.tokenizer = tokenizer
        model.eval()

    def _build_vision_view(self) -> VisionView:
        return self.model.vision_view()

    @property
    def preprocess_config(self) -> PreprocessConfig:
        c = self.model.config
        return PreprocessConfig(image_size=(c.image_size, c.image_size), resize_size=c.image_size,
                                interpolation="bicubic", mean=tuple(c.mean), std=tuple(c.std), source="toy")

    @property
    def context_length(self) -> int:
        return int(self.model.config.context_length)

    def _warn_texts(self, texts: Sequence[str]) -> None:
        unknown = self.tokenizer.unknown_words(list(texts))
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:8]) + (" …" if len(unknown) > 8 else "")
            warnings.warn(
                f"the toy CLIP's vocabulary (shapes, colours, sizes, positions, counts, backgrounds) has no "
                f"word {shown}; unknown words become <unk>", stacklevel=4,
            )

    def _tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer.encode(list(texts)).to(self.device)

    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.tokenizer.count_tokens(list(texts)))

    def _pooled_positions(self, tokens: Tensor) -> Tensor | None:
        """The first ``<eot>`` (the last position when there is none): the toy text tower is causal and pools
        at ``<eot>`` or over the positions up to it (the rule: :meth:`CLIPAdapter._pooled_positions`)."""
        from cliplens.toyworld.model import ToyCLIP

        if type(self.model).encode_text is not ToyCLIP.encode_text:  # a subclass may read later positions
            return None
        is_eot = tokens == self.model.config.eot_id
        last = torch.full_like(tokens[:, 0], tokens.shape[1] - 1)
        return torch.where(is_eot.any(1), is_eot.int().argmax(1), last)

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)  # takes fewer positions than the context as they are

    def _text_parts(self) -> tuple[list[Tensor], Any, str]:
        vision = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.", "blocks.", "ln_post.", "proj", "attn_pool.")
        return (text_tensors(self.model, skip=vision), self.tokenizer,
                f"{type(self.model).__qualname__} {self.model.config.to_json()}")

    @torch.no_grad()
    def source_encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values)


def _default_path(filename: str) -> Path | None:
    ref = resources.files("cliplens.toyworld") / "weights" / filename
    return Path(str(ref)) if ref.is_file() else None


def load_toy(pretrained: str | None = None, *, name: str = "toy", default_file: str | None = None) -> ToyCLIPAdapter:
    """Load the toy CLIP: the shipped weights, or a ``.safetensors`` file saved by ``cliplens toy train``."""
    if pretrained in (None, "default"):
        path = _default_path(default_file or DEFAULT_WEIGHTS)
        if path is None:
            raise ModelLoadError(
                f"the embedded {name!r} weights are not in this installation of cliplens "
                f"(cliplens/toyworld/weights/{default_file or DEFAULT_WEIGHTS}). Reinstall cliplens, or train them "
                "with 'cliplens toy train' and load the result with pretrained='/path/to/toy-clip.safetensors'."
            )
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"no toy CLIP weights at {str(path)!r}: pretrained= for {name!r} is 'default' or the path of "
                f"{TOY_WEIGHTS}."
            )
    try:
        model, tok = load_toy_clip(path)
    except Exception as e:  # corrupt or foreign file
        raise checkpoint_error(f"the toy CLIP {name!r}", str(path), e, expected=TOY_WEIGHTS) from e
    return ToyCLIPAdapter(model, tok, name=name, weights="default" if pretrained in (None, "default") else str(path))


def load_toy_spurious(pretrained: str | None = None) -> ToyCLIPAdapter:
    """``toy-spurious``: the toy CLIP fine-tuned on the toy waterbirds split."""
    return load_toy(pretrained, name="toy-spurious", default_file=SPURIOUS_WEIGHTS)


def load_toy_siglip(pretrained: str | None = None) -> ToyCLIPAdapter:
    """``toy-siglip``: the toy model with SigLIP's pooling (attention with a learned probe, no CLS token) and
    sigmoid loss."""
    return load_toy(pretrained, name="toy-siglip", default_file=SIGLIP_WEIGHTS)


#: the embedded models this family provides: (name, loader, description, pretrained tags)
EMBEDDED = (
    ("toy", load_toy, "small CLIP trained offline on procedurally generated scenes (the embedded default)",
     ("default",)),
    ("toy-spurious", load_toy_spurious,
     "the toy CLIP fine-tuned on a split where shape and background co-occur (toy waterbirds)", ("default",)),
    ("toy-siglip", load_toy_siglip,
     "the toy model with SigLIP's attention pooling (no CLS token) trained with the sigmoid loss", ("default",)),
)
