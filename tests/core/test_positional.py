"""Each positional rule against the code it comes from, and each map method's own rule.

When a model runs at another token grid than its table's, every method's official code resizes the table its own
way: DINO's ``interpolate_pos_encoding`` (bicubic with the scale factor ``(n + 0.1) / n₀``: NACLIP, SCLIP, ClearCLIP,
ResCLIP), timm's ``resample_abs_pos_embed`` (bicubic, antialiased: GEM, LeGrad), mmseg's (bicubic to the size:
MaskCLIP; also Hugging Face's ``interpolate_pos_encoding``), CLIP Surgery's (bilinear).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cliplens.core.forward import positional_embedding_for
from cliplens.core.plan import POSITIONAL_MODES, Plan
from cliplens.errors import InvalidInputError
from cliplens.maps import get_map

GRIDS = [(20, 30), (9, 4), (5, 5), (1, 7)]


@pytest.fixture(scope="module")
def tiny():
    import cliplens
    from tests.maps.dense_reference import build_tiny_clip

    model = build_tiny_clip(layers=2, image_size=64 * 3 // 2 - 32, patch_size=16).float()  # a 4x4 table
    return cliplens.wrap(model, name="tiny")


def dino_interpolate(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding`` as NACLIP (clip/model.py@0cac3a6) writes it: ``w0, h0 = w // p + 0.1,
    h // p + 0.1`` and ``scale_factor=(w0 / √N, h0 / √N)`` on the square table (here with its rows first, as the
    callers pass the image height as ``w``), bicubic, ``align_corners=False``, ``recompute_scale_factor=False``."""
    n = table.shape[0] - 1
    side = int(math.sqrt(n))
    w0, h0 = grid[0] + 0.1, grid[1] + 0.1
    patch = table[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, mode="bicubic", scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
                          align_corners=False, recompute_scale_factor=False)
    assert int(w0) == patch.shape[-2] and int(h0) == patch.shape[-1]
    return torch.cat([table[:1], patch.permute(0, 2, 3, 1).reshape(-1, table.shape[-1])])


def test_dino_rule(tiny):
    table = tiny.vision.positional_embedding
    for grid in GRIDS:
        got = positional_embedding_for(tiny.vision, grid, "bicubic_dino")
        torch.testing.assert_close(got, dino_interpolate(table, grid), rtol=0, atol=1e-6)
        assert not torch.allclose(got, positional_embedding_for(tiny.vision, grid, "bicubic"))  # not the same


def test_timm_antialiased_rule(tiny):
    from timm.layers import resample_abs_pos_embed

    table = tiny.vision.positional_embedding
    for grid in GRIDS:
        want = resample_abs_pos_embed(table[None], new_size=list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                      antialias=True)[0]
        torch.testing.assert_close(positional_embedding_for(tiny.vision, grid, "bicubic_antialias"), want,
                                   rtol=0, atol=1e-6)


def test_every_rule_is_the_table_itself_at_its_own_grid(tiny):
    table = tiny.vision.positional_embedding
    for mode in POSITIONAL_MODES:
        assert positional_embedding_for(tiny.vision, tiny.vision.grid_size, mode) is table


@pytest.mark.parametrize("method, rule", [
    ("naclip", "bicubic_dino"), ("sclip", "bicubic_dino"), ("clearclip", "bicubic_dino"), ("resclip", "bicubic_dino"),
    ("gem", "bicubic_antialias"), ("legrad", "bicubic_antialias"), ("maskclip", "bicubic"), ("surgery", "bilinear"),
    ("token-similarity", None), ("gradcam", None), ("chefer", None), ("rollout", None), ("raw-attention", None),
    ("decomposition", None),
])
def test_each_method_runs_at_another_grid_by_its_authors_rule(tiny, method, rule):
    m = get_map(method)
    assert m.params["positional"] == rule and m.describe()["positional"] == rule
    assert m.plan_for().positional == rule
    other = "bilinear" if rule != "bilinear" else "bicubic"
    assert get_map(method, positional=other).plan_for(Plan()).positional == other


def test_a_method_at_another_grid_uses_its_rule_and_can_be_told_another(tiny):
    """NACLIP at 96x64 (a 6x4 grid from a 4x4 table): its own rule by default; the maps change when told another,
    and equal a run of the same plan with that rule."""
    x = torch.rand(3, 96, 64)
    texts = ["a red circle", "a blue square"]
    own = get_map("naclip")(tiny, x, texts, normalization="raw").raw
    told = get_map("naclip", positional="bicubic")(tiny, x, texts, normalization="raw").raw
    assert own.shape[-2:] == (6, 4) and not torch.allclose(own, told)
    with pytest.raises(InvalidInputError, match="positional must be one of"):
        get_map("naclip", positional="lanczos")
