"""The SigLIP / SigLIP 2 family: no CLS token; ``post_layernorm`` on every token, then the MAP head (a learned
probe attending over all tokens, out-projection, ``+ MLP(LN(·))``), as open_clip builds it (a timm
``VisionTransformer`` trunk with ``global_pool='map'`` inside ``TimmModel``: ``ViT-B-16-SigLIP``,
``ViT-B-16-SigLIP2``, ``ViT-SO400M-14-SigLIP``, …) and as transformers does (``SiglipModel``,
``SiglipVisionModel``, ``Siglip2Model``, ``Siglip2VisionModel``).

Decomposition (:class:`cliplens.core.heads.MapHead`): the attention part is exact per pooling head × source
token (``Decomposition.pool_terms``) and, through the per-token ``post_layernorm`` frozen at each token's
statistics, per source layer (``Decomposition.source_layer_terms``) and per layer × head × token; the MAP MLP
is one lumped term (``Decomposition.nonlinear_term``). There is no token output in the sources (the MAP head
pools): a token's *dense* output is the probe's attention restricted to that one token (MapHead's rule).

Tokenizers: the source's own. open_clip's SigLIP names use a Hugging Face tokenizer (SentencePiece) fetched from
the Hub (``timm/ViT-B-16-SigLIP``): when it cannot be had (offline, not cached) the model still loads and
images work; text raises one paragraph naming ``tokenizer=`` (``cliplens.load(..., tokenizer=...)``,
``cliplens.wrap(model, tokenizer=...)`` or ``adapter.tokenizer = ...``: open_clip's ``HFTokenizer(folder,
context_length=64, clean='canonicalize')`` or any callable texts -> ``LongTensor [batch, context]``); it is
never replaced by CLIP's BPE. Text is always padded to the full context (SigLIP's towers are bidirectional
and pooled at the last position; they are never cut short). Scores: ``sigmoid(logit_scale · cos +
logit_bias)`` (``adapter.score_kind``, :func:`cliplens.text.zeroshot.probabilities`).

Activations: timm's SigLIP blocks and MAP MLP use the *exact* GELU (``nn.GELU()``; SigLIP 2 configs set
``approximate='tanh'`` for the text tower only); transformers' use ``gelu_pytorch_tanh``. Both are read from
the modules, never assumed.

SigLIP 2 in transformers (``Siglip2*``, NaFlex) takes patchified pixels with a per-image positional resize
and a key padding mask. cliplens reads it as ``[B, 3, H, W]`` images, its patch ``Linear`` as the equivalent
convolution, at any grid: the positional table is resized as ``Siglip2VisionEmbeddings`` does (bilinear,
antialiased, in float32: the view's ``positional`` rule). By default images are resized to the table's own grid
(``√num_patches`` per side, 16×16 = 256 px for the released B/16), so that they batch; with
``HFCLIPAdapter.naflex`` (``naflex=True`` in ``cliplens.load``) each keeps its aspect ratio as the model's own
processor resizes it and runs at its own grid, unpadded — equal to the source's padded, masked batch, since
masked keys take no part in attention. Images of different shapes are then run one at a time. (The source's own
NaFlex forward on whole images, for parity, and the processors are in :mod:`cliplens.models.hf`.)
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from cliplens.core.heads import MapHead
from cliplens.core.layers import LayerNormView
from cliplens.core.view import BlockView, VisionView
from cliplens.errors import UnsupportedArchitectureError
from cliplens.models.families import TowerFamily, register_family
from cliplens.models.hf import HF_ACTIVATIONS, block_views

EXACT = ("exact: pooled attention per pool head × source token, per source layer and layer × head × token "
         "through the frozen per-token post-LayerNorm; the MAP head's MLP is one lumped term")


#: SigLIP's text towers: pooled at the last position of a max-length padded sequence (never cut short)
SCORE_KIND = "sigmoid"


def _unsupported(name: str, what: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"{name or 'this SigLIP model'}: {what}. cliplens reads SigLIP towers as open_clip (timm "
        "VisionTransformer, global_pool='map', timm_proj none) and transformers (Siglip/Siglip2 models) build them.")


def _ln(module: Any, where: str, name: str) -> LayerNormView | None:
    if module is None or isinstance(module, nn.Identity):
        return None
    if not isinstance(module, nn.LayerNorm):
        raise _unsupported(name, f"{where} is a {type(module).__name__}, not a LayerNorm")
    return LayerNormView(module.weight, module.bias, float(module.eps))


def _required_ln(module: Any, where: str, name: str) -> LayerNormView:
    ln = _ln(module, where, name)
    if ln is None:
        raise _unsupported(name, f"{where} is missing")
    return ln


def _activation(module: Any, where: str, name: str) -> str:
    """The activation name of an activation module (torch's, timm's or transformers' GELU variants)."""
    kind = type(module).__name__
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if kind in ("GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "GELUTanhApprox"):
        return "gelu_tanh"
    if kind in ("GELU", "GELUActivation"):  # timm's / transformers' exact GELU modules
        return "gelu_tanh" if getattr(module, "approximate", "none") == "tanh" else "gelu"
    if kind == "QuickGELU" or kind == "QuickGELUActivation":
        return "quick_gelu"
    raise _unsupported(name, f"{where} uses the activation {kind}")


def _check_scale(scale: Any, head_dim: int, where: str, name: str) -> None:
    if scale is not None and not math.isclose(float(scale), head_dim ** -0.5, rel_tol=1e-6):
        raise _unsupported(name, f"{where} scales attention by {float(scale):g}, not 1/√d_head")


# ---- open_clip (timm trunk) --------------------------------------------------------------------------------


def _is_open_clip_siglip(model: Any) -> bool:
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    return (type(visual).__name__ == "TimmModel" and type(trunk).__name__ == "VisionTransformer"
            and getattr(trunk, "global_pool", None) == "map")


def _timm_block(block: nn.Module, index: int, name: str) -> BlockView:
    where = f"block {index}"
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or type(mlp).__name__ != "Mlp":
        raise _unsupported(name, f"{where} is a {type(block).__name__} ({type(attn).__name__}, "
                                 f"{type(mlp).__name__}), not timm's Block with Attention and Mlp")
    for part in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(attn, part, nn.Identity()), nn.Identity):
            raise _unsupported(name, f"{where} has attention {part} ({type(getattr(attn, part)).__name__})")
    if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
        raise _unsupported(name, f"{where} has an MLP norm")
    if getattr(attn, "num_kv_groups", 1) != 1 or getattr(attn, "gate", None) is not None:
        raise _unsupported(name, f"{where} has grouped or gated attention")
    d = attn.proj.weight.shape[0]
    _check_scale(getattr(attn, "scale", None), d // attn.num_heads, where, name)
    w, b = attn.qkv.weight, attn.qkv.bias

    def gamma(ls: nn.Module) -> Tensor | None:
        if isinstance(ls, nn.Identity):
            return None
        g = getattr(ls, "gamma", None)
        if g is None:
            raise _unsupported(name, f"{where} has a layer scale of kind {type(ls).__name__}")
        return g

    return BlockView(
        ln_1=_required_ln(block.norm1, f"{where} norm1", name),
        q_weight=w[:d], k_weight=w[d:2 * d], v_weight=w[2 * d:],
        q_bias=None if b is None else b[:d], k_bias=None if b is None else b[d:2 * d],
        v_bias=None if b is None else b[2 * d:],
        out_weight=attn.proj.weight, out_bias=attn.proj.bias,
        ln_2=_required_ln(block.norm2, f"{where} norm2", name),
        fc1_weight=mlp.fc1.weight, fc1_bias=mlp.fc1.bias, fc2_weight=mlp.fc2.weight, fc2_bias=mlp.fc2.bias,
        num_heads=int(attn.num_heads), activation=_activation(mlp.act, f"{where} MLP", name),
        ls_1=gamma(block.ls1), ls_2=gamma(block.ls2), qkv_weight=w, qkv_bias=b,
    )


def timm_map_head(pool: nn.Module, norm: nn.Module, name: str, proj: nn.Linear | None = None) -> MapHead:
    """``trunk.norm`` (every token) + timm's ``AttentionPoolLatent`` as a :class:`MapHead` (``proj``: a Linear
    after it, PE-Core's head)."""
    if type(pool).__name__ != "AttentionPoolLatent":
        raise _unsupported(name, f"the attention pool is a {type(pool).__name__}")
    if getattr(pool, "latent_len", 1) != 1 or getattr(pool, "pool", "token") != "token":
        raise _unsupported(name, "the attention pool has several latent queries")
    if getattr(pool, "pos_embed", None) is not None:
        raise _unsupported(name, "the attention pool adds its own positional embedding")
    if not (isinstance(pool.q_norm, nn.Identity) and isinstance(pool.k_norm, nn.Identity)):
        raise _unsupported(name, "the attention pool normalises q and k")
    if getattr(pool, "mlp", None) is None or not isinstance(pool.q, nn.Linear) or not isinstance(pool.proj, nn.Linear):
        raise _unsupported(name, "the attention pool has no q projection, out-projection or MLP")
    if not isinstance(pool.mlp.norm, nn.Identity):
        raise _unsupported(name, "the attention pool's MLP has a norm")
    d = pool.kv.weight.shape[0] // 2
    _check_scale(getattr(pool, "scale", None), d // pool.num_heads, "the attention pool", name)
    kw, kb = pool.kv.weight, pool.kv.bias
    return MapHead(
        norm=_required_ln(norm, "the trunk's final norm", name), probe=pool.latent,
        q_weight=pool.q.weight, q_bias=pool.q.bias,
        k_weight=kw[:d], k_bias=None if kb is None else kb[:d], v_weight=kw[d:], v_bias=None if kb is None else kb[d:],
        out_weight=pool.proj.weight, out_bias=pool.proj.bias, num_heads=int(pool.num_heads),
        mlp_norm=_required_ln(pool.norm, "the attention pool's norm", name),
        fc1_weight=pool.mlp.fc1.weight, fc1_bias=pool.mlp.fc1.bias,
        fc2_weight=pool.mlp.fc2.weight, fc2_bias=pool.mlp.fc2.bias,
        activation=_activation(pool.mlp.act, "the attention pool's MLP", name),
        proj_weight=None if proj is None else proj.weight, proj_bias=None if proj is None else proj.bias,
    )


def vision_view_from_open_clip(model: nn.Module, name: str = "") -> VisionView:
    """A :class:`VisionView` over an open_clip SigLIP image tower (``TimmModel`` with a timm ViT trunk pooled by
    ``AttentionPoolLatent``; no copies)."""
    visual = model.visual
    trunk = visual.trunk
    head = getattr(visual, "head", None)
    if head is not None and any(isinstance(m, nn.Linear) for m in head.modules()):
        raise _unsupported(name, "open_clip adds a projection after the timm trunk (timm_proj); SigLIP configs "
                                 "have timm_proj none")
    if not isinstance(getattr(trunk, "head", nn.Identity()), nn.Identity):
        raise _unsupported(name, "the timm trunk keeps a classifier head")
    if getattr(trunk, "cls_token", None) is not None or getattr(trunk, "reg_token", None) is not None:
        raise _unsupported(name, "the trunk has a class or register token (SigLIP towers have none)")
    if getattr(trunk, "dynamic_img_size", False):
        raise _unsupported(name, "the trunk resizes positions dynamically")
    if not isinstance(getattr(trunk, "fc_norm", nn.Identity()), nn.Identity):
        raise _unsupported(name, "the trunk has an fc_norm after pooling")
    pe = trunk.patch_embed
    if not isinstance(getattr(pe, "norm", nn.Identity()), nn.Identity) or not isinstance(pe.proj, nn.Conv2d):
        raise _unsupported(name, "the patch embedding is not a plain convolution")
    blocks = tuple(_timm_block(b, i, name) for i, b in enumerate(trunk.blocks))
    return VisionView(
        patch_weight=pe.proj.weight, patch_bias=pe.proj.bias, class_embedding=None,
        positional_embedding=trunk.pos_embed[0], ln_pre=_ln(trunk.norm_pre, "norm_pre", name), blocks=blocks,
        ln_post=None, proj=None, image_size=tuple(int(s) for s in pe.img_size),  # type: ignore[arg-type]
        source=f"open_clip:{name}", head=timm_map_head(trunk.attn_pool, trunk.norm, name),
    )


def open_clip_config(cfg: dict[str, Any]) -> str | None:
    """The family's note for an open_clip config (``None``: not a SigLIP-style timm tower)."""
    v = cfg.get("vision_cfg", {}) or {}
    timm_name = str(v.get("timm_model_name") or "")
    if "siglip" not in timm_name or v.get("timm_pool") != "map":  # timm's SigLIP ViTs (PE-Core is an Eva trunk)
        return None
    if v.get("timm_proj") not in (None, "none"):
        raise UnsupportedArchitectureError(f"timm tower {timm_name} with a projection after the MAP head "
                                           f"(timm_proj={v['timm_proj']!r})")
    notes = [f"SigLIP MAP head (timm {timm_name}): exact per pool head × token; the MAP MLP lumped"]
    if cfg.get("init_logit_bias") is not None:
        notes.append("sigmoid scores")
    t = cfg.get("text_cfg", {}) or {}
    if t.get("hf_tokenizer_name"):
        notes.append(f"tokenizer {t['hf_tokenizer_name']} from the Hub (or pass tokenizer=)")
    return ", ".join(notes)


# ---- transformers ----------------------------------------------------------------------------------------------

HF_TYPES = ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model")


def hf_tower(model: Any) -> Any:
    """The vision transformer of a ``Siglip(2)Model`` (``vision_model``) or of a ``Siglip(2)VisionModel``."""
    vm = getattr(model, "vision_model", None)
    return model if vm is None else vm


def _is_hf_siglip(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in HF_TYPES


def _hf_map_head(vm: Any, act: str, name: str) -> MapHead:
    head = getattr(vm, "head", None)
    if head is None:
        raise _unsupported(name, "the vision model has no pooling head (vision_use_head=False)")
    attn = head.attention
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise _unsupported(name, "the pooling head's attention is not nn.MultiheadAttention with a packed in-projection")
    d = attn.embed_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias
    return MapHead(
        norm=_required_ln(vm.post_layernorm, "post_layernorm", name), probe=head.probe,
        q_weight=w[:d], q_bias=None if b is None else b[:d], k_weight=w[d:2 * d],
        k_bias=None if b is None else b[d:2 * d], v_weight=w[2 * d:], v_bias=None if b is None else b[2 * d:],
        out_weight=attn.out_proj.weight, out_bias=attn.out_proj.bias, num_heads=int(attn.num_heads),
        mlp_norm=_required_ln(head.layernorm, "the pooling head's layernorm", name),
        fc1_weight=head.mlp.fc1.weight, fc1_bias=head.mlp.fc1.bias,
        fc2_weight=head.mlp.fc2.weight, fc2_bias=head.mlp.fc2.bias, activation=act,
    )


def siglip2_grid(vm: Any) -> int:
    """The side of a Siglip2 positional table (``√num_patches``)."""
    return int(vm.embeddings.position_embedding_size)


def vision_view_from_hf(model: nn.Module, name: str = "") -> VisionView:
    """A :class:`VisionView` over a transformers SigLIP / SigLIP 2 image tower (no copies; SigLIP 2 at its fixed
    native grid, its patch ``Linear`` read as a convolution)."""
    vm = hf_tower(model)
    vcfg = getattr(model.config, "vision_config", None) or model.config
    emb = vm.embeddings
    patch = emb.patch_embedding
    p = int(vcfg.patch_size)
    positional = "bicubic"  # SiglipVisionEmbeddings.interpolate_pos_encoding
    if isinstance(patch, nn.Conv2d):
        weight = patch.weight
        image_size = (int(vcfg.image_size), int(vcfg.image_size))
    elif isinstance(patch, nn.Linear):  # Siglip2: features of a patch in (row, column, channel) order
        c = patch.weight.shape[1] // (p * p)
        weight = patch.weight.view(-1, p, p, c).permute(0, 3, 1, 2)
        g = siglip2_grid(vm)
        image_size = (g * p, g * p)
        positional = "bilinear_antialias"  # Siglip2VisionEmbeddings.resize_positional_embeddings, every grid
    else:
        raise _unsupported(name, f"the patch embedding is a {type(patch).__name__}")
    act = HF_ACTIVATIONS.get(getattr(vcfg, "hidden_act", None))
    if act is None:
        raise _unsupported(name, f"hidden_act={getattr(vcfg, 'hidden_act', None)!r}")
    return VisionView(
        patch_weight=weight, patch_bias=patch.bias, class_embedding=None,
        positional_embedding=emb.position_embedding.weight, ln_pre=None,
        blocks=block_views(vm.encoder.layers, vcfg, name), ln_post=None, proj=None, image_size=image_size,
        source=f"transformers:{name}", head=_hf_map_head(vm, act, name), positional=positional,
    )


register_family(TowerFamily(
    name="siglip", summary="SigLIP / SigLIP 2 (timm ViT with a MAP head inside open_clip), no CLS token",
    library="open_clip", matches=_is_open_clip_siglip, build=vision_view_from_open_clip, config=open_clip_config,
    exact=EXACT))
register_family(TowerFamily(
    name="siglip", summary="SigLIP / SigLIP 2 (SiglipModel, Siglip2Model at its native grid), MAP head",
    library="transformers", matches=_is_hf_siglip, build=vision_view_from_hf, exact=EXACT))
