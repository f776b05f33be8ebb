"""The EVA02-CLIP family: open_clip's ``EVA02-B-16``, ``EVA02-L-14``, … (a timm ``Eva`` trunk inside open_clip's
``TimmModel``), CLS pooling through the trunk's final ``norm`` and its ``head`` Linear (with bias).

What the blocks add to a CLIP ViT (each a :class:`~cliplens.core.view.BlockView` option):

* rotary embeddings on q and k of the patch tokens (:class:`cliplens.core.rope.Rotary`, the table read from the
  trunk's own ``rope`` module for each grid): they change the attention weights only;
* the sub-LayerNorm over the concatenated heads before the out-projection (``attn.norm``);
* the SwiGLU MLP (``act(fc1_g·h) ⊙ fc1_x·h`` → LayerNorm → ``fc2``), or timm's packed ``GluMlp``, or a plain MLP;
* layer scale (``gamma_1``/``gamma_2``) where present; ``k`` has no bias.

Decomposition: exact. The sub-LayerNorm's per-token statistics are frozen (like ``ln_post``'s), so each head's
term is ``W_O^h (γ_s^h ⊙ z^h / σ_s)`` (still split per source token through α), and the rest of that layer's
output, ``W_O (β_s − γ_s μ_s / σ_s) + b_O``, is one *shift* term per layer
(:meth:`cliplens.decomposition.Decomposition.shift_terms`); the SwiGLU MLP is one term per layer.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cliplens.errors import UnsupportedArchitectureError
from cliplens.models.families import TowerFamily, register_family

EXACT = ("exact: embedding term, each MLP (SwiGLU), each head × source token, and one sub-LayerNorm shift term "
         "per layer (CLS pooling, ln_post and the sub-LN frozen per token)")


def _trunk(model: Any) -> Any:
    visual = getattr(model, "visual", None)
    return getattr(visual, "trunk", None) if type(visual).__name__ == "TimmModel" else None


def _is_eva(model: Any) -> bool:
    """A timm ``Eva`` trunk (EVA02, PE-Core)."""
    return type(_trunk(model)).__name__ == "Eva"


def _ln(module: Any, what: str, name: str) -> Any:
    from cliplens.core.layers import LayerNormView

    if module is None or isinstance(module, nn.Identity):
        return None
    if not isinstance(module, nn.LayerNorm):
        raise UnsupportedArchitectureError(
            f"{name}: {what} is a {type(module).__name__}; cliplens reads LayerNorm EVA towers only.")
    return LayerNormView(module.weight, module.bias, float(module.eps),
                         compute_fp32=type(module).__name__ == "LayerNormFp32")


def _activation(module: Any, name: str) -> str:
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise UnsupportedArchitectureError(f"{name}: unsupported MLP activation {type(module).__name__} in the EVA tower")


def _mlp(mlp: Any, name: str) -> dict[str, Any]:
    """The MLP's fields of a BlockView (plain ``Mlp``, ``SwiGLU`` with separate gate/up, packed ``GluMlp``)."""
    kind = type(mlp).__name__
    out: dict[str, Any] = dict(fc2_weight=mlp.fc2.weight, fc2_bias=mlp.fc2.bias, activation=_activation(mlp.act, name),
                               mlp_norm=_ln(getattr(mlp, "norm", None), "the MLP norm", name))
    if kind == "SwiGLU":
        return dict(out, fc1_weight=mlp.fc1_x.weight, fc1_bias=mlp.fc1_x.bias, gate_weight=mlp.fc1_g.weight,
                    gate_bias=mlp.fc1_g.bias)
    if kind == "GluMlp":
        h = mlp.fc1.weight.shape[0] // 2
        w, b = mlp.fc1.weight, mlp.fc1.bias
        a_w, b_w = w[:h], w[h:]
        a_b, b_b = (None, None) if b is None else (b[:h], b[h:])
        if mlp.gate_last:  # a ⊙ act(b)
            return dict(out, fc1_weight=a_w, fc1_bias=a_b, gate_weight=b_w, gate_bias=b_b)
        return dict(out, fc1_weight=b_w, fc1_bias=b_b, gate_weight=a_w, gate_bias=a_b)
    if kind == "Mlp":
        return dict(out, fc1_weight=mlp.fc1.weight, fc1_bias=mlp.fc1.bias)
    raise UnsupportedArchitectureError(f"{name}: the EVA tower's MLP is a {kind}; cliplens reads Mlp, SwiGLU and "
                                       "GluMlp.")


