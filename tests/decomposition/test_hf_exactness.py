"""transformers side of the exactness requirements, at real CLIP shapes on random weights.

Models are ``CLIPVisionModelWithProjection`` with the shapes of OpenAI's ViT-B/32 and ViT-L/14
(QuickGELU) and a ViT-B/16 with exact GELU, 3 blocks each (and one full-depth B/32), biases and
LayerNorm affines randomised (tests/conftest.py). Forward parity is in tests/core/test_forward.py.

* exactness: ``decompose(...).check()`` < 1e-5 for every model and mode (spatial all layers,
  non-spatial, last-4 spatial, non-224 input), the decomposed embedding being the source's.
* an independent per-layer/head/token computation from transformers' own modules
  (eager attention weights, ``v_proj``, ``out_proj``) equals ``head_terms()`` and ``mlp_terms()``.

transformers' CLIP has no layer-scale; layer-scale is covered on the open_clip side
(tests/test_forward.py, tests/test_decomposition.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from tests.conftest import hf_vit, pixels

transformers = pytest.importorskip("transformers")

#: (layers, heads, patch, embed dim) per shape; 3 blocks each, and the real depth for B-32
DEPTH = {"B32": 3, "B32-full": 12, "B16": 3, "L14": 3}
SHAPE = {"B32": "B-32", "B32-full": "B-32", "B16": "B-16", "L14": "L-14"}


class Zoo:
    """Adapters and the source's reference embeddings, built on first use."""

    def __init__(self) -> None:
        self.refs: dict[tuple, torch.Tensor] = {}

    def model(self, name: str):
        return hf_vit(SHAPE[name], layers=DEPTH[name])

    def adapter(self, name: str):
        return cliplens.wrap(self.model(name))

    def ref(self, name: str, batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixels, the source's embedding)``; off 224 transformers interpolates the positions."""
        x = pixels(batch, size)
        key = (name, batch, size)
        if key not in self.refs:
            with torch.no_grad():
                out = self.model(name)(pixel_values=x, interpolate_pos_encoding=size != (224, 224))
            self.refs[key] = out.image_embeds
        return x, self.refs[key]


@pytest.fixture(scope="module")
def zoo():
    return Zoo()


def max_err(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max abs error, 1e-5 x the largest embedding norm)``."""
    return (out - ref).abs().max().item(), 1e-5 * ref.norm(dim=-1).max().item()


def case_ids(cases) -> list[str]:
    return [(c.values[0] if hasattr(c, "values") else c)[0] for c in cases]


# ---- exactness: the parts sum to the embedding ------------------------------------------------------

EXACT = [
    # (id, model, batch, input size, decompose kwargs)
    ("B32-spatial", "B32", 3, (224, 224), dict(spatial=True, last=None)),
    ("B32-nonspatial", "B32", 3, (224, 224), dict(spatial=False, last=None)),
    ("B32-last2-spatial", "B32", 3, (224, 224), dict(spatial=True, last=2)),
    ("B32@288x192-spatial", "B32", 2, (288, 192), dict(spatial=True, last=None)),
    ("B32-full-depth-spatial", "B32-full", 2, (224, 224), dict(spatial=True, last=None)),
    ("B16-nonspatial", "B16", 1, (224, 224), dict(spatial=False, last=None)),
    ("B16@160-spatial", "B16", 3, (160, 160), dict(spatial=True, last=None)),
    ("L14-last2-spatial", "L14", 1, (224, 224), dict(spatial=True, last=2)),
    ("L14-nonspatial", "L14", 1, (224, 224), dict(spatial=False, last=None)),
]


@pytest.mark.parametrize("case", EXACT, ids=case_ids(EXACT))
def test_decomposition_is_exact(case, zoo, record_property):
    _, name, batch, size, mode = case
    a = zoo.adapter(name)
    x, ref = zoo.ref(name, batch, size)
    d = a.decompose(x, **mode)
    cfg = a.model.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    k = L if mode["last"] is None else mode["last"]
    grid = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
    assert d.grid == grid and d.head_layers == tuple(range(L - k, L))
    if mode["spatial"]:
        assert d.heads.shape[:5] == (batch, 1, k, 1 + grid[0] * grid[1], H)
    else:
        assert d.heads.shape[:4] == (batch, 1, k, H)
    err, tol = max_err(d.embedding, ref)  # the embedding decomposed is the source's
    assert err <= tol, (err, tol)
    rel = d.check(rtol=1e-5)
    record_property("check_rel_err", rel)
    assert rel < 1e-5
    if mode["spatial"] and mode["last"] is None:
        assert d.normalized().check(rtol=1e-5) < 1e-5


# ---- an independent per-head computation from transformers' own modules ------------------------------


def reference_terms(model, x: torch.Tensor):
    """Per layer/token/head joint-space terms ``[B, L, N, H, E]``, embed + MLP terms ``[B, L+1, E]`` and
    the embedding, from transformers' modules: eager attention weights (``output_attentions``), ``v_proj``,
    ``out_proj`` per head, the out-proj bias split over heads x tokens, frozen ``post_layernorm`` statistics
    and its mean and bias shared over the 2L+1 sites."""
    vm = model.vision_model
    layers = vm.encoder.layers
    embed, outs, mlps, pooled = [], [], [], []
    hooks = [vm.pre_layrnorm.register_forward_hook(lambda m, a, o: embed.append(o))]
    hooks += [
        layer.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
        for layer in layers
    ]
    hooks += [layer.mlp.register_forward_hook(lambda m, a, o: mlps.append(o[:, 0])) for layer in layers]
    hooks.append(vm.post_layernorm.register_forward_pre_hook(lambda m, a: pooled.append(a[0])))
    try:
        with torch.no_grad():
            out = model(pixel_values=x, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    L = len(layers)
    assert len(out.attentions) == L and len(outs) == L
    inputs = [embed[0]] + outs[:-1]
    with torch.no_grad():
        attn = []
        for layer, xin, w in zip(layers, inputs, out.attentions, strict=True):
            sa = layer.self_attn
            h = layer.layer_norm1(xin)
            B, N, D = h.shape
            H = w.shape[1]
            dh = D // H
            v = sa.v_proj(h).view(B, N, H, dh)
            contrib = w[:, :, 0].transpose(1, 2)[..., None] * v  # [B, N, H, dh]: alpha(CLS->m) v_m
            wo = sa.out_proj.weight.view(D, H, dh)
            attn.append(torch.einsum("bnhd,ehd->bnhe", contrib, wo) + sa.out_proj.bias / (H * N))
        attn = torch.stack(attn, 1)  # [B, L, N, H, D]
        mlp = torch.stack([embed[0][:, 0]] + mlps, 1)  # [B, L+1, D]
        p = pooled[0]
        ln = vm.post_layernorm
        mu = p.mean(-1)
        sd = torch.sqrt(p.var(-1, unbiased=False) + ln.eps)
        sites = 2 * L + 1
        W = model.visual_projection.weight  # [E, D]
        s_attn = 1.0 / (sites * N * H)
        e = (slice(None),) + (None,) * 4
        attn_j = ((attn - s_attn * mu[e]) * ln.weight / sd[e] + s_attn * ln.bias) @ W.T
        mlp_j = ((mlp - mu[:, None, None] / sites) * ln.weight / sd[:, None, None] + ln.bias / sites) @ W.T
    return attn_j, mlp_j, out.image_embeds


def eager_copy(model):
    """The same weights with eager attention, so that transformers returns its attention weights."""
    if hasattr(model, "set_attn_implementation"):
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
    else:  # older transformers pick the attention class when the model is built
        eager = type(model)._from_config(copy.deepcopy(model.config), attn_implementation="eager")
        eager.load_state_dict(model.state_dict())
    return eager.eval()


def test_per_head_terms_match_transformers_modules(zoo, record_property):
    x, ref = zoo.ref("B32", 3, (224, 224))
    x, ref = x[:2], ref[:2]
    attn_ref, mlp_ref, emb = reference_terms(eager_copy(zoo.model("B32")), x)
    scale = 1e-5 * emb.norm(dim=-1).max().item()
    assert max_err(emb, ref)[0] <= scale  # eager attention gives the same embedding as the default
    # the reference itself is exact: its terms sum to transformers' embedding
    assert (attn_ref.sum((1, 2, 3)) + mlp_ref.sum(1) - emb).abs().max().item() <= scale

    a = zoo.adapter("B32")
    d = a.decompose(x, spatial=True)
    ht = d.head_terms()
    assert ht.shape == attn_ref.shape == (2, 3, 50, 12, 512)
    head_err = (ht - attn_ref).abs().max().item()
    mlp_err = (d.mlp_terms() - mlp_ref).abs().max().item()
    ns = a.decompose(x, spatial=False)
    per_head_err = (ns.head_terms() - attn_ref.sum(2)).abs().max().item()
    record_property("head_terms_err", head_err)
    record_property("mlp_terms_err", mlp_err)
    record_property("per_head_err", per_head_err)
    record_property("tol", scale)
    assert head_err <= scale, (head_err, scale)
    assert mlp_err <= scale, (mlp_err, scale)
    assert per_head_err <= scale, (per_head_err, scale)
