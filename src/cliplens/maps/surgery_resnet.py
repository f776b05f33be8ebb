"""CLIP Surgery's ResNet variant (Li et al., "A Closer Look at the Explainability of Contrastive Language-Image
Pre-training", arXiv 2304.05653): architecture surgery in OpenAI's ``AttentionPool2d``, the ResNet's only attention.

Written from the paper. The pool reads ``t_0 … t_P`` (the mean token first, then the positions, each plus its
positional embedding; :mod:`cliplens.core.heads.attnpool`). The surgical path replaces the mean-token query by
v-v self-attention over all tokens, with L2-normalised values and a larger scale, per pool head ``h``:

    v_n = W_v^h t_n + b_v^h,   v̂_n = v_n / (‖v_n‖₂ + 10⁻⁶),
    A[n, m] = softmax_m(8 · d^-½ · v̂_n · v̂_m),   o_n = W_c · concat_h(Σ_m A[n, m] v_m) + b_c.

Tokens: index 0 is the model's own embedding (the original q-k pool of the mean token: the "original path"),
tokens 1… are ``o_n`` of the positions. Feature surgery then runs on them as for ViTs (:mod:`cliplens.maps.surgery`).
Other input sizes resize the positional table bilinearly, as the original does, without writing it back.

**The released code deviates** (github.com/xmed-lab/CLIP_Surgery, commit d4696d47f49cfe70f49140afe5eb94f94c5f59bc,
``clip/clip_surgery_model.py``, ``AttentionPool2d.forward`` and ``Attention``): it builds ``Attention(...)`` without
``settings='resnet'``, so the branch with the L2 normalisation and the ×8 scale never runs — the released maps use
plain ``softmax(d^-½ · v vᵀ) v``; and because it copies ``v_proj`` into q, k and v, its "original path" is v-v
attention too, so its token 0 is not the model's embedding. ``variant="released"`` reproduces that behaviour
(without its other bug: it writes the resized positional table back into the model).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.heads import AttnPoolHead
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError

__all__ = ["RESNET_VARIANTS", "resnet_surgery_tokens", "vv_pool"]

#: ``paper``: L2-normalised values, scale 8/√d, token 0 the model's embedding; ``released``: the authors' code
RESNET_VARIANTS = ("paper", "released")


def vv_pool(head: AttnPoolHead, x: Tensor, *, normalize: bool = True, factor: float = 8.0) -> Tensor:
    """``[B, N, E]``: every token of the pool's input ``x`` ``[B, N, C]`` through v-v attention in the pool (values
    L2-normalised for the attention weights when ``normalize``; scale ``factor · d^-½``) and ``c_proj``."""
    v = head.values(x)  # [B, Hp, N, d]
    half = v.dtype in (torch.float16, torch.bfloat16)
    w = v.float() if half else v
    if normalize:
        w = w / (w.norm(dim=-1, keepdim=True) + 1e-6)
    attn = (torch.matmul(w, w.transpose(-1, -2)) * (factor * head.head_dim ** -0.5)).softmax(-1).to(v.dtype)
    o = torch.matmul(attn, v)  # [B, Hp, N, d]
    return head.project_heads(o.transpose(1, 2))  # [B, N, E]


@torch.no_grad()
def resnet_surgery_tokens(model: ImageTextModel, pixels: Tensor, *, positional: str = "bilinear",
                          variant: str = "paper") -> tuple[Tensor, tuple[int, int]]:
    """``([B, N, E], grid)``: CLIP Surgery's tokens of a ResNet CLIP (see the module docs), the mean token first."""
    if variant not in RESNET_VARIANTS:
        raise InvalidInputError(f"CLIP Surgery's ResNet variant must be one of {', '.join(RESNET_VARIANTS)}; "
                                f"got {variant!r}")
    head = model.vision.head
    if not isinstance(head, AttnPoolHead):
        raise InvalidInputError(f"CLIP Surgery's ResNet variant needs an attention pool (AttentionPool2d); this "
                                f"model pools with {head.kind!r}")
    out = model.run(pixels, plan=Plan(positional=positional), names=["final"])
    x = out["final"]  # the pool's input, mean token first
    if variant == "released":
        return vv_pool(head, x, normalize=False, factor=1.0), out.grid
    tokens = vv_pool(head, x)
    return torch.cat([out.embedding[:, None].to(tokens.dtype), tokens[:, 1:]], 1), out.grid