def _block(blk: Any, index: int, rope: Any, name: str) -> Any:
    from cliplens.core.view import BlockView

    if type(blk).__name__ != "EvaBlock":
        raise UnsupportedArchitectureError(
            f"{name}: block {index} is a {type(blk).__name__}; cliplens reads pre-norm EvaBlock towers only.")
    at = blk.attn
    if not (isinstance(at.q_norm, nn.Identity) and isinstance(at.k_norm, nn.Identity)):
        raise UnsupportedArchitectureError(f"{name}: q/k normalisation in block {index} is not supported")
    if getattr(at, "gate", None) is not None or getattr(at, "num_kv_groups", 1) != 1:
        raise UnsupportedArchitectureError(f"{name}: gated or grouped-query attention in block {index} is not supported")
    d = at.proj.weight.shape[1]
    qkv_w = qkv_b = None
    if at.qkv is not None:
        qkv_w = at.qkv.weight
        wq, wk, wv = qkv_w[:d], qkv_w[d:2 * d], qkv_w[2 * d:]
        if getattr(at, "q_bias", None) is not None:  # EvaAttention, fused: k_bias is a zero buffer
            bq, bk, bv = at.q_bias, None, at.v_bias
        elif at.qkv.bias is not None:  # AttentionRope (PE)
            qkv_b = at.qkv.bias
            bq, bk, bv = qkv_b[:d], qkv_b[d:2 * d], qkv_b[2 * d:]
        else:
            bq = bk = bv = None
        if qkv_b is None and bq is not None:
            qkv_w = None  # k without bias: separate projections
    else:
        wq, bq = at.q_proj.weight, at.q_proj.bias
        wk, bk = at.k_proj.weight, at.k_proj.bias
        wv, bv = at.v_proj.weight, at.v_proj.bias
    if getattr(at, "rotate_half", False) != (rope is not None and rope.half):
        rope = None if rope is None else type(rope)(rope.table, rope.prefix, bool(at.rotate_half), rope.describe)
    if rope is not None and at.num_prefix_tokens != rope.prefix:
        rope = type(rope)(rope.table, int(at.num_prefix_tokens), rope.half, rope.describe)
    return BlockView(
        ln_1=_ln(blk.norm1, "norm1", name), q_weight=wq, k_weight=wk, v_weight=wv, q_bias=bq, k_bias=bk, v_bias=bv,
        out_weight=at.proj.weight, out_bias=at.proj.bias, ln_2=_ln(blk.norm2, "norm2", name),
        num_heads=int(at.num_heads), ls_1=blk.gamma_1, ls_2=blk.gamma_2, qkv_weight=qkv_w, qkv_bias=qkv_b,
        rope=rope, attn_norm=_ln(at.norm, "the attention sub-LayerNorm", name), **_mlp(blk.mlp, name))


def _rotary(trunk: Any, name: str) -> Any:
    """The trunk's rotary embedding as a :class:`~cliplens.core.rope.Rotary` (its own table for each grid)."""
    from cliplens.core.rope import Rotary

    rope = trunk.rope
    if rope is None:
        return None
    if getattr(trunk, "rope_mixed", False) or type(rope).__name__ != "RotaryEmbeddingCat":
        raise UnsupportedArchitectureError(f"{name}: rotary embedding {type(rope).__name__} (per-depth or mixed "
                                           "tables) is not supported; EVA02's RotaryEmbeddingCat is.")
    native = tuple(int(g) for g in trunk.patch_embed.grid_size)

    def table(grid: tuple[int, int]) -> Tensor:
        """The source's table for ``grid``: its cached one at the native grid; for another grid, built from its
        frequency bands by its own rule (what timm's ``set_input_size`` caches for that grid)."""
        if tuple(grid) == native:
            return rope.get_embed()
        if not getattr(rope, "_use_cached_embed", False):
            return rope.get_embed(shape=list(grid))
        build, bands = getattr(rope, "_build_embed_cat", None), getattr(rope, "bands", None)
        if build is None or bands is None:
            from cliplens.errors import InvalidInputError

            raise InvalidInputError(f"{name} keeps its rotary table for the {native[0]}×{native[1]} patch grid only; "
                                    f"give images of its native size ({trunk.patch_embed.img_size}).")
        cached = getattr(rope, "pos_embed", None)
        return build(list(grid), bands, dtype=None if cached is None else cached.dtype)

    describe = f"{type(rope).__name__}:{getattr(rope, 'ref_feat_shape', None)}:{getattr(rope, 'grid_offset', None)}"
    return Rotary(table=table, prefix=int(trunk.num_prefix_tokens), half=False, describe=describe)


