"""Chefer et al. (ICCV 2021), "Generic Attention-model Explainability", as their CLIP notebook applies it.

For the score ``y = logit_scale · cos(embedding, t)``: per block ``l ≥ start_layer``,
``Ē_l = mean_h ReLU(∂y/∂A_l ⊙ A_l)`` (``A_l`` the attention probabilities); ``R = I``, then for each of these
blocks in order ``R ← R + Ē_l R``; the map is ``R[CLS, patches]``. ``start_layer=0`` (every layer) is the
paper's rule and the default; the current CLIP notebook uses only the last layer (``start_layer=-1``).

How it is computed, with the same result:

* Each head's output is ``z = A v`` and ``A`` is used for nothing else, so ``∂y/∂A = (∂y/∂z) vᵀ``. The forward
  and backward therefore run the fused attention kernel, differentiating with respect to ``attn.z``; ``A_l``
  and ``∂y/∂A_l`` are formed afterwards, one block at a time, from the recorded q, k, v (``A_l`` as the
  model's own ``softmax(q kᵀ / √dh)``).
* Only the CLS row of ``R = (I + Ē_last)…(I + Ē_start)`` is used, so only that row is propagated, from the last
  block down: ``r ← e_CLS``, then ``r ← r + r Ē_l`` (``O(N²)`` per block instead of ``R``'s ``O(N³)``); for the
  last block ``e_CLS Ē_last`` is the CLS row of ``Ē_last``, which needs only the CLS query row of ``A``.

Relevance is accumulated in float32 (float64 for a float64 model) and returned in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.attention import scaled_scores, softmax_rows
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import resolve_layer_indices
from cliplens.errors import UnsupportedArchitectureError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, image_text_cosine, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["Chefer"]


@register_map("chefer")
class Chefer(MapMethod):
    """Relevance propagation through the attention layers (see the module docs)."""

    paper = 'Chefer et al., "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers" (ICCV 2021)'
    code = 'github.com/hila-chefer/Transformer-MM-Explainability'

    def __init__(self, start_layer: int = 0, positional: str | None = None) -> None:
        super().__init__(start_layer=int(start_layer), positional=positional)

    def unsupported(self, model: ImageTextModel) -> str | None:
        blocks = super().unsupported(model)
        if blocks:
            return blocks
        if model.vision.num_prefix_tokens == 0:
            return (f"Chefer et al.'s relevance is the CLS token's row of the propagated relevance, and "
                    f"{model.name} has no CLS token (it pools with a {model.vision.head.kind!r} head): use 'legrad' "
                    "or 'gradcam' (gradient maps that follow the pooling head), or 'rollout' (read through the "
                    "pooling weights)")
        return None

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        why = self.unsupported(model)
        if why:
            raise UnsupportedArchitectureError(why + ".")
        L = model.vision.num_layers
        start = resolve_layer_indices(self.params["start_layer"], L, "start layer")[0]
        layers = list(range(start, L))
        names = [f"blocks.{i}.attn.{t}" for i in layers for t in ("q", "k", "v", "z")]
        with torch.no_grad():
            out = run_differentiable(model, pixels, f"blocks.{start}.resid_pre", names, plan=self.plan_for())
            zs = [out[f"blocks.{i}.attn.z"] for i in layers]  # [B, N, H, dh] each, in the graph
            # [B, H, N, dh] each, out of the graph, last block first
            qkv = [tuple(out[f"blocks.{i}.attn.{t}"].detach().transpose(1, 2) for t in "qkv") for i in layers[::-1]]
            scores = model.logit_scale * image_text_cosine(out.embedding, texts.directions)
            rows = []
            for t in range(scores.shape[1]):
                grads = grad_of(scores[:, t], zs, retain=t + 1 < scores.shape[1])
                with torch.no_grad():
                    rows.append(_cls_relevance(qkv, [g.transpose(1, 2) for g in grads[::-1]]))
        rel = torch.stack(rows, 1).float()  # [B, T, N-1]
        return rel.reshape(rel.shape[0], rel.shape[1], *out.grid)


#: elements of one ``[heads, N, N]`` temporary in :func:`_cls_relevance` (10 MB in float32): small enough to stay in
#: cache and in the memory allocator's reused blocks (about 3x faster than whole-batch tensors on 16 cores)
_CHUNK_ELEMENTS = 2_500_000


def _cls_relevance(qkv: list[tuple[Tensor, Tensor, Tensor]], dz: list[Tensor]) -> Tensor:
    """``[B, N-1]`` the CLS row of ``R`` at the patches, from each block's ``(q, k, v)`` and ``∂y/∂z``
    (``[B, H, N, dh]``, last block first)."""
    q, k, v = qkv[0]
    B, H, N, _ = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    # the last block: e_CLS (I + Ē_last), from the CLS query row of A_last alone
    a = softmax_rows(scaled_scores(q, k, slice(0, 1)), q.dtype)  # [B, H, 1, N]
    da = torch.matmul(dz[0][:, :, :1].to(dtype), v.to(dtype).transpose(-1, -2))  # ∂y/∂A = ∂y/∂z vᵀ
    r = da.mul_(a).relu_().mean(1)[:, 0]  # [B, N]
    r[:, 0] += 1.0
    step = max(1, _CHUNK_ELEMENTS // (N * N))
    for (q, k, v), g in zip(qkv[1:], dz[1:], strict=True):
        # r ← r (I + Ē_l), Ē_l = mean_h ReLU(∂y/∂A_l ⊙ A_l), over (image, head) pairs a few at a time
        q, k, v, g = (t.flatten(0, 1) for t in (q, k, v, g))  # [B*H, N, dh]
        rh = r.repeat_interleave(H, 0).unsqueeze(1)  # [B*H, 1, N] each pair's image's row
        rE = torch.empty(B * H, N, dtype=dtype, device=r.device)  # r · ReLU(∂y/∂A_h ⊙ A_h)
        for i in range(0, B * H, step):
            j = slice(i, i + step)
            a = softmax_rows(scaled_scores(q[j], k[j], None), q.dtype)  # [c, N, N] the model's attention A_l
            da = torch.matmul(g[j].to(dtype), v[j].to(dtype).transpose(-1, -2))
            rE[j] = torch.bmm(rh[j], da.mul_(a).relu_()).squeeze(1)
        r = r + rE.view(B, H, N).mean(1)
    return r[:, 1:]
