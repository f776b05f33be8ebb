"""Independent float64 reference decompositions of each image-tower family, written from the architecture.

Each ``reference_<family>(model, ...) -> dict[str, Tensor]`` reads the *source library's* modules (open_clip,
timm, transformers) only for their weights, recomputes the forward explicitly in float64, asserts that its
forward reproduces the source's own image embedding (``≤ 1e-10`` relative to the embedding's norm), then
splits that embedding into direct-effect terms and asserts that they sum back to it. Clarity over speed: the
algebra is spelled out once per step; nothing here imports cliplens.

Conventions shared by every reference (the implementer matches these, or converts with the rules given):

* **Frozen LayerNorm.** A LayerNorm ``LN(x) = γ⊙(x − μ)/σ + β`` (σ = sqrt(biased var + eps)) applied to a
  sum of components ``x = Σ_c c`` is made linear by freezing μ and σ at the real forward's values (per token);
  component ``c`` with share ``s_c`` (``Σ_c s_c = 1``) maps to ``γ⊙(c − s_c·μ)/σ + s_c·β``.
* **Share rule** (the CLIP paper's ``prs_hook``): the residual stream is ``x_L = x_0 + Σ_l attn_l + Σ_l mlp_l``,
  ``2L + 1`` residual components, each with share ``1/(2L+1)``. Inside an attention layer the layer's share
  goes equally to its split terms (per head ``1/((2L+1)·H)``, per head × source token
  ``1/((2L+1)·N·H)``); terms that carry the layer's *biases or shifts* (out-projection bias, sub-LN shift)
  take no share (``s = 0``: only ``γ⊙c/σ``) — except in :func:`reference_clip_vit`, which pins the paper's own
  rule (out-projection bias spread as ``b_O/(N·H)`` into every head × token term). Converting (exact, all
  linear): paper-rule term = this term + the layer's bias/shift term ÷ the number of split terms, i.e.
  ``head_terms + shift_terms/(N·H)`` (EVA02, per head × token), ``head_terms + attn_bias_terms/H`` (MAP,
  per head).
* **Pooling-attention biases** (MAP probe, ResNet AttentionPool2d): a pool token term is
  ``α_{hp,n} · W_O^{hp} W_V^{hp} t_n`` *without* the value bias; since ``Σ_n α_{hp,n} = 1`` the value bias is
  one term per pool head, ``pool_value_bias[hp] = W_O^{hp} b_V^{hp}``; the out-projection bias is one term,
  ``pool_out_bias``. (Value bias inside each token term instead: add ``α_{hp,n}·pool_value_bias[hp]``;
  ``pool_attn`` is returned for that.)
* **Projection biases** (open_clip's timm ``head`` Linear of EVA02 / PE-Core) are one term, ``proj_bias``;
  every other term is mapped by the projection's weight only.
* Every returned tensor is float64 and batch-first; constant terms are expanded over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOL = 1e-10  # own forward vs the source's embedding, and the identities, relative to the largest norm


# ----------------------------------------------------------------------------------------------- basic algebra


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours − ref| / max ‖ref‖`` over the last dimension (the parity measure)."""
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    return (ours - ref).abs().max().item() / ref.norm(dim=-1).max().item()


#: the largest error each check saw in this process (what -> error), for the tests' report
SEEN: dict[str, float] = {}


def _check(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: float = TOL) -> float:
    """``rel_err(ours, ref) ≤ tol``, else AssertionError naming ``what``."""
    err = rel_err(ours, ref)
    SEEN[what] = max(err, SEEN.get(what, 0.0))
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    return err


def _affine(ln) -> tuple[torch.Tensor, torch.Tensor]:
    d = ln.normalized_shape[-1]
    w = ln.weight if ln.weight is not None else torch.ones(d, dtype=torch.float64)
    b = ln.bias if ln.bias is not None else torch.zeros(d, dtype=torch.float64)
    return w, b


def _stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and σ = sqrt(biased variance + eps), kept as ``[..., 1]``."""
    mu = x.mean(-1, keepdim=True)
    sd = ((x - mu) ** 2).mean(-1, keepdim=True).add(eps).sqrt()
    return mu, sd


def _ln(x: torch.Tensor, ln) -> torch.Tensor:
    """A LayerNorm (``nn.LayerNorm`` or timm's) written out; ``nn.Identity`` passes through."""
    if isinstance(ln, torch.nn.Identity):
        return x
    mu, sd = _stats(x, ln.eps)
    w, b = _affine(ln)
    return (x - mu) / sd * w + b


def _frozen(c: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, ln, share: float) -> torch.Tensor:
    """Component ``c`` through a LayerNorm frozen at (μ, σ), with ``share`` of μ and β: γ⊙(c − sμ)/σ + sβ."""
    w, b = _affine(ln)
    return w * (c - share * mu) / sd + share * b


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    y = x @ layer.weight.T
    return y + layer.bias if layer.bias is not None else y


def _mlp(mlp, h: torch.Tensor) -> torch.Tensor:
    """The MLP of a block, written out for the kinds these families use (lumped: never split)."""
    kind = type(mlp).__name__
    if hasattr(mlp, "c_fc"):  # open_clip: Sequential(c_fc, gelu, c_proj)
        return _linear(mlp.gelu(_linear(h, mlp.c_fc)), mlp.c_proj)
    if kind == "Mlp":  # timm: fc1 → act → (norm) → fc2
        return _linear(_ln(mlp.act(_linear(h, mlp.fc1)), mlp.norm), mlp.fc2)
    if kind == "SwiGLU":  # timm (EVA02 with scale_mlp): act(fc1_g x) ⊙ fc1_x x → sub-LN → fc2
        return _linear(_ln(mlp.act(_linear(h, mlp.fc1_g)) * _linear(h, mlp.fc1_x), mlp.norm), mlp.fc2)
    if kind == "GluMlp":  # timm packed SwiGLU: fc1 → halves (a, b) → act(a)⊙b (or a⊙act(b)) → (norm) → fc2
        a, b = _linear(h, mlp.fc1).chunk(2, dim=-1)
        g = a * mlp.act(b) if mlp.gate_last else mlp.act(a) * b
        return _linear(_ln(g, mlp.norm), mlp.fc2)
    if hasattr(mlp, "activation_fn"):  # transformers SiglipMLP / Siglip2MLP
        return _linear(mlp.activation_fn(_linear(h, mlp.fc1)), mlp.fc2)
    raise TypeError(f"no reference MLP for {kind}")


def _gamma(ls) -> torch.Tensor | None:
    """A layer scale's γ (open_clip/timm ``LayerScale``, EVA's raw parameter), or None for none."""
    if ls is None or isinstance(ls, torch.nn.Identity):
        return None
    return ls if isinstance(ls, torch.Tensor) else ls.gamma


def _rotate(x: torch.Tensor, emb: torch.Tensor, half: bool) -> torch.Tensor:
    """Rotary embedding: ``emb = [sin | cos]`` (timm's 'cat' table, ``[N, 2·dh]``); x·cos + rot(x)·sin with
    rot(x) = (−x₁, x₀, −x₃, x₂, …) (interleaved pairs) or (−x_back, x_front) (``half``)."""
    sin, cos = emb.chunk(2, dim=-1)
    if half:
        front, back = x.chunk(2, dim=-1)
        r = torch.cat([-back, front], dim=-1)
    else:
        r = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).reshape(x.shape)
    return x * cos + r * sin