def trunk_view(trunk: Any, name: str, head: Any) -> Any:
    """A :class:`~cliplens.core.view.VisionView` over a timm ``Eva`` trunk's embedding and blocks (no copies),
    pooled by ``head`` (:mod:`cliplens.core.heads`)."""
    from cliplens.core.view import VisionView

    if trunk.reg_token is not None or trunk.cls_token is None or trunk.no_embed_class:
        raise UnsupportedArchitectureError(f"{name}: register tokens, no CLS token or a position table without it "
                                           "are not supported")
    if trunk.patch_drop is not None or getattr(trunk, "dynamic_img_size", False):
        raise UnsupportedArchitectureError(f"{name}: patch dropout or dynamic image sizes are not supported")
    pe = trunk.patch_embed
    if not isinstance(pe.norm, nn.Identity):
        raise UnsupportedArchitectureError(f"{name}: a norm after the patch embedding is not supported")
    rope = _rotary(trunk, name)
    blocks = tuple(_block(b, i, rope, name) for i, b in enumerate(trunk.blocks))
    return VisionView(
        patch_weight=pe.proj.weight, patch_bias=pe.proj.bias, class_embedding=trunk.cls_token.reshape(-1),
        positional_embedding=trunk.pos_embed[0], ln_pre=_ln(trunk.norm_pre, "norm_pre", name), blocks=blocks,
        ln_post=None, proj=None, image_size=tuple(int(s) for s in pe.img_size),  # type: ignore[arg-type]
        source=f"open_clip:{name} (timm Eva)", head=head,
    )


def vision_view_from_eva(model: Any, name: str = "") -> Any:
    """A :class:`~cliplens.core.view.VisionView` over an open_clip EVA model's timm ``Eva`` trunk (no copies),
    pooled at the CLS token through the trunk's ``norm`` and ``head`` Linear."""
    from cliplens.core.heads import ClsHead

    name = name or "this EVA model"
    trunk = _trunk(model)
    head = model.visual.head
    if trunk.attn_pool is not None:
        return _pe_core_view(model, trunk, name)
    if len(head):
        raise UnsupportedArchitectureError(f"{name}: open_clip adds a projection after the timm trunk ({head}); "
                                           "cliplens reads EVA towers whose trunk's own head is the projection.")
    if trunk.global_pool != "token" or not isinstance(trunk.fc_norm, nn.Identity):
        raise UnsupportedArchitectureError(f"{name}: pooling {trunk.global_pool!r}; cliplens reads EVA towers pooled "
                                           "at the CLS token (norm, then the head Linear).")
    if not isinstance(trunk.head, nn.Linear):
        raise UnsupportedArchitectureError(f"{name}: the trunk has no head Linear (the projection to the joint space)")
    norm = _ln(trunk.norm, "the final norm", name)
    if norm is None:
        raise UnsupportedArchitectureError(f"{name}: an EVA tower without a final norm is not supported")
    return trunk_view(trunk, name, ClsHead(norm, trunk.head.weight.t(), trunk.head.bias))


def _pe_core_view(model: Any, trunk: Any, name: str) -> Any:
    """PE-Core: the Eva trunk's tokens through ``norm`` (every token), attention pooling with a learned probe over
    all of them (the CLS token included), then the trunk's head Linear: a :class:`MapHead` with that Linear as its
    projection."""
    from cliplens.models.siglip import timm_map_head

    if len(model.visual.head):
        raise UnsupportedArchitectureError(f"{name}: open_clip adds a projection after the timm trunk "
                                           f"({model.visual.head}); cliplens reads PE-Core with the trunk's own head")
    if not isinstance(trunk.fc_norm, nn.Identity) or not isinstance(trunk.head, nn.Linear):
        raise UnsupportedArchitectureError(f"{name}: PE-Core without its head Linear (or with an fc_norm) is not "
                                           "supported")
    head = timm_map_head(trunk.attn_pool, trunk.norm, name, proj=trunk.head)
    return trunk_view(trunk, name, head)


def _open_clip_config(cfg: dict[str, Any]) -> str | None:
    """EVA configs of open_clip (``timm_model_name`` ``eva02_*``: CLS-pooled; ``vit_pe_core_*``: PE-Core)."""
    v = cfg.get("vision_cfg", {})
    timm_name = str(v.get("timm_model_name") or "")
    if timm_name.startswith("vit_pe_core"):
        return "PE-Core (rope; attention pooling with a learned probe, then the head Linear)"
    if not timm_name.startswith("eva02_"):
        return None
    if v.get("timm_pool", "token") != "token" or v.get("timm_proj"):
        raise UnsupportedArchitectureError(f"timm_pool={v.get('timm_pool')!r}, timm_proj={v.get('timm_proj')!r}: "
                                           "cliplens reads EVA towers pooled at the CLS token with the trunk's head")
    return "EVA02 (rope, SwiGLU, sub-LN: one shift term per layer)"


register_family(TowerFamily(name="eva02", summary="EVA02-CLIP: timm Eva trunk pooled at the CLS token (open_clip)",
                            library="open_clip", matches=_is_eva, build=vision_view_from_eva,
                            config=_open_clip_config, exact=EXACT))
