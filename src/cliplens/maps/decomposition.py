"""The decomposition map (Gandelsman et al.): each image token's direct effect on the image
embedding, through the heads of all (or chosen) layers, scored against each text. On a ResNet CLIP (no
blocks) each position's direct effect through the attention pool (the pool terms summed over pool heads)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.core.trunk import needs_blocks
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings
from cliplens.maps.token_similarity import patch_grid

__all__ = ["DecompositionMap"]


@register_map("decomposition")
class DecompositionMap(MapMethod):
    """Per image token n: ``Σ_{l,h} c_{l,h,n} · t`` on the unit-norm embedding, over the heads of
    ``layers`` (layer indices, default all; negatives count from the end, ``layers=[-1]`` the last layer), of
    the ``last`` k layers, or only the ``heads`` given as ``(layer, head)`` pairs. By default each map is then contrasted with the mean over the other targets,
    as the paper's segmentation does (``contrast="none"`` in the targets turns that off)."""

    paper = 'Gandelsman et al., "Interpreting CLIP\'s Image Representation via Text-Based Decomposition" (ICLR 2024)'
    code = 'github.com/yossigandelsman/clip_text_span'

    default_contrast = "others"

    def __init__(self, layers: Iterable[int] | int | None = None,
                 heads: Sequence[tuple[int, int]] | None = None, positional: str | None = None,
                 last: int | None = None) -> None:
        if sum(x is not None for x in (layers, heads, last)) > 1:
            raise InvalidInputError("give layers (indices), last (the last k layers) or heads, not two of them")
        super().__init__(layers=layers, heads=None if heads is None else [tuple(h) for h in heads],
                         positional=positional, last=last)

    runs_without_blocks = True

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        heads = self.params["heads"]
        L, H = model.vision.num_layers, model.vision.num_heads
        if L == 0:  # an opaque trunk (ResNet): each position's direct effect through the attention pool
            if heads is not None or self.params["layers"] is not None or self.params["last"] is not None:
                needs_blocks("the decomposition map over chosen layers or heads", model.vision)
            dec = model.decompose(pixels, spatial=True, plan=self.plan_for()).normalized()
            t = dec.token_terms() @ texts.directions.to(dec.dtype).T  # [B, N, T], the mean token first
            return patch_grid(t, dec.grid)
        if heads is None:
            dec = model.decompose(pixels, spatial=True, plan=self.plan_for(), layers=self.params["layers"],
                                  last=self.params["last"])
            return dec.normalized().project(texts.directions).token_map()
        for layer, h in heads:
            if not (-L <= layer < L and 0 <= h < H):
                raise InvalidInputError(f"head L{layer}.H{h} does not exist: the model has {L} layers (0..{L - 1}) "
                                        f"and {H} heads (0..{H - 1})")
        layers = sorted({layer % L for layer, _ in heads})
        scores = model.decompose(pixels, spatial=True, plan=self.plan_for(), layers=layers).normalized().project(texts.directions)
        mask = torch.zeros(len(layers), H, dtype=scores.heads.dtype, device=scores.heads.device)
        for layer, h in heads:
            mask[layers.index(layer % L), h] = 1
        t = (scores.heads * mask[None, :, None, :, None]).sum(dim=(1, 3))  # [B, N, T]
        t = t[:, t.shape[1] - scores.grid[0] * scores.grid[1]:]  # the patches (after CLS, if any)
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *scores.grid)