# ------------------------------------------------------------------------------------- one attention block


@dataclass
class _Attn:
    """One multi-head self-attention sub-layer, as weights: pre-LN, q/k/v, optional rope on q and k of the
    non-prefix tokens, optional sub-LN over the concatenated heads, out-projection, optional layer scale."""

    ln1: object
    w_q: torch.Tensor
    b_q: torch.Tensor | None
    w_k: torch.Tensor
    b_k: torch.Tensor | None
    w_v: torch.Tensor
    b_v: torch.Tensor | None
    heads: int
    scale: float
    w_o: torch.Tensor  # [D, H·dh]
    b_o: torch.Tensor | None
    sub_ln: object = None  # LayerNorm over the concatenated heads before w_o (EVA02), or None
    gamma: torch.Tensor | None = None  # layer scale
    rope: torch.Tensor | None = None  # [N − npt, 2·dh]
    rope_half: bool = False
    npt: int = 0  # prefix tokens that rope skips


@dataclass
class _Block:
    attn: _Attn
    ln2: object
    mlp: object
    gamma2: torch.Tensor | None = None


def _project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, heads: int) -> torch.Tensor:
    y = x @ w.T
    if b is not None:
        y = y + b
    bsz, n, _ = y.shape
    return y.reshape(bsz, n, heads, -1).transpose(1, 2)  # [B, H, N, dh]


