"""The independent references of tests/families/reference.py, checked two ways on random float64 weights.

1. Sums: the terms add up to the source library's own embedding, computed here by the source's own forward
   (≤ 1e-9 relative).
2. Formula: for one image, terms are recomputed with explicit Python loops over tokens from the *source's own
   intermediate tensors* (captured with hooks on its modules during that same forward) and the source's
   weights, sliced here per head — never from the reference's internals.

Each reference's wall time is printed (``-s`` shows it); nothing asserts on speed.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from tests.families import models, reference

pytest.importorskip("open_clip")
pytest.importorskip("timm")

SUM_TOL = 1e-9
LOOP_TOL = 1e-10
IMAGE = 0  # the image the loop checks recompute




def source_run(forward, **targets):
    """Run the source's forward once with hooks: returns (its output, the captured tensors).

    ``targets``: ``name=(module, 'in' | 'out')`` — the module's first input or its output."""
    seen, handles = {}, []
    for name, (module, where) in targets.items():
        if where == "in":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: seen.__setitem__(name, args[0].detach().clone())))
        else:
            handles.append(module.register_forward_hook(
                lambda m, args, out, name=name: seen.__setitem__(name, out.detach().clone())))
    try:
        with torch.no_grad():
            out = forward()
    finally:
        for h in handles:
            h.remove()
    return out, seen


