"""CLIPer (Sun et al., ICCV 2025) without its diffusion part: the early-layer fusion, as its code runs it.

Follows ``modified_clip/model.py`` of github.com/linsun449/cliper.code at commit c05fa41 (``CLIPer`` with
``attn_type="fused-attn"``, ``fuse_feature=True``, ``select_layer=-1``: the defaults of ``util/args.py`` and of
every ViT-B/16 config), i.e. the paper's *early-layer fusion* module (named by the paper's own term; its section
numbers could not be checked where this was written). Its *fine-grained compensation* refines the maps with
Stable Diffusion's self-attention (``ovs/pipeline.py``); that part is left out here, so the numbers to compare
with are the paper's and README's "without FGC" ones (ViT-B/16: mean 43.2 mIoU over the 8 benchmarks with its
sliding window, 41.9 without).

For an ``L``-block tower and a batch of images:

1. The forward runs unchanged up to the last block, recording each earlier block's ``ln_1`` output ``f_k``
   (``k < L − 1``), the last block's input ``f_{L−1} = x_{L−1}``, and the sum ``S`` over blocks ``0..L−2`` of
   their attention patterns, per head (CLS included; summed as the blocks run, by the ``pattern-sum`` strategy).
2. Every ``f_k`` goes through the *last* block's ``ln_1``, value projection, the fused attention
   (:mod:`cliplens.core.attention.early_fusion`: ``S`` balanced by Sinkhorn rounds, symmetrised, column means
   removed, clipped, rows normalised) and out-projection — no residual, no MLP — then ``ln_post`` and the
   projection. The code normalises ``S`` in place once per feature, so feature ``k`` sees ``k + 1`` rounds; kept.
3. Each feature's patch tokens are scored ``logit_scale · cos(f, t)`` against the targets and one extra text,
   the normalised mean of the targets; softmax over those texts, the extra one dropped: ``P_k [T, n]``.
4. With ``slide_crop > 0``: the same per-crop logits over a sliding window (``slide_stride``), averaged where
   crops overlap; the crops' last fused attentions (mean over heads, patch part) stitched into one
   ``[n, n]`` matrix, averaged where they overlap, rows normalised; the stitched logits ``G`` become ``G · A``;
   softmax as in 3; then ``P_k ← (P_k + P_k^slide) / 2``.
5. The last feature's map is zeroed below ``attention_thr`` times its maximum (per target), propagated by the
   last fused attention of the whole image averaged over heads (patch part; ``P̂ · A``: the map as a row
   vector times the attention), and the mean of all ``L`` maps (the last one thresholded, as the code's
   in-place step leaves it) is added. ``fuse=False`` (the code's ``fuse_feature=False``): the propagated
   last map alone.

Defaults: ``logit_scale=100`` (six of the eight ViT-B/16 configs; 50 for COCO-Object and COCO-Stuff),
``attention_thr=0.2`` (five of eight; 0.1 for VOC21/VOC20, 0.35 for Cityscapes), no sliding window (its configs
use a 224 crop, 336 for VOC, stride 112, for the README's starred row). The code resizes the positional table
bilinearly to the exact grid (``positional="bilinear"``). The code evaluates one image at a time (its head
average mixes the images of a batch); here every image is its own. Deviations: the code averages the
foreground classes only for the extra text and scores its background names apart; a map method sees one
list of targets, so the mean is over all of them (pass the classes alone to match the code exactly). Its
positional table is rounded to float16 before the (float32 on CPU) forward; not here.

Speed (ViT-B-16, 448 px, batch 4, 2 CPU threads; ``benchmarks/bench_maps.py``; docs/guides/benchmarks.md): 1.48× one
plain forward in a run over every method, 1.34× in a run of CLIPer alone; above the 1.3× asked of gradient-free
methods. Its arithmetic alone is 1.21× the plain forward's (the benchmark's "flops x"
column): its ``L`` passes through the last block's values, out-projection, ``ln_post`` and projection. The rest
is memory traffic the method needs: every early block's full attention pattern (which a fused attention kernel
never forms, and whose sum the method reads) and one fused ``[N, N]`` matrix per feature and head. The early
patterns are formed and summed two heads of one image at a time (:class:`~cliplens.core.attention.early_fusion.PatternSum`),
and the fused matrices of all ``L`` rounds are formed for two heads of one image at a time, from Sinkhorn
scalings without rewriting ``S`` and with their columns divided by ``c`` (four passes each; see
:mod:`cliplens.core.attention.early_fusion`), so that each is read by its product while still in cache; the
features then go through the out-projection, ``ln_post`` and the projection one at a time, so that the memory
allocator reuses one feature's temporaries instead of mapping fresh pages for all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention.early_fusion import HEADS_PER_CHUNK, PatternSum, fused_scaled, sinkhorn_rounds
from cliplens.core.forward import _out_proj, project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.inputs import window_positions
from cliplens.maps.targets import TextEmbeddings

__all__ = ["CLIPer"]

#: crops (windows × images) of the sliding-window pass run in one forward
CROPS_PER_PASS = 32


@register_map("cliper")
class CLIPer(MapMethod):
    """CLIPer's early-layer fusion (see the module docs)."""

    paper = ('Sun et al., "CLIPer: Hierarchically Improving Spatial Representation of CLIP for Open-Vocabulary '
             'Semantic Segmentation" (ICCV 2025), without the diffusion-based fine-grained compensation')
    code = 'github.com/linsun449/cliper.code@c05fa41'

    own_positional = "bilinear"
    uses_all_targets = True

    def __init__(self, logit_scale: float = 100.0, attention_thr: float = 0.2, fuse: bool = True,
                 slide_crop: int = 0, slide_stride: int = 112, positional: str | None = "bilinear") -> None:
        if not logit_scale > 0:
            raise InvalidInputError(f"CLIPer's logit_scale must be positive, got {logit_scale}")
        if not 0.0 <= attention_thr <= 1.0:
            raise InvalidInputError(f"CLIPer's attention_thr is a fraction of each map's maximum: between 0 and 1, "
                                    f"got {attention_thr}")
        if slide_crop < 0 or slide_stride < 1:
            raise InvalidInputError(f"CLIPer's slide_crop must be 0 (no sliding window) or a crop size in pixels, "
                                    f"and slide_stride at least 1; got {slide_crop} and {slide_stride}")
        super().__init__(logit_scale=float(logit_scale), attention_thr=float(attention_thr), fuse=bool(fuse),
                         slide_crop=int(slide_crop), slide_stride=int(slide_stride), positional=positional)

    def unsupported(self, model: ImageTextModel) -> str | None:
        why = super().unsupported(model)
        if why is None and model.vision.num_layers < 2:
            why = "the 'cliper' map fuses the attention of the blocks before the last one: it needs two or more blocks"
        return why

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        dirs = texts.directions
        T = dirs.shape[0]
        scored = torch.cat([dirs, F.normalize(dirs.mean(0, keepdim=True), dim=-1)])  # the targets and their mean
        logits, attn, grid = self._fused(model, pixels, scored)
        probs = logits.softmax(2)[:, :, :T]  # [B, K, T, n]
        if self.params["slide_crop"]:
            probs = self._slide(model, pixels, scored, grid).softmax(2)[:, :, :T] * 0.5 + probs * 0.5
        last = probs[:, -1]
        last = torch.where(last < last.amax(-1, keepdim=True) * self.params["attention_thr"], 0.0, last)
        out = last @ attn
        if self.params["fuse"]:
            out = out + torch.cat([probs[:, :-1], last[:, None]], dim=1).mean(1)
        return out.reshape(*out.shape[:2], *grid)

    def _fused(self, model: ImageTextModel, pixels: Tensor, scored: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Logits ``[B, K, T + 1, n]`` of the fused features (``K = L``, or 1 without ``fuse``), the last fused
        attention averaged over heads ``[B, n, n]`` (patch tokens), and the grid."""
        view = model.vision
        L, fuse = view.num_layers, self.params["fuse"]
        work = torch.float64 if model.dtype == torch.float64 else torch.float32
        summing = PatternSum()  # S: the early blocks' patterns, summed as they are formed
        names = ([f"blocks.{i}.ln_1" for i in range(L - 1)] if fuse else []) + [f"blocks.{L - 1}.resid_pre"]
        # the last block's own attention and MLP are not run: its output is not read
        plan = Plan().at(range(L - 1), attention=summing).at(-1, attention="identity", mlp=False)
        out = model.run(pixels, plan=self.plan_for(plan), names=names)
        S = summing.summed
        assert S is not None
        blk = view.blocks[-1]
        B, H, N = S.shape[:3]
        K, dh = len(names), blk.head_dim
        v = torch.empty(K, B, H, N, dh + 1, dtype=out[names[0]].dtype, device=S.device)
        v[..., dh] = 1.0  # the last column gives each row's sum
        for i, name in enumerate(names):  # each feature through the last block's ln_1 and value projection
            v[i, ..., :dh] = F.linear(blk.ln_1(out.cache.pop(name)), blk.v_weight, blk.v_bias).view(B, N, H, dh).transpose(1, 2)
        n = out.grid[0] * out.grid[1]
        z, attn = torch.empty_like(v), S.new_zeros(B, n, n)
        g = min(H, HEADS_PER_CHUNK)
        buffers = (S.new_empty(g, N, N), S.new_empty(g, N, N))
        for b in range(B):  # a few heads of one image at a time: S, Sᵀ and each fused matrix stay in cache
            for h in range(0, H, g):
                hs = slice(h, h + g)
                s = S[b, hs]
                st = s.transpose(-1, -2).contiguous()  # read in memory order by every fused matrix below
                bufs = buffers if s.shape[0] == g else tuple(t[: s.shape[0]] for t in buffers)
                for k, (r, c, colsum) in enumerate(sinkhorn_rounds(s, L)):  # the code balances S once per
                    if not (fuse or k == L - 1):  # feature, in place: feature k sees k + 1 rounds
                        continue
                    y = fused_scaled(s, r, c, colsum, out=bufs, transposed=st)  # the fused matrix is y · diag(c)
                    kk = k if fuse else 0
                    cv = v[kk, b, hs] * c.unsqueeze(-1).to(v.dtype)
                    torch.matmul(y.to(v.dtype), cv, out=z[kk, b, hs])
                    if k == L - 1:  # the last fused attention, patch part, rows normalised, summed over heads
                        m = y[:, N - n:, N - n:] * c[:, None, N - n:]
                        attn[b] += (m / z[kk, b, hs, N - n:, dh:].to(work)).sum(0)
        attn /= H
        del buffers, S
        summing.reset()
        texts = scored.to(work).T
        logits = texts.new_empty(B, K, texts.shape[1], n)
        for kk in range(K):  # feature by feature: the memory allocator reuses one feature's temporaries
            zs = z[kk, ..., :dh] / z[kk, ..., dh:]  # [B, H, N, dh]
            tokens = project_tokens(view, _out_proj(blk, zs.transpose(1, 2)))[:, N - n:]
            logits[:, kk] = (self.params["logit_scale"] * F.normalize(tokens.to(work), dim=-1) @ texts).transpose(1, 2)
        return logits, attn, out.grid

    def _slide(self, model: ImageTextModel, pixels: Tensor, scored: Tensor, grid: tuple[int, int]) -> Tensor:
        """The sliding-window logits ``[B, K, T + 1, n]``, propagated by the stitched attention (module docs, 4)."""
        crop, stride = self.params["slide_crop"], self.params["slide_stride"]
        ph, pw = model.vision.patch_size
        if crop % ph or crop % pw or stride % ph or stride % pw:
            raise InvalidInputError(f"CLIPer's slide_crop and slide_stride must be multiples of the patch size "
                                    f"{ph}x{pw}; got {crop} and {stride}")
        B, _, Hp, Wp = pixels.shape
        ch, cw = min(crop, Hp), min(crop, Wp)
        boxes = [(t, lft) for t in window_positions(Hp, ch, stride) for lft in window_positions(Wp, cw, stride)]
        per_pass = max(1, CROPS_PER_PASS // B)  # windows per forward: memory stays bounded on large images
        parts = [self._fused(model, torch.cat([pixels[:, :, t:t + ch, lft:lft + cw] for t, lft in boxes[i:i + per_pass]]),
                             scored) for i in range(0, len(boxes), per_pass)]
        logits, attn, (th, tw) = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), parts[0][2]
        gh, gw = grid
        K, T1 = logits.shape[1:3]
        preds = logits.new_zeros(B, K, T1, gh, gw)
        count = logits.new_zeros(gh, gw)
        stitched = attn.new_zeros(B, gh, gw, gh, gw)
        count_attn = attn.new_zeros(gh, gw, gh, gw)
        for w, (t, lft) in enumerate(boxes):
            rows, cols = slice(t // ph, t // ph + th), slice(lft // pw, lft // pw + tw)
            part = slice(w * B, (w + 1) * B)
            preds[..., rows, cols] += logits[part].reshape(B, K, T1, th, tw)
            count[rows, cols] += 1
            stitched[:, rows, cols, rows, cols] += attn[part].reshape(B, th, tw, th, tw)
            count_attn[rows, cols, rows, cols] += 1
        preds = (preds / count).flatten(-2)
        stitched = (stitched / (count_attn + 1e-5)).reshape(B, gh * gw, gh * gw)
        stitched = stitched / stitched.sum(-1, keepdim=True)
        return preds @ stitched[:, None]

