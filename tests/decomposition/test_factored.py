"""The factored spatial split of heads that read every token (cliplens.decomposition.replay).

For a learned probe (SigLIP's MAP head, PE-Core) or a mean, ``decompose(spatial=True)`` records only each block's
input and replays each block's attention once the pooling weights are known, keeping head ``h``'s carrying of
token ``n`` into readout ``r`` as ``head_rows[r, h, n] · head_values[n, h]``. Checked here against the same
decomposition taken the other way (every pattern and value recorded during the forward: a decomposition with an
observing hook takes that path), view by view, and against a naive per-token loop of the formula.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cliplens.core.plan import Plan
from cliplens.decomposition import Decomposition
from tests.families import models
from tests.pooled_towers import pooled_toy

pytest.importorskip("open_clip")
pytest.importorskip("timm")

TOL = 2e-5  # float32, relative to the largest entry


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _full(adapter, px, **kw):
    """The same decomposition through the forward's recorded patterns (an observing hook turns the replay off)."""
    dec = adapter.decompose(px, spatial=True, hooks={"blocks.0.mlp_out": lambda t, name: None}, **kw)
    assert not dec.factored
    return dec


@pytest.fixture(scope="module", params=["siglip", "pe-core", "eva-mean", "map", "mean"])
def tower(request, random_toy_weights):
    import cliplens

    if request.param == "eva-mean":  # EVA02's blocks (rotary, sub-LayerNorm frozen per token) under a mean
        from dataclasses import replace

        from cliplens.core.heads import MeanHead

        m = cliplens.wrap(models.open_clip_timm("EVA02-B-16", layers=2).float(), name="EVA02-B-16")
        v = m.vision
        assert v.blocks[0].attn_norm is not None
        m._view = replace(v, head=MeanHead(v.head.ln_post, v.head.proj, skip=0))
        return m
    if request.param == "siglip":
        return cliplens.wrap(models.open_clip_timm("ViT-B-16-SigLIP", layers=2).float(), name="ViT-B-16-SigLIP")
    if request.param == "pe-core":  # rotary embeddings, attention pooling, a projection after it
        return cliplens.wrap(models.open_clip_timm("PE-Core-B-16", layers=2).float(), name="PE-Core-B-16")
    return pooled_toy(random_toy_weights, request.param)


def _pixels(tower, batch=2, seed=0):
    h, w = tower.vision.image_size
    return models.pixels(batch, (h, w), seed).float()


def test_every_view_equals_the_recorded_split(tower):
    px = _pixels(tower)
    fac, full = tower.decompose(px, spatial=True), _full(tower, px)
    assert fac.factored and fac._heads is None  # no [B, R, L, N, H, dh] tensor is held
    B, R, L = px.shape[0], fac.num_readouts, len(fac.head_layers)
    assert fac.head_rows.shape == (B, R, L, fac.num_heads, fac.num_tokens)
    assert fac.head_values.shape == (B, L, fac.num_tokens, fac.num_heads, tower.vision.head_dim)
    assert fac.check() <= 1e-5
    for view in ("head_terms", "per_head", "token_terms", "mlp_terms", "attention_layer_terms", "shift_terms",
                 "pool_terms", "reconstruct", "readout_terms"):
        assert _rel(getattr(fac, view)(), getattr(full, view)()) <= TOL, view
    assert _rel(fac.heads, full.heads) <= TOL
    assert _rel(fac.token_terms(layers=[-1]), full.token_terms(layers=[-1])) <= TOL
    texts = F.normalize(torch.randn(3, fac.embedding.shape[-1]), dim=-1)
    a, b = fac.normalized().project(texts), full.normalized().project(texts)
    for field in ("heads", "attention", "mlp", "embed"):
        assert _rel(getattr(a, field), getattr(b, field)) <= TOL, field
    assert _rel(a.token_map(), b.token_map()) <= TOL


def test_chosen_layers_and_another_grid(tower):
    ph, pw = tower.vision.patch_size
    gh, gw = tower.vision.grid_size
    px = models.pixels(1, ((gh + 2) * ph, (gw - 1) * pw), 3).float()
    for kw in (dict(layers=[0]), dict(plan=Plan(positional="bilinear"))):
        fac, full = tower.decompose(px, spatial=True, **kw), _full(tower, px, **kw)
        assert fac.factored and fac.check() <= 1e-5
        assert _rel(fac.head_terms(), full.head_terms()) <= TOL
        assert _rel(fac.mlp_terms(), full.mlp_terms()) <= TOL


def test_the_factors_are_the_formula_token_by_token(random_toy_weights):
    """Naive loops over readouts, heads and query tokens: rows[r, h, m] = Σ_n ω[r, n] P[h, n, m] from the recorded
    pattern, and values = v at each source token."""
    tower = pooled_toy(random_toy_weights, "map")
    px = _pixels(tower, batch=1)
    dec = tower.decompose(px, spatial=True)
    with torch.no_grad():
        out = tower.run(px, names=["blocks.1.attn.pattern", "blocks.1.attn.v", "final"])
    P, v = out["blocks.1.attn.pattern"][0], out["blocks.1.attn.v"][0]  # [H, N, N], [N, H, dh]
    omega = tower.vision.head.readout(out["final"]).weights[0]  # [R, N]
    R, N = omega.shape
    H = P.shape[0]
    rows = torch.zeros(R, H, N)
    for r in range(R):
        for h in range(H):
            for n in range(N):
                rows[r, h] += omega[r, n] * P[h, n]
    assert _rel(dec.head_rows[0, :, 1], rows) <= 1e-5
    assert _rel(dec.head_values[0, 1], v) <= 1e-6


def test_save_load_slices_and_concatenation(tower, tmp_path):
    px = _pixels(tower, batch=3)
    fac = tower.decompose(px, spatial=True)
    path = fac.save(tmp_path / "d")
    back = Decomposition.load(path, tower)
    assert back.factored and torch.equal(back.head_rows, fac.head_rows)
    assert _rel(back.head_terms(), fac.head_terms()) == 0
    part = fac[1:]
    assert part.factored and _rel(part.token_terms(), fac.token_terms()[1:]) <= 1e-6
    both = Decomposition.cat([fac[:1], fac[1:]])
    assert both.factored and _rel(both.head_terms(), fac.head_terms()) <= 1e-6
    mixed = Decomposition.cat([fac[:1], _full(tower, px[1:])])  # factored and recorded: both made full
    assert not mixed.factored and _rel(mixed.head_terms(), fac.head_terms()) <= TOL


def test_a_file_of_the_second_format_still_loads(tower, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    px = _pixels(tower, batch=1)
    full = _full(tower, px)
    path = full.save(tmp_path / "d")
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["cliplens"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    header["format"] = "cliplens.decomposition/2"
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"cliplens": json.dumps(header)})
    old = Decomposition.load(tmp_path / "old.safetensors", tower)
    assert not old.factored and _rel(old.head_terms(), full.head_terms()) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(random_toy_weights, dtype):
    tower = pooled_toy(random_toy_weights, "map", dtype=dtype)
    dec = tower.decompose(_pixels(tower).to(dtype), spatial=True, dtype=dtype)
    assert dec.factored and dec.check() <= dec.tolerance