def timed(name, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    print(f"\n{name}: {time.perf_counter() - t:.2f} s")
    return out


# ------------------------------------------------------------------------ one-token formulas, from definitions


def ln_of(vec: torch.Tensor, ln) -> tuple[float, float]:
    """One token's LayerNorm statistics: mean and sqrt(biased variance + eps)."""
    d = vec.numel()
    mu = vec.sum().item() / d
    var = ((vec - mu) ** 2).sum().item() / d
    return mu, math.sqrt(var + ln.eps)


def layer_norm(vec: torch.Tensor, ln) -> torch.Tensor:
    mu, sd = ln_of(vec, ln)
    return (vec - mu) / sd * ln.weight + ln.bias


def frozen(c: torch.Tensor, mu: float, sd: float, ln, share: float) -> torch.Tensor:
    return ln.weight * (c - share * mu) / sd + share * ln.bias


def softmax(scores: list[float]) -> list[float]:
    top = max(s for s in scores if s != -math.inf)
    e = [math.exp(s - top) if s != -math.inf else 0.0 for s in scores]
    total = sum(e)
    return [x / total for x in e]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = LOOP_TOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item() / max(b.norm().item(), 1e-300)
    assert err <= tol, f"relative error {err:.3g}"


def pool_loop(ys, q, w_k, b_k, w_v, w_o, scale, mask=None):
    """One pool head, token by token, on post-LN tokens ``ys`` (a list): α_n ∝ exp(scale·q·(W_K y_n + b_K)) and
    the terms ``α_n · W_O W_V y_n`` (no value bias). ``q`` [dh], ``w_k``/``w_v`` [dh, D], ``w_o`` [E, dh]."""
    scores = [float(q @ (w_k @ y + b_k)) * scale if mask is None or bool(mask[n]) else -math.inf
              for n, y in enumerate(ys)]
    alpha = softmax(scores)
    return [alpha[n] * (w_o @ (w_v @ y)) for n, y in enumerate(ys)], alpha


def through_pool_loop(comp, stats, post_ln, share, paths):
    """A residual component ``comp`` [N, D] at every token through the frozen post-LN (``stats``: each token's
    (μ, σ); ``share`` of μ and β) and every frozen pool head ``(α, W_V, W_O)``: Σ_hp W_O W_V Σ_n α_n ỹ_n."""
    total = 0.0
    for alpha, w_v, w_o in paths:
        acc = sum(alpha[n] * frozen(comp[n], mu, sd, post_ln, share) for n, (mu, sd) in enumerate(stats))
        total = total + w_o @ (w_v @ acc)
    return total


def check_map_sums(r, emb, n_layers):
    """The MAP identities, from the returned terms against the source's own embedding."""
    pool = r["pool_terms"].sum((1, 2)) + r["pool_value_bias"].sum(1) + r["pool_out_bias"] + r["proj_bias"]
    assert reference.rel_err(pool + r["mlp_term"], emb) <= SUM_TOL
    constants = r["pool_value_bias"].sum(1) + r["pool_out_bias"] + r["proj_bias"]
    assert reference.rel_err(r["constants"], constants) < 1e-15
    layers = r["embed_term"] + r["attn_layer_terms"].sum(1) + r["mlp_layer_terms"].sum(1)
    assert reference.rel_err(layers + r["constants"] + r["mlp_term"], emb) <= SUM_TOL
    assert reference.rel_err(r["layer_terms"].sum(1) + r["constants"] + r["mlp_term"], emb) <= SUM_TOL
    assert reference.rel_err(r["layer_terms"][:, 0], r["embed_term"]) == 0
    assert reference.rel_err(r["head_terms"].sum(2) + r["attn_bias_terms"], r["attn_layer_terms"]) <= SUM_TOL
    assert r["layer_terms"].shape[1] == n_layers + 1
    torch.testing.assert_close(r["pool_attn"].sum(-1), torch.ones_like(r["pool_attn"][..., 0]), rtol=0, atol=1e-14)
    for key, t in r.items():  # no term vanished by accident (a SigLIP tower has no projection bias)
        if key not in ("pool_attn", "proj_bias") and t.is_floating_point():
            assert t.abs().amax() > 0, key


# ----------------------------------------------------------------------------------------- plain CLIP ViT


@pytest.fixture(scope="module")
def clip_case():
    model = models.open_clip_vit("ViT-B-32", layers=2)
    x = models.pixels(2, 224)
    v, layer = model.visual, 1
    blk = v.transformer.resblocks[layer]
    emb, seen = source_run(lambda: model.encode_image(x), x_l=(blk, "in"), x_last=(v.ln_post, "in"),
                           x0=(v.transformer.resblocks[0], "in"), mlp=(blk.mlp, "out"))
    r = timed("reference_clip_vit (ViT-B-32, 2 blocks, 224 px, batch 2)", reference.reference_clip_vit, model, x)
    return model, layer, emb, seen, r


def test_clip_vit_terms_sum_to_encode_image(clip_case):
    _, _, emb, _, r = clip_case
    total = r["embed_term"] + r["head_terms"].sum((1, 2, 3)) + r["mlp_terms"].sum(1) + r["proj_bias"]
    assert reference.rel_err(total, emb) <= SUM_TOL
    assert reference.rel_err(r["head_terms"].sum((2, 3)), r["attn_layer_terms"]) <= SUM_TOL
    assert r["head_terms"].shape == (2, 2, 50, 12, 512)


def test_clip_vit_head_token_terms_follow_the_paper_rule(clip_case):
    model, layer, _, seen, r = clip_case
    v = model.visual
    blk, head = v.transformer.resblocks[layer], 5
    n_tok, d = seen["x_l"].shape[1:]
    heads = blk.attn.num_heads
    dh = d // heads
    n_layers = len(v.transformer.resblocks)
    w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
    rows = slice(head * dh, (head + 1) * dh)
    w_q, b_q = w[:d][rows], b[:d][rows]
    w_k, b_k = w[d:2 * d][rows], b[d:2 * d][rows]
    w_v, b_v = w[2 * d:][rows], b[2 * d:][rows]
    w_o, b_o = blk.attn.out_proj.weight[:, rows], blk.attn.out_proj.bias
    mu, sd = ln_of(seen["x_last"][IMAGE, 0], v.ln_post)
    share = 1 / ((2 * n_layers + 1) * n_tok * heads)
    with torch.no_grad():
        ys = [layer_norm(seen["x_l"][IMAGE, m], blk.ln_1) for m in range(n_tok)]
        q0 = w_q @ ys[0] + b_q
        alpha = softmax([float(q0 @ (w_k @ y + b_k)) / math.sqrt(dh) for y in ys])
        for m in range(n_tok):
            c = alpha[m] * (w_o @ (w_v @ ys[m] + b_v)) + b_o / (n_tok * heads)
            close(r["head_terms"][IMAGE, layer, m, head], frozen(c, mu, sd, v.ln_post, share) @ v.proj)
        s = 1 / (2 * n_layers + 1)
        close(r["mlp_terms"][IMAGE, layer], frozen(seen["mlp"][IMAGE, 0], mu, sd, v.ln_post, s) @ v.proj)
        close(r["embed_term"][IMAGE], frozen(seen["x0"][IMAGE, 0], mu, sd, v.ln_post, s) @ v.proj)
        close(r["shift_terms"][IMAGE, layer], frozen(b_o, mu, sd, v.ln_post, 0.0) @ v.proj)  # for converting


# -------------------------------------------------------------------------------- SigLIP through open_clip


def timm_probe_head(pool, hp):
    """One pool head's weights, sliced from timm's ``AttentionPoolLatent`` (``kv`` rows: k then v)."""
    d, dh = pool.kv.weight.shape[1], pool.head_dim
    rows = slice(hp * dh, (hp + 1) * dh)
    q = (pool.q.weight @ pool.latent[0, 0] + pool.q.bias)[rows]
    w_k, b_k = pool.kv.weight[:d][rows], pool.kv.bias[:d][rows]
    return q, w_k, b_k, pool.kv.weight[d:][rows], pool.proj.weight[:, rows], pool.scale


@pytest.fixture(scope="module", params=["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def siglip_case(request):
    model = models.open_clip_timm(request.param, layers=2)
    x = models.pixels(2, 224, seed=1)
    trunk, layer = model.visual.trunk, 1
    blk = trunk.blocks[layer]
    emb, seen = source_run(lambda: model.encode_image(x), x_last=(trunk.norm, "in"),
                           out=(trunk.attn_pool.norm, "in"), x0=(trunk.blocks[0], "in"), attn=(blk.attn, "out"),
                           heads=(blk.attn.proj, "in"), mlp=(blk.mlp, "out"))
    r = timed(f"reference_siglip_open_clip ({request.param}, 2 blocks, 224 px, batch 2)",
              reference.reference_siglip_open_clip, model, x)
    return model, layer, emb, seen, r


def test_siglip_open_clip_terms_sum_to_encode_image(siglip_case):
    model, _, emb, _, r = siglip_case
    check_map_sums(r, emb, len(model.visual.trunk.blocks))
    assert r["pool_terms"].shape == (2, 12, 196, 768) and r["head_terms"].shape == (2, 2, 12, 768)


def test_siglip_open_clip_pool_and_layer_terms_follow_the_formula(siglip_case):
    model, layer, _, seen, r = siglip_case
    trunk = model.visual.trunk
    pool, blk, head, hp = trunk.attn_pool, trunk.blocks[layer], 7, 4
    tokens = seen["x_last"][IMAGE]
    n_layers, n_heads = len(trunk.blocks), blk.attn.num_heads
    s = 1 / (2 * n_layers + 1)
    with torch.no_grad():
        stats = [ln_of(t, trunk.norm) for t in tokens]
        ys = [layer_norm(t, trunk.norm) for t in tokens]
        terms, alpha = pool_loop(ys, *timm_probe_head(pool, hp))
        for n in range(len(ys)):
            close(r["pool_terms"][IMAGE, hp, n], terms[n])
        # the lumped MLP term, from the source's own pooled attention output and its own modules
        close(r["mlp_term"][IMAGE], pool.mlp(pool.norm(seen["out"][IMAGE, 0])))
        # layer terms: every pool head's frozen path (α, W_V, W_O) applied to the source's own block outputs
        paths = []
        for h in range(pool.num_heads):
            q_h, w_k_h, b_k_h, w_v_h, w_o_h, scale = timm_probe_head(pool, h)
            paths.append((pool_loop(ys, q_h, w_k_h, b_k_h, w_v_h, w_o_h, scale)[1], w_v_h, w_o_h))
        close(r["attn_layer_terms"][IMAGE, layer], through_pool_loop(seen["attn"][IMAGE], stats, trunk.norm, s, paths))
        close(r["mlp_layer_terms"][IMAGE, layer], through_pool_loop(seen["mlp"][IMAGE], stats, trunk.norm, s, paths))
        close(r["embed_term"][IMAGE], through_pool_loop(seen["x0"][IMAGE], stats, trunk.norm, s, paths))
        dh = blk.attn.head_dim
        rows = slice(head * dh, (head + 1) * dh)
        head_out = seen["heads"][IMAGE][:, rows] @ blk.attn.proj.weight[:, rows].T  # [N, D], no bias
        close(r["head_terms"][IMAGE, layer, head], through_pool_loop(head_out, stats, trunk.norm, s / n_heads, paths))
        bias = blk.attn.proj.bias.expand_as(head_out)
        close(r["attn_bias_terms"][IMAGE, layer], through_pool_loop(bias, stats, trunk.norm, 0.0, paths))


# ------------------------------------------------------------------------------------------------- EVA02


@pytest.fixture(scope="module", params=[False, True], ids=["EVA02-B-16", "EVA02-B-16+layer-scale"])
def eva_case(request):
    model = models.open_clip_timm("EVA02-B-16", layers=2, layer_scale=request.param)
    x = models.pixels(2, 224, seed=2)
    trunk, layer = model.visual.trunk, 1
    blk = trunk.blocks[layer]
    emb, seen = source_run(lambda: model.encode_image(x), h=(blk.norm1, "out"), sub=(blk.attn.norm, "in"),
                           x_last=(trunk.norm, "in"), mlp=(blk.mlp, "out"), x0=(trunk.blocks[0], "in"))
    r = timed(f"reference_eva02 (EVA02-B-16, layer scale {request.param}, 2 blocks, 224 px, batch 2)",
              reference.reference_eva02, model, x)
    return model, layer, emb, seen, r


def test_eva02_terms_sum_to_encode_image(eva_case):
    _, _, emb, _, r = eva_case
    total = (r["embed_term"] + r["head_terms"].sum((1, 2, 3)) + r["shift_terms"].sum(1) + r["mlp_terms"].sum(1)
             + r["proj_bias"])
    assert reference.rel_err(total, emb) <= SUM_TOL
    assert reference.rel_err(r["head_terms"].sum((2, 3)) + r["shift_terms"], r["attn_layer_terms"]) <= SUM_TOL
    assert r["head_terms"].shape == (2, 2, 197, 12, 512)
    assert r["shift_terms"].abs().amax() > 0 and r["proj_bias"].abs().amax() > 0


def test_eva02_cls_row_terms_follow_the_formula(eva_case):
    """Rope here is timm's own ``apply_rot_embed_cat`` (the reference writes its own rotation)."""
    from timm.layers.pos_embed_sincos import apply_rot_embed_cat

    model, layer, _, seen, r = eva_case
    trunk = model.visual.trunk
    blk, head = trunk.blocks[layer], 3
    at = blk.attn
    hs = seen["h"][IMAGE]
    n_tok, d = hs.shape
    n_heads, dh = at.num_heads, at.head_dim
    rows = slice(head * dh, (head + 1) * dh)
    rope = trunk.rope.get_embed()
    npt = at.num_prefix_tokens
    g1 = blk.gamma_1 if blk.gamma_1 is not None else torch.ones(d, dtype=torch.float64)
    g2 = blk.gamma_2 if blk.gamma_2 is not None else torch.ones(d, dtype=torch.float64)
    n_layers = len(trunk.blocks)
    mu, sd = ln_of(seen["x_last"][IMAGE, 0], trunk.norm)
    mu_s, sd_s = ln_of(seen["sub"][IMAGE, 0], at.norm)  # the sub-LN's statistics at the CLS row
    w_head = trunk.head.weight
    with torch.no_grad():
        q0 = at.q_proj.weight[rows] @ hs[0] + at.q_proj.bias[rows]  # the CLS query: no rope
        alpha_scores, vs = [], []
        for m in range(n_tok):
            k = at.k_proj.weight[rows] @ hs[m]  # EVA02: k has no bias
            if m >= npt:  # rope on patch tokens only
                k = apply_rot_embed_cat(k[None], rope[m - npt][None])[0]
            alpha_scores.append(float(q0 @ k) * dh ** -0.5)
            vs.append(at.v_proj.weight[rows] @ hs[m] + at.v_proj.bias[rows])
        alpha = softmax(alpha_scores)
        share = 1 / ((2 * n_layers + 1) * n_tok * n_heads)
        for m in range(n_tok):
            t = g1 * (at.proj.weight[:, rows] @ (at.norm.weight[rows] * alpha[m] * vs[m] / sd_s))
            close(r["head_terms"][IMAGE, layer, m, head], w_head @ frozen(t, mu, sd, trunk.norm, share))
        u = g1 * (at.proj.weight @ (at.norm.bias - at.norm.weight * mu_s / sd_s) + at.proj.bias)
        close(r["shift_terms"][IMAGE, layer], w_head @ frozen(u, mu, sd, trunk.norm, 0.0))
        s = 1 / (2 * n_layers + 1)
        close(r["mlp_terms"][IMAGE, layer], w_head @ frozen(g2 * seen["mlp"][IMAGE, 0], mu, sd, trunk.norm, s))
        close(r["embed_term"][IMAGE], w_head @ frozen(seen["x0"][IMAGE, 0], mu, sd, trunk.norm, s))
        close(r["proj_bias"][IMAGE], trunk.head.bias)


# ----------------------------------------------------------------------------------------------- PE-Core


@pytest.fixture(scope="module")
def pe_case():
    model = models.open_clip_timm("PE-Core-B-16", layers=2)
    x = models.pixels(2, 224, seed=3)
    trunk = model.visual.trunk
    emb, seen = source_run(lambda: model.encode_image(x), x_last=(trunk.norm, "in"), out=(trunk.attn_pool.norm, "in"))
    r = timed("reference_pe_core (PE-Core-B-16, 2 blocks, 224 px, batch 2)", reference.reference_pe_core, model, x)
    return model, emb, seen, r


def test_pe_core_terms_sum_to_encode_image(pe_case):
    model, emb, _, r = pe_case
    check_map_sums(r, emb, len(model.visual.trunk.blocks))
    assert r["pool_terms"].shape == (2, 8, 197, 1024)  # 8 pool heads over CLS + 196 patches
    assert r["proj_bias"].abs().amax() > 0


def test_pe_core_pool_terms_follow_the_formula(pe_case):
    model, _, seen, r = pe_case
    trunk = model.visual.trunk
    pool, hp = trunk.attn_pool, 6
    with torch.no_grad():
        ys = [layer_norm(t, trunk.norm) for t in seen["x_last"][IMAGE]]
        terms, _ = pool_loop(ys, *timm_probe_head(pool, hp))
        for n in range(len(ys)):  # n = 0 is the CLS token: PE's pool attends to it too
            close(r["pool_terms"][IMAGE, hp, n], trunk.head.weight @ terms[n])
        close(r["mlp_term"][IMAGE], trunk.head.weight @ pool.mlp(pool.norm(seen["out"][IMAGE, 0])))


# ------------------------------------------------------------------------------------ SigLIP, transformers


def hf_probe_head(head, hp):
    """One pool head's weights, sliced from ``nn.MultiheadAttention`` (packed q | k | v rows)."""
    at = head.attention
    d = at.embed_dim
    dh = d // at.num_heads
    rows = slice(hp * dh, (hp + 1) * dh)
    w, b = at.in_proj_weight, at.in_proj_bias
    q = (w[:d] @ head.probe[0, 0] + b[:d])[rows]
    return q, w[d:2 * d][rows], b[d:2 * d][rows], w[2 * d:][rows], at.out_proj.weight[:, rows], dh ** -0.5


def image_features(model, **inputs):
    """The source's image embedding: ``get_image_features`` (transformers ≥ 5 wraps it in an output object)
    for a full model, ``pooler_output`` for a vision model."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(**inputs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    return model(**inputs).pooler_output


@pytest.fixture(scope="module", params=[True, False], ids=["SiglipModel", "SiglipVisionModel"])
def hf_case(request):
    pytest.importorskip("transformers")
    model = models.hf_siglip(layers=2, with_text=request.param)
    x = models.pixels(2, 224, seed=4)
    vm = model.vision_model if hasattr(model, "vision_model") else model
    emb, seen = source_run(lambda: image_features(model, pixel_values=x), x_last=(vm.post_layernorm, "in"),
                           out=(vm.head.layernorm, "in"))
    r = timed(f"reference_siglip_hf ({type(model).__name__}, 2 blocks, 224 px, batch 2)",
              reference.reference_siglip_hf, model, x)
    return vm, emb, seen, r


def test_siglip_hf_terms_sum_to_the_image_features(hf_case):
    _, emb, _, r = hf_case
    check_map_sums(r, emb, 2)


def test_siglip_hf_pool_terms_follow_the_formula(hf_case):
    vm, _, seen, r = hf_case
    head, hp = vm.head, 9
    with torch.no_grad():
        ys = [layer_norm(t, vm.post_layernorm) for t in seen["x_last"][IMAGE]]
        terms, alpha = pool_loop(ys, *hf_probe_head(head, hp))
        for n in range(len(ys)):
            close(r["pool_terms"][IMAGE, hp, n], terms[n])
        assert max(abs(a - b) for a, b in zip(alpha, r["pool_attn"][IMAGE, hp].tolist(), strict=True)) < 1e-15
        close(r["mlp_term"][IMAGE], head.mlp(head.layernorm(seen["out"][IMAGE, 0])))


# ------------------------------------------------------------------------------ SigLIP 2 NaFlex, transformers


@pytest.fixture(scope="module")
def hf2_case():
    pytest.importorskip("transformers")
    model = models.hf_siglip2(layers=2)
    inputs = models.naflex_inputs([(8, 12), (10, 10)], max_patches=128, seed=5)  # both padded, two aspects
    values, mask, shapes = inputs
    vm = model.vision_model
    emb, seen = source_run(lambda: image_features(model, pixel_values=values, pixel_attention_mask=mask,
                                                  spatial_shapes=shapes),
                           x_last=(vm.post_layernorm, "in"), emb=(vm.embeddings, "out"))
    r = timed("reference_siglip2_hf (Siglip2Model NaFlex, 2 blocks, 96 and 100 patches of 128, batch 2)",
              reference.reference_siglip2_hf, model, *inputs)
    return vm, inputs, emb, seen, r


def test_siglip2_naflex_terms_sum_and_padding_is_inert(hf2_case):
    _, (_, mask, _), emb, _, r = hf2_case
    check_map_sums(r, emb, 2)
    pad = ~mask.bool()
    assert pad.any()
    assert (r["pool_attn"].transpose(1, 2)[pad] == 0).all()
    assert (r["pool_terms"].transpose(1, 2)[pad] == 0).all()


def test_siglip2_naflex_pool_terms_and_positions(hf2_case):
    vm, (values, mask, shapes), _, seen, r = hf2_case
    head, hp, image = vm.head, 2, 1
    with torch.no_grad():
        ys = [layer_norm(t, vm.post_layernorm) for t in seen["x_last"][image]]
        terms, _ = pool_loop(ys, *hf_probe_head(head, hp), mask=mask[image])
        for n in range(len(ys)):
            close(r["pool_terms"][image, hp, n], terms[n])
    # the positional resize written from its definition (float64) vs the source's (float32 inside)
    ours = reference.siglip2_positions(vm, shapes, values.shape[1])
    pe = vm.embeddings.patch_embedding
    theirs = seen["emb"] - (values @ pe.weight.T + pe.bias)
    err = reference.rel_err(ours[mask.bool()], theirs[mask.bool()])
    print(f"\nSiglip2 positional resize: float64 definition vs transformers' float32 path: {err:.2g}")
    assert err < 1e-6


# ------------------------------------------------------------------------------------------ ResNet attnpool


#: name, input size, pool heads, grid side, embed dim (RN50x4 takes ~8 s to build here: marked slow)
RESNETS = [("RN50", 224, 32, 7, 1024), ("RN101", 224, 32, 7, 512),
           pytest.param(("RN50x4", 288, 40, 9, 640), marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=RESNETS, ids=lambda p: p[0])
def resnet_case(request):
    name, size, heads, side, dim = request.param
    model = models.open_clip_resnet(name)
    x = models.pixels(2, size, seed=6)
    emb, seen = source_run(lambda: model.encode_image(x), f=(model.visual.attnpool, "in"))
    r = timed(f"reference_resnet ({name}, {size} px, batch 2)", reference.reference_resnet, model, x)
    return model, emb, seen, r, (heads, side, dim)


def test_resnet_pool_terms_sum_to_encode_image(resnet_case):
    _, emb, _, r, (heads, side, dim) = resnet_case
    assert reference.rel_err(r["pool_terms"].sum((1, 2)) + r["constants"], emb) <= SUM_TOL
    assert r["pool_terms"].shape == (2, heads, side * side + 1, dim) and r["grid"].tolist() == [side, side]


def test_resnet_pool_terms_follow_the_formula_mean_token_last(resnet_case):
    model, _, seen, r, _ = resnet_case
    ap = model.visual.attnpool
    f = seen["f"][IMAGE]  # [C, h, w]
    c, h, w = f.shape
    dh = c // ap.num_heads
    with torch.no_grad():
        positions = [f[:, i, j] for i in range(h) for j in range(w)]  # row-major
        mean = sum(positions) / len(positions)
        pos = ap.positional_embedding
        tokens = [mean + pos[0]] + [p + pos[1 + i] for i, p in enumerate(positions)]
        for hp in (0, 17, ap.num_heads - 1):
            rows = slice(hp * dh, (hp + 1) * dh)
            q = ap.q_proj.weight[rows] @ tokens[0] + ap.q_proj.bias[rows]
            alpha = softmax([float(q @ (ap.k_proj.weight[rows] @ t + ap.k_proj.bias[rows])) / math.sqrt(dh)
                             for t in tokens])
            terms = [a * (ap.c_proj.weight[:, rows] @ (ap.v_proj.weight[rows] @ t)) for a, t in zip(alpha, tokens, strict=True)]
            for p in range(h * w):
                close(r["pool_terms"][IMAGE, hp, p], terms[1 + p])
            close(r["pool_terms"][IMAGE, hp, h * w], terms[0])  # the mean token, last
            close(r["pool_value_bias"][IMAGE, hp], ap.c_proj.weight[:, rows] @ ap.v_proj.bias[rows])
        close(r["pool_out_bias"][IMAGE], ap.c_proj.bias)