def _run_attention(x: torch.Tensor, a: _Attn, key_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The sub-layer's output split exactly as ``Σ_h heads[:, h] + shift`` (every token), plus the CLS row's
    split over source tokens.

    ``heads`` ``[B, H, N, D]``: ``g ⊙ W_O^h (γ_s^h ⊙ o^h_n / σ_n)``, o^h_n = Σ_m α^h_{n,m} v^h_m (v with b_V);
    ``shift`` ``[B, N, D]``: ``g ⊙ (W_O (β_s − γ_s μ_n/σ_n) + b_O)`` (no sub-LN: γ_s = 1, σ = 1, μ = β_s = 0);
    ``cls_split`` ``[B, N, H, D]``: ``g ⊙ W_O^h (γ_s^h ⊙ α^h_{0,m} v^h_m / σ_0)`` — Σ_m cls_split = heads[:, :, 0].
    """
    h = _ln(x, a.ln1)
    q = _project(h, a.w_q, a.b_q, a.heads)
    k = _project(h, a.w_k, a.b_k, a.heads)
    v = _project(h, a.w_v, a.b_v, a.heads)
    if a.rope is not None:
        p = a.npt
        q = torch.cat([q[:, :, :p], _rotate(q[:, :, p:], a.rope, a.rope_half)], dim=2)
        k = torch.cat([k[:, :, :p], _rotate(k[:, :, p:], a.rope, a.rope_half)], dim=2)
    scores = (q @ k.transpose(-1, -2)) * a.scale  # [B, H, N(query), N(key)]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    alpha = scores.softmax(dim=-1)
    o = alpha @ v  # [B, H, N, dh]
    bsz, nh, n, dh = o.shape
    cat = o.transpose(1, 2).reshape(bsz, n, nh * dh)
    d_out = a.w_o.shape[0]
    if a.sub_ln is not None and not isinstance(a.sub_ln, torch.nn.Identity):
        mu, sd = _stats(cat, a.sub_ln.eps)
        gs, bs = _affine(a.sub_ln)
        scale_tok = gs / sd  # [B, N, H·dh]
        shift_pre = bs - gs * mu / sd  # [B, N, H·dh]
    else:
        scale_tok = torch.ones(bsz, n, nh * dh, dtype=x.dtype)
        shift_pre = torch.zeros(bsz, n, nh * dh, dtype=x.dtype)
    w_o = a.w_o.reshape(d_out, nh, dh)
    scale_h = scale_tok.reshape(bsz, n, nh, dh).transpose(1, 2)  # [B, H, N, dh]
    heads = torch.einsum("bhnk,dhk->bhnd", o * scale_h, w_o)
    shift = shift_pre @ a.w_o.T
    if a.b_o is not None:
        shift = shift + a.b_o
    per_source = alpha[:, :, 0, :, None] * v * scale_h[:, :, :1]  # [B, H, N(source), dh] at the CLS query
    cls_split = torch.einsum("bhmk,dhk->bmhd", per_source, w_o)
    if a.gamma is not None:
        heads, shift, cls_split = heads * a.gamma, shift * a.gamma, cls_split * a.gamma
    return dict(heads=heads, shift=shift, cls_split=cls_split, alpha=alpha)


def _run_blocks(x0: torch.Tensor, blocks: list[_Block], key_mask=None) -> tuple[torch.Tensor, list[dict]]:
    """The residual stream through the blocks; per block the attention split and the MLP output."""
    x, out = x0, []
    for blk in blocks:
        att = _run_attention(x, blk.attn, key_mask)
        x = x + att["heads"].sum(1) + att["shift"]
        m = _mlp(blk.mlp, _ln(x, blk.ln2))
        if blk.gamma2 is not None:
            m = m * blk.gamma2
        x = x + m
        out.append(dict(att, mlp=m))
    return x, out


# -------------------------------------------------------------------------------- block adapters, per source


def _open_clip_block(blk) -> _Block:
    """open_clip ``ResidualAttentionBlock``: ``nn.MultiheadAttention`` with a packed in-projection."""
    at = blk.attn
    d = at.embed_dim
    w, b = at.in_proj_weight, at.in_proj_bias
    attn = _Attn(blk.ln_1, w[:d], b[:d], w[d:2 * d], b[d:2 * d], w[2 * d:], b[2 * d:], at.num_heads,
                 (d // at.num_heads) ** -0.5, at.out_proj.weight, at.out_proj.bias, gamma=_gamma(blk.ls_1))
    return _Block(attn, blk.ln_2, blk.mlp, _gamma(blk.ls_2))


def _timm_vit_block(blk) -> _Block:
    """timm ``Block``: fused ``qkv`` Linear (rows q | k | v), optional ``attn.norm`` (scale_norm), ``ls1``/``ls2``."""
    at = blk.attn
    assert isinstance(at.q_norm, torch.nn.Identity) and isinstance(at.k_norm, torch.nn.Identity), "qk_norm"
    assert getattr(at, "gate", None) is None, "gated attention"
    wq, wk, wv = at.qkv.weight.chunk(3, dim=0)
    bq, bk, bv = at.qkv.bias.chunk(3) if at.qkv.bias is not None else (None, None, None)
    attn = _Attn(blk.norm1, wq, bq, wk, bk, wv, bv, at.num_heads, at.scale, at.proj.weight, at.proj.bias,
                 sub_ln=at.norm, gamma=_gamma(blk.ls1))
    return _Block(attn, blk.norm2, blk.mlp, _gamma(blk.ls2))


def _eva_block(blk, rope: torch.Tensor | None) -> _Block:
    """timm ``EvaBlock`` with ``EvaAttention`` (separate or fused q/k/v, k without bias, sub-LN ``attn.norm``)
    or ``AttentionRope`` (PE: fused ``qkv`` with bias); rope on the non-prefix tokens; ``gamma_1``/``gamma_2``."""
    at = blk.attn
    assert isinstance(at.q_norm, torch.nn.Identity) and isinstance(at.k_norm, torch.nn.Identity), "qk_norm"
    assert getattr(at, "gate", None) is None, "gated attention"
    assert getattr(at, "num_kv_groups", 1) == 1, "grouped-query attention"
    if at.qkv is not None:
        wq, wk, wv = at.qkv.weight.chunk(3, dim=0)
        if getattr(at, "q_bias", None) is not None:  # EvaAttention fused: k_bias is a zero buffer
            bq, bk, bv = at.q_bias, at.k_bias, at.v_bias
        elif at.qkv.bias is not None:
            bq, bk, bv = at.qkv.bias.chunk(3)
        else:
            bq = bk = bv = None
    else:
        wq, bq = at.q_proj.weight, at.q_proj.bias
        wk, bk = at.k_proj.weight, at.k_proj.bias
        wv, bv = at.v_proj.weight, at.v_proj.bias
    attn = _Attn(blk.norm1, wq, bq, wk, bk, wv, bv, at.num_heads, at.scale, at.proj.weight, at.proj.bias,
                 sub_ln=at.norm, gamma=blk.gamma_1, rope=rope, rope_half=bool(getattr(at, "rotate_half", False)),
                 npt=at.num_prefix_tokens)
    return _Block(attn, blk.norm2, blk.mlp, blk.gamma_2)


def _hf_block(layer) -> _Block:
    """transformers ``SiglipEncoderLayer`` / ``Siglip2EncoderLayer``: separate q/k/v/out projections."""
    at = layer.self_attn
    attn = _Attn(layer.layer_norm1, at.q_proj.weight, at.q_proj.bias, at.k_proj.weight, at.k_proj.bias,
                 at.v_proj.weight, at.v_proj.bias, at.num_heads, at.scale, at.out_proj.weight, at.out_proj.bias)
    return _Block(attn, layer.layer_norm2, layer.mlp)


# ------------------------------------------------------------------------------------------------ CLS heads


def _decompose_cls(embedding, x0, x, blocks, final_ln, proj, proj_bias, *, paper_rule: bool):
    """Split ``proj(LN_final(x_L[CLS])) (+ proj_bias)`` with LN_final frozen at the CLS token."""
    n_layers = len(blocks)
    share = 1.0 / (2 * n_layers + 1)
    mu, sd = _stats(x[:, 0], final_ln.eps)  # [B, 1]

    def through(c, s):  # c [B, ..., D]: frozen final LN (μ, σ broadcast over the middle dims), then proj
        extra = c.ndim - 2
        m, d = mu.reshape(mu.shape[0], *([1] * extra), 1), sd.reshape(sd.shape[0], *([1] * extra), 1)
        return _frozen(c, m, d, final_ln, s) @ proj

    n_tok, n_heads = blocks[0]["cls_split"].shape[1:3]
    embed_term = through(x0[:, 0], share)
    heads, shifts, attn_layers, mlps = [], [], [], []
    for b in blocks:
        head = through(b["cls_split"], share / (n_tok * n_heads))  # [B, N, H, E]
        shift = through(b["shift"][:, 0], 0.0)
        if paper_rule:  # the out-projection bias spread into every head × token term (and its share with it)
            head = head + shift[:, None, None] / (n_tok * n_heads)
        heads.append(head)
        shifts.append(shift)
        attn_layers.append(through(b["heads"][:, :, 0].sum(1) + b["shift"][:, 0], share))
        mlps.append(through(b["mlp"][:, 0], share))
    out = dict(
        embedding=embedding,
        head_terms=torch.stack(heads, 1),
        attn_layer_terms=torch.stack(attn_layers, 1),
        mlp_terms=torch.stack(mlps, 1),
        embed_term=embed_term,
        proj_bias=(proj_bias if proj_bias is not None else torch.zeros(proj.shape[1], dtype=x.dtype)).expand_as(
            embedding).clone(),
    )
    out["shift_terms"] = torch.stack(shifts, 1)  # under the paper rule: already inside head_terms
    rebuilt = out["embed_term"] + out["head_terms"].sum((1, 2, 3)) + out["mlp_terms"].sum(1) + out["proj_bias"]
    if not paper_rule:
        rebuilt = rebuilt + out["shift_terms"].sum(1)
        _check(out["head_terms"].sum((2, 3)) + out["shift_terms"], out["attn_layer_terms"], "heads + shift = layer")
    else:
        _check(out["head_terms"].sum((2, 3)), out["attn_layer_terms"], "heads = layer")
    _check(rebuilt, embedding, "terms sum to the embedding")
    return out


def reference_clip_vit(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Plain open_clip CLIP ViT (``ViT-B-32``, …), CLS pooling — the paper's decomposition, pinning the rule.

    ``z = P^T LN_post(x_L[CLS])``, ``x_L = x_0 + Σ_l attn_l + Σ_l mlp_l`` (x_0: the ``ln_pre`` output), LN_post
    frozen at the CLS token, share ``s = 1/(2L+1)`` per residual component.

    Returns (``B`` batch, ``L`` blocks, ``N`` tokens with the CLS token at 0, ``H`` heads, ``E`` embed dim):
    ``head_terms`` ``[B, L, N, H, E]``: ``P^T(γ⊙(c − s'μ)/σ + s'β)``, ``c = g⊙(α^{l,h}_{0,m} W_O^h v^{l,h}_m +
    b_O/(N·H))``, ``v`` with its bias, ``s' = s/(N·H)`` (clip_text_span's ``prs_hook`` rule exactly);
    ``attn_layer_terms`` ``[B, L, E]`` (= Σ over N, H of head_terms); ``shift_terms`` ``[B, L, E]``: the
    out-projection bias alone, ``P^T(γ⊙g⊙b_O/σ)`` — already inside head_terms, given for converting to the
    other references' rule (head_terms − shift_terms/(N·H)); ``mlp_terms`` ``[B, L, E]`` (share s);
    ``embed_term`` ``[B, E]`` (x_0[CLS], share s); ``proj_bias`` ``[B, E]`` (zeros: CLIP's proj has no bias);
    ``embedding`` ``[B, E]`` (``model.encode_image``). Asserted: Σ of all terms = embedding.
    """
    v = model.visual
    assert v.attn_pool is None and not v.final_ln_after_pool and v.pool_type == "tok", "CLS pooling only"
    pixels = pixels.to(torch.float64)
    with torch.no_grad():
        embedding = model.encode_image(pixels)
        p = F.conv2d(pixels, v.conv1.weight, v.conv1.bias, stride=v.conv1.stride)
        p = p.flatten(2).transpose(1, 2)  # [B, g·g, D], row-major grid
        cls = v.class_embedding.expand(p.shape[0], 1, -1)
        x0 = _ln(torch.cat([cls, p], dim=1) + v.positional_embedding, v.ln_pre)
        x, blocks = _run_blocks(x0, [_open_clip_block(b) for b in v.transformer.resblocks])
        ours = _ln(x[:, 0], v.ln_post) @ v.proj
        _check(ours, embedding, "own forward vs encode_image")
        return _decompose_cls(embedding, x0, x, blocks, v.ln_post, v.proj, None, paper_rule=True)


def _eva_embed(trunk, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm Eva's token embedding: patch conv (+bias) → [CLS; patches] + pos (pos covers CLS unless
    ``no_embed_class``) → ``norm_pre``; and the rope table (sin | cos) of the patch grid."""
    assert trunk.reg_token is None and not trunk.dynamic_img_size and trunk.patch_drop is None
    pe = trunk.patch_embed
    p = F.conv2d(pixels, pe.proj.weight, pe.proj.bias, stride=pe.proj.stride).flatten(2).transpose(1, 2)
    p = _ln(p, pe.norm)
    cls = [trunk.cls_token.expand(p.shape[0], 1, -1)] if trunk.cls_token is not None else []
    if trunk.no_embed_class:
        x = torch.cat(cls + [p + trunk.pos_embed], dim=1)
    else:
        x = torch.cat(cls + [p], dim=1) + trunk.pos_embed
    rope = trunk.rope.get_embed() if trunk.rope is not None else None
    assert rope is None or rope.ndim == 2, "per-depth ('mixed') rope tables are not covered"
    return _ln(x, trunk.norm_pre), rope


def reference_eva02(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """open_clip EVA02-CLIP (timm ``Eva`` trunk, ``timm_pool: token``, the trunk's ``head`` Linear as projection).

    Per block: ``a = g ⊙ (W_P LN_s(concat_h Σ_m α^h_{n,m} v^h_m) + b_P)``: rope acts on q and k of the patch
    tokens only (it changes α, never v); the sub-LN ``LN_s`` (``attn.norm``, over the concatenated heads) is
    frozen at each token's statistics; ``g`` the layer scale (none in EVA02-B-16). MLP: SwiGLU
    (``act(fc1_g h) ⊙ fc1_x h`` → LN → fc2), one lumped term per layer. Final: ``z = W_head LN(x_L[CLS]) + b_head``
    with LN frozen at the CLS token, share ``s = 1/(2L+1)`` per residual component.

    Returns: ``head_terms`` ``[B, L, N, H, E]``: ``W_head(γ⊙(t − s'μ)/σ + s'β)``, ``t = g ⊙ W_P^h(γ_s^h ⊙
    α^{l,h}_{CLS,m} v^{l,h}_m / σ_s)`` (v with its bias; k has none), ``s' = s/(N·H)``; ``shift_terms``
    ``[B, L, E]``: ``W_head(γ⊙u/σ)``, ``u = g ⊙ (W_P(β_s − γ_s μ_s/σ_s) + b_P)`` at the CLS row (no share);
    ``attn_layer_terms`` ``[B, L, E]`` = Σ_{N,H} head_terms + shift_terms (share s); ``mlp_terms`` ``[B, L, E]``;
    ``embed_term`` ``[B, E]`` (x_0[CLS] = CLS token + its position, share s); ``proj_bias`` ``[B, E]`` = b_head;
    ``embedding`` ``[B, E]`` (``model.encode_image``). Asserted: Σ of all terms = embedding.
    """
    trunk = model.visual.trunk
    assert trunk.global_pool == "token" and trunk.attn_pool is None and len(model.visual.head) == 0
    pixels = pixels.to(torch.float64)
    with torch.no_grad():
        embedding = model.encode_image(pixels)
        x0, rope = _eva_embed(trunk, pixels)
        x, blocks = _run_blocks(x0, [_eva_block(b, rope) for b in trunk.blocks])
        ours = _linear(_ln(_ln(x, trunk.norm)[:, 0], trunk.fc_norm), trunk.head)
        _check(ours, embedding, "own forward vs encode_image")
        assert isinstance(trunk.fc_norm, torch.nn.Identity)
        return _decompose_cls(embedding, x0, x, blocks, trunk.norm, trunk.head.weight.T, trunk.head.bias,
                              paper_rule=False)


# ------------------------------------------------------------------------------------------------ MAP heads


@dataclass
class _Probe:
    """An attention pool with one learned query: q (already projected, with its bias), key/value weights per
    pool head, out-projection, then ``out + mlp(norm(out))``; optional key padding mask."""

    q: torch.Tensor  # [Hp, dh]
    w_k: torch.Tensor  # [Hp, dh, D]
    b_k: torch.Tensor  # [Hp, dh]
    w_v: torch.Tensor  # [Hp, dh, D]
    b_v: torch.Tensor  # [Hp, dh]
    w_o: torch.Tensor  # [E, Hp, dh]
    b_o: torch.Tensor  # [E]
    scale: float
    norm: object
    mlp: object


def _probe_from_timm(pool) -> _Probe:
    """timm ``AttentionPoolLatent``: latent → ``q`` Linear; ``kv`` Linear rows (k | v); ``proj``; norm; mlp."""
    assert pool.latent.shape[1] == 1 and pool.pool == "token", "one latent query"
    assert pool.pos_embed is None and isinstance(pool.q_norm, torch.nn.Identity), "plain MAP head"
    hp, dh = pool.num_heads, pool.head_dim
    d = pool.kv.weight.shape[1]
    q = _linear(pool.latent[0, 0], pool.q).reshape(hp, dh)
    wk, wv = pool.kv.weight.chunk(2, dim=0)
    bk, bv = pool.kv.bias.chunk(2)
    e = pool.proj.weight.shape[0]
    return _Probe(q, wk.reshape(hp, dh, d), bk.reshape(hp, dh), wv.reshape(hp, dh, d), bv.reshape(hp, dh),
                  pool.proj.weight.reshape(e, hp, dh), pool.proj.bias, pool.scale, pool.norm, pool.mlp)


def _probe_from_hf(head) -> _Probe:
    """transformers ``Siglip(2)MultiheadAttentionPoolingHead``: ``probe`` through ``nn.MultiheadAttention``
    (packed ``in_proj_weight`` rows q | k | v, ``out_proj``), ``layernorm``, ``mlp``."""
    at = head.attention
    d, hp = at.embed_dim, at.num_heads
    dh = d // hp
    w, b = at.in_proj_weight, at.in_proj_bias
    q = (head.probe[0, 0] @ w[:d].T + b[:d]).reshape(hp, dh)
    return _Probe(q, w[d:2 * d].reshape(hp, dh, d), b[d:2 * d].reshape(hp, dh), w[2 * d:].reshape(hp, dh, d),
                  b[2 * d:].reshape(hp, dh), at.out_proj.weight.reshape(d, hp, dh), at.out_proj.bias, dh ** -0.5,
                  head.layernorm, head.mlp)


def _pool_token_terms(y: torch.Tensor, alpha: torch.Tensor, pr: _Probe) -> torch.Tensor:
    """``[B, Hp, N, E]``: α_{hp,n} · W_O^{hp} W_V^{hp} y_n (no value bias) for an LN-output component y [B, N, D]."""
    v = torch.einsum("bnd,hkd->bhnk", y, pr.w_v)
    return alpha[..., None] * torch.einsum("bhnk,ehk->bhne", v, pr.w_o)


def _decompose_map(embedding, x0, x, blocks, post_ln, pr: _Probe, proj, proj_bias, key_mask=None):
    """Split ``proj(out + mlp(norm(out)))``, ``out = Σ_hp W_O^{hp} Σ_n α_{hp,n}(W_V^{hp} LN(x_n) + b_V^{hp}) + b_O``,
    with the post-LN frozen per token and α frozen."""
    bsz, n, _ = x.shape
    mu, sd = _stats(x, post_ln.eps)  # [B, N, 1]
    y = _frozen(x, mu, sd, post_ln, 1.0)  # = LN(x)
    k = torch.einsum("bnd,hkd->bhnk", y, pr.w_k) + pr.b_k[None, :, None]
    scores = torch.einsum("bhnk,hk->bhn", k, pr.q) * pr.scale
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
    alpha = scores.softmax(-1)  # [B, Hp, N]
    pool_terms = _pool_token_terms(y, alpha, pr)
    value_bias = torch.einsum("ehk,hk->he", pr.w_o, pr.b_v).expand(bsz, -1, -1)  # [B, Hp, E]
    out_bias = pr.b_o.expand(bsz, -1)
    out = pool_terms.sum((1, 2)) + value_bias.sum(1) + out_bias
    mlp_term = _mlp(pr.mlp, _ln(out, pr.norm))
    if proj is None:
        proj = torch.eye(out.shape[-1], dtype=x.dtype)
    if proj_bias is None:
        proj_bias = torch.zeros(proj.shape[1], dtype=x.dtype)
    _check((out + mlp_term) @ proj + proj_bias, embedding, "own forward vs the source's embedding")

    def through(c: torch.Tensor, share: float) -> torch.Tensor:  # c [B, N, D] → [B, E]
        """Σ_hp W_O^{hp} W_V^{hp} Σ_n α_{hp,n} ỹ_n, ỹ = c through the frozen post-LN (= Σ of its pool terms)."""
        pooled = torch.einsum("bhn,bnd->bhd", alpha, _frozen(c, mu, sd, post_ln, share))
        return torch.einsum("bhd,hkd,ehk->be", pooled, pr.w_v, pr.w_o) @ proj

    n_layers = len(blocks)
    share = 1.0 / (2 * n_layers + 1)
    res = dict(
        embedding=embedding,
        pool_attn=alpha,
        pool_terms=pool_terms @ proj,
        pool_value_bias=value_bias @ proj,
        pool_out_bias=out_bias @ proj,
        mlp_term=mlp_term @ proj,
        proj_bias=proj_bias.expand(bsz, -1).clone(),
        embed_term=through(x0, share),
    )
    attn_l, mlp_l, head_l, bias_l = [], [], [], []
    for b in blocks:
        heads = b["heads"]  # [B, H, N, D]
        n_heads = heads.shape[1]
        attn_l.append(through(heads.sum(1) + b["shift"], share))
        head_l.append(torch.stack([through(heads[:, h], share / n_heads) for h in range(n_heads)], 1))
        bias_l.append(through(b["shift"], 0.0))
        mlp_l.append(through(b["mlp"], share))
    res.update(attn_layer_terms=torch.stack(attn_l, 1), mlp_layer_terms=torch.stack(mlp_l, 1),
               head_terms=torch.stack(head_l, 1), attn_bias_terms=torch.stack(bias_l, 1))
    res["layer_terms"] = torch.cat([res["embed_term"][:, None],
                                    res["attn_layer_terms"] + res["mlp_layer_terms"]], dim=1)
    res["constants"] = res["pool_value_bias"].sum(1) + res["pool_out_bias"] + res["proj_bias"]
    _check(res["pool_terms"].sum((1, 2)) + res["constants"] + res["mlp_term"], embedding, "pool terms sum")
    _check(res["layer_terms"].sum(1) + res["constants"] + res["mlp_term"], embedding, "layer terms sum")
    _check(res["head_terms"].sum(2) + res["attn_bias_terms"], res["attn_layer_terms"], "heads + bias = layer")
    return res


_MAP_DOC = """

    Returns (``B`` batch, ``Hp`` pool heads, ``N`` pooled tokens, ``L`` blocks, ``H`` heads, ``E`` output dim):
    ``pool_terms`` ``[B, Hp, N, E]``: ``α_{hp,n} W_O^{hp} W_V^{hp} LN(x_n)`` — the whole post-LN output of token
    n (its β and −γμ_n/σ_n parts included), no value bias; ``pool_attn`` ``[B, Hp, N]`` (α, frozen);
    ``pool_value_bias`` ``[B, Hp, E]`` (``W_O^{hp} b_V^{hp}``, Σ_n α = 1); ``pool_out_bias`` ``[B, E]`` (b_O);
    ``mlp_term`` ``[B, E]``: the lumped ``mlp(norm(out))``; ``embed_term`` ``[B, E]``; ``attn_layer_terms``,
    ``mlp_layer_terms`` ``[B, L, E]``: each residual component at every pooled token through the frozen
    per-token post-LN (share ``1/(2L+1)`` of each token's μ and β) and the frozen pool (α, W_V, W_O; no
    biases); ``layer_terms`` ``[B, L+1, E]``: index 0 the embeddings, then attn + mlp of each block;
    ``head_terms`` ``[B, L, H, E]``: each layer-head's output at every token (share ``1/((2L+1)·H)``);
    ``attn_bias_terms`` ``[B, L, E]``: each block's out-projection bias (layer-scaled; no share), so
    Σ_h head_terms + attn_bias_terms = attn_layer_terms; ``proj_bias`` ``[B, E]``; ``constants`` ``[B, E]`` =
    Σ_hp pool_value_bias + pool_out_bias + proj_bias; ``embedding`` ``[B, E]`` (the source's own).
    Asserted: Σ pool_terms + constants + mlp_term = embedding = Σ layer_terms + constants + mlp_term.
    """


def reference_siglip_open_clip(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """open_clip SigLIP / SigLIP 2 (``ViT-B-16-SigLIP``, ``ViT-B-16-SigLIP2``: timm ``VisionTransformer`` with
    ``global_pool='map'``, no class token, ``timm_proj: none``).

    Tower: patch conv + pos (no CLS) → blocks (fused qkv, exact GELU MLP) → ``norm`` (post-LN, every token) →
    ``attn_pool`` (``AttentionPoolLatent``: latent → q; k, v from every token; ``proj``; ``+ mlp(norm(·))``).
    """
    v = model.visual
    trunk = v.trunk
    assert trunk.attn_pool is not None and len(v.head) == 0 and isinstance(trunk.head, torch.nn.Identity)
    assert trunk.cls_token is None and trunk.reg_token is None and not trunk.dynamic_img_size
    pixels = pixels.to(torch.float64)
    with torch.no_grad():
        embedding = model.encode_image(pixels)
        pe = trunk.patch_embed
        p = F.conv2d(pixels, pe.proj.weight, pe.proj.bias, stride=pe.proj.stride).flatten(2).transpose(1, 2)
        x0 = _ln(_ln(p, pe.norm) + trunk.pos_embed, trunk.norm_pre)
        x, blocks = _run_blocks(x0, [_timm_vit_block(b) for b in trunk.blocks])
        assert isinstance(trunk.fc_norm, torch.nn.Identity)
        return _decompose_map(embedding, x0, x, blocks, trunk.norm, _probe_from_timm(trunk.attn_pool), None, None)


def reference_pe_core(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """open_clip PE-Core (``PE-Core-B-16``: timm ``vit_pe_core_base_patch16_224``, an ``Eva`` trunk).

    Tower: patch conv (no bias) → [CLS; patches] + pos → ``norm_pre`` → Eva blocks with ``AttentionRope``
    (fused qkv with bias, rope on the patch tokens' q and k) and a GELU MLP → ``norm`` (every token) →
    ``attn_pool`` (``AttentionPoolLatent``, 8 pool heads, over *all* tokens, the CLS token included) →
    ``head`` Linear with bias (open_clip ``timm_proj: null`` keeps the trunk's classifier as the projection).
    The pooled tokens are the whole sequence: ``N = 1 + patches``, the CLS token at index 0.
    """
    trunk = model.visual.trunk
    assert trunk.attn_pool is not None and len(model.visual.head) == 0
    pixels = pixels.to(torch.float64)
    with torch.no_grad():
        embedding = model.encode_image(pixels)
        x0, rope = _eva_embed(trunk, pixels)
        x, blocks = _run_blocks(x0, [_eva_block(b, rope) for b in trunk.blocks])
        assert isinstance(trunk.fc_norm, torch.nn.Identity)
        return _decompose_map(embedding, x0, x, blocks, trunk.norm, _probe_from_timm(trunk.attn_pool),
                              trunk.head.weight.T, trunk.head.bias)


def _hf_vision(model):
    """The vision tower of a ``Siglip(2)Model`` or a ``Siglip(2)VisionModel`` itself."""
    return model.vision_model if hasattr(model, "vision_model") else model


def _pooled(out) -> torch.Tensor:
    """transformers ≥ 5 returns a ``BaseModelOutputWithPooling`` from ``get_image_features``; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def reference_siglip_hf(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers ``SiglipModel`` / ``SiglipVisionModel`` at its native size (no position interpolation).

    Tower: patch conv + ``position_embedding`` → encoder layers (separate q/k/v/out projections) →
    ``post_layernorm`` → ``head`` (``probe`` query through ``nn.MultiheadAttention``, then
    ``+ mlp(layernorm(·))``). The embedding is ``get_image_features(...)`` (its ``pooler_output``) for a
    ``SiglipModel``, ``model(pixels).pooler_output`` for a ``SiglipVisionModel``.
    """
    vm = _hf_vision(model)
    pixels = pixels.to(torch.float64)
    with torch.no_grad():
        if hasattr(model, "get_image_features"):
            embedding = _pooled(model.get_image_features(pixel_values=pixels))
        else:
            embedding = model(pixel_values=pixels).pooler_output
        emb = vm.embeddings
        conv = emb.patch_embedding
        p = F.conv2d(pixels, conv.weight, conv.bias, stride=conv.stride).flatten(2).transpose(1, 2)
        assert p.shape[1] == emb.position_embedding.weight.shape[0], "native size only"
        x0 = p + emb.position_embedding.weight
        x, blocks = _run_blocks(x0, [_hf_block(layer) for layer in vm.encoder.layers])
        return _decompose_map(embedding, x0, x, blocks, vm.post_layernorm, _probe_from_hf(vm.head), None, None)


def siglip2_positions(vm, spatial_shapes: torch.Tensor, max_patches: int) -> torch.Tensor:
    """The NaFlex positional table per image, written from its definition: the ``G×G`` table resized to each
    image's (rows, cols) with bilinear, ``align_corners=False``, antialias; row-major; padding rows take the
    first position. ``[B, max_patches, D]``, float64 throughout (the source computes this in float32)."""
    table = vm.embeddings.position_embedding.weight
    g = int(math.isqrt(table.shape[0]))
    grid = table.reshape(g, g, -1).permute(2, 0, 1)[None]
    out = []
    for h, w in spatial_shapes.tolist():
        r = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        r = r[0].reshape(grid.shape[1], h * w).T
        out.append(torch.cat([r, r[:1].expand(max_patches - h * w, -1)]))
    return torch.stack(out)


def reference_siglip2_hf(model, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                         spatial_shapes: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers ``Siglip2Model`` / ``Siglip2VisionModel`` (NaFlex: variable resolution and aspect).

    Inputs as the processor makes them: ``pixel_values`` ``[B, P, 3·p·p]`` (patchified, padded to P),
    ``pixel_attention_mask`` ``[B, P]`` (1 = real patch), ``spatial_shapes`` ``[B, 2]`` (patch rows, cols).
    Tower: patch Linear + the positional table resized per image → encoder layers whose keys exclude padding →
    ``post_layernorm`` → the probe head with ``key_padding_mask``. The pooled tokens are all P slots; padding
    slots have α = 0, so their terms are exactly 0.

    The positional table used is the source's own resize (``resize_positional_embeddings``), which the source
    computes in float32 even in a float64 model: a float64 resize (:func:`siglip2_positions`) differs from it by
    ~1e-8 relative, which would break the 1e-10 forward check; the test compares the two separately.
    """
    vm = _hf_vision(model)
    pixel_values = pixel_values.to(torch.float64)
    mask = pixel_attention_mask.bool()
    with torch.no_grad():
        kw = dict(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                  spatial_shapes=spatial_shapes)
        if hasattr(model, "get_image_features"):
            embedding = _pooled(model.get_image_features(**kw))
        else:
            embedding = model(**kw).pooler_output
        emb = vm.embeddings
        g = int(math.isqrt(emb.position_embedding.weight.shape[0]))
        table = emb.position_embedding.weight.reshape(g, g, -1)
        pos = emb.resize_positional_embeddings(table, spatial_shapes, max_length=pixel_values.shape[1])
        x0 = _linear(pixel_values, emb.patch_embedding) + pos
        x, blocks = _run_blocks(x0, [_hf_block(layer) for layer in vm.encoder.layers], key_mask=mask)
        return _decompose_map(embedding, x0, x, blocks, vm.post_layernorm, _probe_from_hf(vm.head), None, None,
                              key_mask=mask)


for _f in (reference_siglip_open_clip, reference_pe_core, reference_siglip_hf, reference_siglip2_hf):
    _f.__doc__ += _MAP_DOC


# ---------------------------------------------------------------------------------------- ResNet attnpool


def reference_resnet(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """open_clip OpenAI ResNet CLIP (``RN50``, ``RN101``, ``RN50x4``): the ``AttentionPool2d`` split exactly.

    The convolutional trunk (stem, layer1–4: BatchNorm, ReLU after each residual add) is *not* decomposed: its
    output feature map ``f`` ``[B, C, h, w]`` is the pool's input in the source's own forward (a hook). The pool: tokens
    ``t = [mean_p f_p; f_1 … f_P] + pos`` (``pos`` ``[P+1, C]``, fixed to the model's input size: the source has
    no resampling), one query from the mean token ``q = W_q t_0 + b_q``; keys and values from all ``P+1``
    tokens (the mean token included); ``z = Σ_hp W_c^{hp} Σ_n α_{hp,n}(W_v^{hp} t_n + b_v^{hp}) + b_c``.

    Returns (``Hp`` pool heads = width·32/64, ``P = h·w`` positions, row-major like the source's flatten):
    ``pool_terms`` ``[B, Hp, P+1, E]``: ``α_{hp,n} W_c^{hp} W_v^{hp} t_n`` (no value bias), positions first in
    row-major order and **the mean token LAST** (index P; the source's sequence has it first);
    ``pool_attn`` ``[B, Hp, P+1]`` (same order); ``pool_value_bias`` ``[B, Hp, E]`` (``W_c^{hp} b_v^{hp}``);
    ``pool_out_bias`` ``[B, E]`` (b_c); ``constants`` ``[B, E]`` = Σ_hp pool_value_bias + pool_out_bias;
    ``grid`` ``[2]`` (h, w); ``embedding`` ``[B, E]`` (``model.encode_image``).
    Asserted: Σ pool_terms + constants = embedding.
    """
    v = model.visual
    ap = v.attnpool
    pixels = pixels.to(torch.float64)
    seen = []
    hook = ap.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            embedding = model.encode_image(pixels)
    finally:
        hook.remove()
    f = seen[0]  # the trunk's feature map in that same forward: not decomposed
    with torch.no_grad():
        bsz, c, h, w = f.shape
        spatial = f.flatten(2).transpose(1, 2)  # [B, P, C], row-major
        tokens = torch.cat([spatial.mean(1, keepdim=True), spatial], dim=1) + ap.positional_embedding  # mean first
        hp = ap.num_heads
        dh = c // hp
        q = _linear(tokens[:, 0], ap.q_proj).reshape(bsz, hp, dh)
        k = _linear(tokens, ap.k_proj).reshape(bsz, -1, hp, dh)
        scores = torch.einsum("bhk,bnhk->bhn", q, k) / math.sqrt(dh)
        alpha = scores.softmax(-1)  # [B, Hp, P+1], mean token at 0
        e = ap.c_proj.weight.shape[0]
        w_v = ap.v_proj.weight.reshape(hp, dh, c)
        w_c = ap.c_proj.weight.reshape(e, hp, dh)
        vals = torch.einsum("bnd,hkd->bhnk", tokens, w_v)  # no value bias
        terms = alpha[..., None] * torch.einsum("bhnk,ehk->bhne", vals, w_c)
        value_bias = torch.einsum("ehk,hk->he", w_c, ap.v_proj.bias.reshape(hp, dh)).expand(bsz, -1, -1)
        out_bias = ap.c_proj.bias.expand(bsz, -1)
        last = torch.cat([torch.arange(1, h * w + 1), torch.tensor([0])])  # the mean token moved last
        res = dict(embedding=embedding, pool_terms=terms[:, :, last], pool_attn=alpha[:, :, last],
                   pool_value_bias=value_bias.clone(), pool_out_bias=out_bias.clone(),
                   constants=value_bias.sum(1) + out_bias, grid=torch.tensor([h, w]))
        _check(res["pool_terms"].sum((1, 2)) + res["constants"], embedding, "pool terms sum to encode_image")
        return res
