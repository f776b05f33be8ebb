"""PAMR, pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020: the PAMR module of its single-stage model), as the SCLIP / NACLIP lineage
applies it to per-pixel class scores.

For an image ``x`` ``[B, C, H, W]`` and scores ``m`` ``[B, K, H, W]`` at the same size, each pixel ``i`` looks at
its 8 neighbours ``j`` at each dilation ``d`` (offsets ``d·(±1 | 0, ±1 | 0)``, the image's border replicated):

    σ_i  = the standard deviation (unbiased, per channel) of x over the 9 pixels of every dilation (the centre
           counted once per dilation),
    a_ij = mean over channels of  −|x_i − x_j| / (1e-8 + 0.1·σ_i),    α_ij = softmax over the neighbours j of a_ij,
    m_i ← Σ_j α_ij m_j        (``iterations`` times; the affinities stay those of the image).

The defaults are NACLIP's (``pamr_steps=10, pamr_stride=(8, 16)`` in naclip.py at github.com/sinahmr/NACLIP
@0cac3a6, whose ``pamr.py`` is the original's, github.com/visinf/1-stage-wseg); SCLIP's code applies the same
module. The scores are refined before the logit scale and the softmax; the image is the model's normalised input
resized back to the scores' size. Written from the formula: the neighbours are visited one at a time, so memory
stays at a few copies of ``m`` (the original stacks every shifted copy, ``K × 8·len(dilations)`` of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError

__all__ = ["DEFAULT_DILATIONS", "DEFAULT_ITERATIONS", "affinities", "image_refiner", "pamr", "propagate"]

DEFAULT_ITERATIONS = 10
DEFAULT_DILATIONS = (8, 16)
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shifted(t: Tensor, dilations: Sequence[int], centre: bool = False) -> Iterator[Tensor]:
    """``t`` ``[B, K, H, W]`` seen from each neighbour (``t_j`` at every pixel ``i``), border replicated."""
    H, W = t.shape[-2:]
    for d in dilations:
        padded = F.pad(t, [d] * 4, mode="replicate")
        for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)) if centre \
                else _OFFSETS:
            yield padded[..., d + dy * d: d + dy * d + H, d + dx * d: d + dx * d + W]


def affinities(image: Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS) -> Tensor:
    """``[B, P, H, W]``: each pixel's softmax weights over its ``P = 8·len(dilations)`` neighbours."""
    x = image.float()
    around = torch.stack(list(_shifted(x, dilations, centre=True)), 2)  # [B, C, 9·len(d), H, W]
    sd = around.std(2)  # unbiased, over the 9 pixels of every dilation
    del around
    scale = 1e-8 + 0.1 * sd
    logits = torch.stack([(-(x - xj).abs() / scale).mean(1) for xj in _shifted(x, dilations)], 1)
    return logits.softmax(1)


def pamr(image: Tensor, scores: Tensor, iterations: int = DEFAULT_ITERATIONS,
         dilations: Sequence[int] = DEFAULT_DILATIONS) -> Tensor:
    """Refine ``scores`` ``[B, K, H, W]`` by the affinities of ``image`` ``[B, C, H, W]`` (see the module docs).
    Scores at another size than the image are first resized to it (bilinear, ``align_corners=True``, as the
    original does)."""
    if image.dim() != 4 or scores.dim() != 4 or image.shape[0] != scores.shape[0]:
        raise InvalidInputError(f"PAMR takes an image [B, C, H, W] and scores [B, K, H, W] for the same B; got "
                                f"{tuple(image.shape)} and {tuple(scores.shape)}")
    if iterations < 0 or not dilations or any(int(d) < 1 for d in dilations):
        raise InvalidInputError(f"PAMR needs iterations >= 0 and dilations >= 1; got {iterations} and {list(dilations)}")
    dilations = [int(d) for d in dilations]
    m = scores.float()
    if m.shape[-2:] != image.shape[-2:]:
        m = F.interpolate(m, size=image.shape[-2:], mode="bilinear", align_corners=True)
    if iterations == 0:
        return m
    return propagate(m, affinities(image, dilations), iterations, dilations)


def propagate(scores: Tensor, alpha: Tensor, iterations: int, dilations: Sequence[int] = DEFAULT_DILATIONS) -> Tensor:
    """``iterations`` steps of ``m_i ← Σ_j α_ij m_j`` for scores ``[B, K, H, W]`` and the affinities ``alpha``
    ``[B, P, H, W]`` of :func:`affinities` (the same ``dilations``)."""
    m = scores.float()
    for _ in range(iterations):
        out = torch.zeros_like(m)
        for p, mj in enumerate(_shifted(m, [int(d) for d in dilations])):
            out.addcmul_(alpha[:, p:p + 1], mj)
        m = out
    return m


def image_refiner(model: ImageTextModel, image: Any, *, fit: str, size: int | None, window: int | None,
                  image_size: tuple[int, int], iterations: int = DEFAULT_ITERATIONS,
                  dilations: Sequence[int] = DEFAULT_DILATIONS) -> Callable[[Tensor], Tensor]:
    """PAMR for one image as NACLIP applies it: the affinities of the model's normalised input (fitted as the maps
    were: ``fit``, ``size``, ``window``) resized back to ``image_size`` (bilinear), applied to score chunks
    ``[K, H0, W0]`` at that size; pixels the model did not see (NaN) stay NaN."""
    from cliplens.maps.inputs import fit_images

    (fitted,), _ = fit_images(model, [image], fit=fit, size=size, window=window)  # type: ignore[arg-type]
    pixels = F.interpolate(fitted.pixels[None].float(), size=tuple(image_size), mode="bilinear", align_corners=False)
    alpha = affinities(pixels, dilations)

    def refine(scores: Tensor) -> Tensor:
        unseen = torch.isnan(scores)
        out = propagate(scores.nan_to_num(0.0)[None], alpha, iterations, dilations)[0]
        return out.masked_fill(unseen, float("nan"))

    return refine

