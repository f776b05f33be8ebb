"""Trident (Shi, Dong & Xu, "Harnessing Vision Foundation Models for High-Performance, Training-Free Open
Vocabulary Segmentation", arXiv 2411.09219, ICCV 2025; CLIP + DINO + SAM):
CLIP's last block over sliding windows, its attention taken from DINO, then the windows stitched onto the whole
image and mixed once more by SAM's last encoder attention.

Follows ``trident.py`` (``get_trident_seg``, ``get_sam_feat``, ``get_windowed_imgs``) and
``open_clip/transformer.py`` (``VisionTransformer.forward``, ``custom_attn``, ``guidance_attn``,
``get_sam_sim``) of github.com/YuHengsss/Trident@a93b346, with the attention its modified
``segment_anything/modeling/image_encoder.py`` keeps. Per input image (the paper's section numbers are not
cited: its text could not be checked where this was written):

1. **Windows** (``slide_crop``, ``slide_stride``; mmseg's placement, the last one flush with the border) run
   through CLIP's blocks ``0 .. L−2`` as one batch. For the last block the CLS token is dropped and
   ``v = W_v ln_1(x) + b_v`` is bilinearly resized (``align_corners=False``) from CLIP's grid to DINO's.
2. **DINO attention** (as ProxyCLIP): ``F`` = DINO's last-layer patch tokens (after its final norm),
   L2-normalised; ``S = Fᵀ F`` per window; ``A = softmax((S − β · mean(S)) · γ)`` where entries below 0 are
   −inf, the mean taken over *all the windows of the image* (the original takes ``torch.mean`` of the whole
   window batch of its one image); ``y = out_proj(A v)`` (no residual, no MLP).
3. **Stitching**: each window's ``y`` on its CLIP-grid cells of the whole input (when DINO's grid is not a
   whole multiple of CLIP's, resized to ``r = round(g_dino / g_clip)`` times CLIP's grid first; ``r`` at least
   1 here, where the original's formula gives 0 for a DINO grid under half CLIP's), overlaps averaged.
4. **SAM guidance**: SAM's last encoder block (a global-attention block) gives, per head, the attention
   ``P_h = softmax(q kᵀ · scale + decomposed relative positions)`` and ``v_h`` over SAM's 64×64 grid, cropped
   to the valid (unpadded) ``input_size // 16`` cells (rows not renormalised). ``C_h`` = cosine of the
   normalised ``v_h``; a per-query threshold ``t = cos_fac · mean over heads and keys of C_h`` (with
   ``refine_neg_cos=False`` a negative ``t`` becomes 0.6), capped at 0.9; ``G = mean_h [C_h > t] · P_h``, rows
   renormalised. The stitched map is resized bilinearly to SAM's valid grid; output ``G y`` (no
   out-projection), then ``ln_post`` and the projection; raw map ``cos(f, t)`` on SAM's valid grid. ``P_h``
   and ``v_h`` are the ones SAM's own forward computes (kept while it runs; nothing is recomputed).

Defaults as the original's ``configs/base_config.py``: DINO ``vfm="dino_vitb16"`` (:mod:`cliplens.models.vfm`),
SAM ``vit_b``, ``slide_crop = 336``, ``slide_stride = 224``, ``β = 1.2``, ``γ = 3``, ``cos_fac = 1.2``,
``refine_neg_cos = True``; CLIP's positional table resized with the original's ``interpolate_pos_encoding``
(``bicubic_dino``). Per-data-set settings: ``segment-eval --preset trident``.

Deviations, and why: SAM sees the fitted model input (the map interface works on it; the original gives SAM
the file's original image resized up to multiples of 16 — SAM resizes to 1024 either way) and runs in SAM's
own dtype (the original: fp16); the windows are never padded and an input smaller than ``slide_crop`` is not
enlarged (cliplens's fitted inputs are whole multiples of the patch; the original pads windows to multiples of
56 and enlarges only inputs that are not multiples of 16); a non-square window (an input smaller than
``slide_crop`` on one side) is read row by row, where the original's ``token_size`` swaps its two sides (its
configurations only make square windows); batches of any size (one image after another for SAM).
``sam_halves=True`` is the original's Cityscapes case (``get_trident_seg`` / ``guidance_attn``): SAM runs on the
left and right halves of the input apart, the stitched map is cut at the middle of its width, and each half gets
its own guidance; the two are set side by side (the preset turns it on for Cityscapes). Left out: the optional
SAM-prompted refinement of the label map (``sam_refinement``, off in every official config) and PAMR (off).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from cliplens.core.forward import _qkv
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import CliplensError, InvalidInputError, UnsupportedArchitectureError
from cliplens.maps.base import MapMethod, cls_readout_message, register_map
from cliplens.maps.inputs import window_positions
from cliplens.maps.targets import TextEmbeddings

__all__ = ["Trident", "dino_attention", "sam_guidance"]


def dino_attention(feats: Tensor, beta: float = 1.2, gamma: float = 3.0) -> Tensor:
    """Trident's attention from DINO for the ``W`` windows of one image: ``feats`` ``[W, C, N]`` (patch tokens)
    -> ``[W, N, N]`` ``softmax((S − β · mean(S)) · γ)``, entries below 0 dropped, ``S`` the cosine per window and
    the mean over all windows."""
    f = F.normalize(feats, dim=1)
    S = f.transpose(1, 2) @ f
    logits = (S - S.mean() * beta) * gamma
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return logits.masked_fill(logits < 0, float("-inf")).softmax(-1).to(feats.dtype)


def sam_guidance(q: Tensor, k: Tensor, v: Tensor, attn: Any, grid: tuple[int, int], valid: tuple[int, int],
                 cos_fac: float = 1.2, refine_neg_cos: bool = True, pattern: Tensor | None = None) -> Tensor:
    """SAM's guidance ``[n, n]`` over the ``valid`` cells (``n = vh · vw``) of its last block's ``grid``, from that
    block's ``q``, ``k``, ``v`` ``[heads, H·W, dh]`` of one image and its ``attn`` module (scale, relative
    positions); see the module docs, step 4. ``pattern``: that block's own attention ``[heads, H·W, H·W]`` as SAM
    computed it, where the caller kept it (then q and k are not read); else it is computed here, for the valid
    query rows only. One head at a time, to bound memory."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    H, W = grid
    vh, vw = valid
    keep = (torch.arange(H, device=q.device)[:, None] < vh) & (torch.arange(W, device=q.device)[None, :] < vw)
    keep = keep.flatten()

    whole = (vh, vw) == (H, W)  # no padding: every cell is valid (no copy of the keys)
    u = F.normalize(v if whole else v[:, keep], dim=-1)  # [heads, n, dh]: the valid cells' unit values

    heads, _, dh = q.shape
    # the mean over heads and keys of the cosines, without the [n, n] matrices: mean_j u_i·u_j = u_i · mean_j u_j
    thresh = cos_fac * (u @ u.mean(1, keepdim=True).transpose(-1, -2)).mean(0)  # [n, 1]
    if not refine_neg_cos:
        thresh = torch.where(thresh < 0.0, torch.full_like(thresh, 0.6), thresh)
    thresh = thresh.clamp(max=0.9)
    # SAM's own attention (its decomposed relative positions added) for the valid query rows only: a row's softmax
    # runs over every key, padded ones included, as SAM's; the keys are cropped after it
    if pattern is None and attn.use_rel_pos:
        rel_h = get_rel_pos(H, H, attn.rel_pos_h)[:vh]  # [vh, H, dh]
        rel_w = get_rel_pos(W, W, attn.rel_pos_w)[:vw]  # [vw, W, dh]
    n = u.shape[1]
    total, passed = u.new_zeros(n, n), u.new_empty(n, n)
    for h in range(heads):
        if pattern is not None:
            p = pattern[h].view(H, W, H * W)[:vh, :vw].reshape(vh * vw, H * W)
        else:
            rq = q[h].view(H, W, dh)[:vh, :vw]  # the valid query cells
            logits = (rq.reshape(-1, dh) * attn.scale) @ k[h].T  # [n, H·W]
            if attn.use_rel_pos:
                logits = (logits.view(vh, vw, H, W) + torch.einsum("hwc,hkc->hwk", rq, rel_h)[..., None]
                          + torch.einsum("hwc,wkc->hwk", rq, rel_w)[:, :, None, :]).view(vh * vw, H * W)
            p = logits.softmax(-1)
        p = p if whole else p[:, keep]
        torch.matmul(u[h], u[h].T, out=passed).gt_(thresh)  # 1 where the cosine passes the threshold, else 0
        total.addcmul_(passed, p)  # + [C_h > t] · P_h, in place
    return total / total.sum(-1, keepdim=True)  # the mean over heads' 1 / heads cancels in the row normalisation


class _SamAttentionTaps(TorchFunctionMode):
    """While active (``with taps:`` around SAM's forward), keeps what SAM's last attention module computes: the
    output of its ``qkv`` projection (a forward hook) and its attention pattern, the one softmax its forward takes
    (seen by this function mode between the module's pre- and post-hooks). Nothing is recomputed for the guidance;
    should a SAM version take no single softmax of the expected shape there, :meth:`take` returns no pattern and
    :func:`sam_guidance` computes it."""

    def __init__(self, attn: Any) -> None:
        super().__init__()
        self.attn, self.inside = attn, False
        self.qkv: Tensor | None = None
        self.softmaxes: list[Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.inside and func in _SOFTMAXES:
            self.softmaxes.append(out)
        return out

    def __enter__(self) -> _SamAttentionTaps:
        def enter(_m: Any, _inputs: Any) -> None:
            self.inside = True

        def leave(_m: Any, _inputs: Any, _out: Any) -> None:
            self.inside = False

        def keep_qkv(_m: Any, _inputs: Any, out: Tensor) -> None:
            self.qkv = out

        self.handles = [self.attn.register_forward_pre_hook(enter),
                        self.attn.register_forward_hook(leave, always_call=True),
                        self.attn.qkv.register_forward_hook(keep_qkv)]
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.inside = False
        super().__exit__(*exc)

    def take(self) -> tuple[Tensor, Tensor | None]:
        """``(qkv [1, H, W, 3C], pattern [heads, H·W, H·W] or None)`` of the last forward; forgets them."""
        qkv, kept = self.qkv, self.softmaxes
        self.qkv, self.softmaxes = None, []
        if qkv is None:
            raise UnsupportedArchitectureError("Trident could not read SAM's last attention block during its forward")
        _, H, W, _ = qkv.shape
        shape = (self.attn.num_heads, H * W, H * W)
        pattern = kept[0] if len(kept) == 1 and tuple(kept[0].shape) == shape else None
        return qkv, pattern


_SOFTMAXES = (torch.Tensor.softmax, torch.softmax, F.softmax)


@register_map("trident")
class Trident(MapMethod):
    """Trident's DINO- and SAM-guided last block over sliding windows (see the module docs)."""

    paper = ('Shi, Dong & Xu, "Harnessing Vision Foundation Models for High-Performance, Training-Free Open '
             'Vocabulary Segmentation" (Trident, arXiv 2411.09219, ICCV 2025)')
    code = "github.com/YuHengsss/Trident@a93b346 (trident.py, open_clip/transformer.py)"

    own_positional = "bicubic_dino"
    second_backbone = True  # DINO and SAM: run by name, not in --method all

    def __init__(self, vfm: Any = "dino_vitb16", sam: Any = "vit_b", sam_checkpoint: str | None = None,
                 slide_crop: int = 336, slide_stride: int = 224, beta: float = 1.2, gamma: float = 3.0,
                 cos_fac: float = 1.2, refine_neg_cos: bool = True, sam_halves: bool = False,
                 positional: str | None = "bicubic_dino") -> None:
        for what, n in (("slide_crop", slide_crop), ("slide_stride", slide_stride)):
            if isinstance(n, bool) or int(n) < 1:
                raise InvalidInputError(f"Trident's {what} must be a positive number of pixels, got {n!r}")
        if int(slide_stride) > int(slide_crop):
            raise InvalidInputError(f"Trident's slide_stride ({slide_stride}) must not exceed slide_crop "
                                    f"({slide_crop}): windows would leave gaps")
        if float(gamma) <= 0:
            raise InvalidInputError(f"Trident's gamma (the attention's temperature) must be > 0, got {gamma}")
        self._vfm, self._sam = vfm, sam
        self._sam_model: Any = None
        super().__init__(vfm=vfm if isinstance(vfm, str) else type(vfm).__name__,
                         sam=sam if isinstance(sam, str) else type(sam).__name__,
                         sam_checkpoint=None if sam_checkpoint is None else str(sam_checkpoint),
                         slide_crop=int(slide_crop), slide_stride=int(slide_stride), beta=float(beta),
                         gamma=float(gamma), cos_fac=float(cos_fac), refine_neg_cos=bool(refine_neg_cos),
                         sam_halves=bool(sam_halves), positional=positional)

    # ---- what the method needs --------------------------------------------------------------------------------
    def unsupported(self, model: ImageTextModel) -> str | None:
        try:  # SAM first (its weights are never found by name), then the base rules: blocks, the second backbone
            self.sam_model(model)
        except CliplensError as e:
            return f"the 'trident' map needs DINO and SAM: {e}"
        return super().unsupported(model) or cls_readout_message("trident", model.vision, "its patch tokens are read through them")

    def sam_model(self, model: ImageTextModel) -> Any:
        """SAM (``segment_anything``'s ``Sam``): the object given, or loaded once from ``sam_checkpoint``."""
        if self._sam_model is None:
            sam = self._sam
            if isinstance(sam, str):
                from cliplens.models.sam import SAM_TYPES, load_sam

                if sam not in SAM_TYPES:
                    raise InvalidInputError(f"Trident's sam must be one of {', '.join(SAM_TYPES)}, or a SAM model "
                                            f"object; got {sam!r}")
                if self.params["sam_checkpoint"] is None:
                    raise InvalidInputError(
                        f"Trident needs SAM's weights, which cliplens cannot download: pass a local checkpoint with "
                        f"--param sam_checkpoint=PATH (for the default sam={sam!r}: sam_vit_b_01ec64.pth from the "
                        "segment-anything repository).")
                sam = load_sam(self.params["sam_checkpoint"], sam, model.device)
            elif type(sam).__module__.split(".")[0] != "segment_anything" or not hasattr(sam, "image_encoder"):
                raise InvalidInputError(f"Trident's sam must be a segment_anything SAM model or a name; got "
                                        f"{type(sam).__name__}")
            last = sam.image_encoder.blocks[-1]
            if getattr(last, "window_size", 0):
                raise UnsupportedArchitectureError("Trident reads SAM's last encoder block, which must use global "
                                                   "attention; this SAM's last block is windowed.")
            self._sam_model = sam
        return self._sam_model

    # ---- SAM, DINO, CLIP ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def guidance(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """SAM's guidance ``[B, n, n]`` for preprocessed ``pixels`` ``[B, 3, H, W]`` and its valid grid."""
        from segment_anything import SamPredictor

        sam = self.sam_model(model)
        predictor = SamPredictor(sam)
        attn = sam.image_encoder.blocks[-1].attn
        taps = _SamAttentionTaps(attn)
        cfg = model.preprocess_config
        mean = torch.tensor(cfg.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=pixels.device).view(1, 3, 1, 1)
        rgb = ((pixels.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        patch = sam.image_encoder.patch_embed.proj.kernel_size
        out, valid = [], (0, 0)
        for im in rgb:
            with taps:
                predictor.set_image(im.permute(1, 2, 0).cpu().numpy())
            qkv, pattern = taps.take()  # [1, H, W, 3C]; [heads, H·W, H·W] or None
            _, H, W, _ = qkv.shape
            qkv = qkv.reshape(H * W, 3, attn.num_heads, -1).permute(1, 2, 0, 3)  # [3, heads, N, dh]
            valid = (predictor.input_size[0] // patch[0], predictor.input_size[1] // patch[1])
            p = self.params
            out.append(sam_guidance(qkv[0], qkv[1], qkv[2], attn, (H, W), valid, p["cos_fac"], p["refine_neg_cos"],
                                    pattern=pattern))
            del qkv, pattern
        return torch.stack(out).to(pixels.device, pixels.dtype), valid

    def windows(self, model: ImageTextModel, H: int, W: int) -> list[tuple[int, int, int, int]]:
        """The windows ``(top, left, height, width)`` of an ``H x W`` input (pixels)."""
        ph, pw = model.vision.patch_size
        crop, stride = self.params["slide_crop"], self.params["slide_stride"]
        wh, ww = min(crop, H), min(crop, W)
        if crop % ph or crop % pw or stride % ph or stride % pw:
            raise InvalidInputError(f"Trident's slide_crop ({crop}) and slide_stride ({stride}) must be multiples of "
                                    f"the patch size {ph}x{pw}")
        return [(t, left, wh, ww) for t in window_positions(H, wh, stride) for left in window_positions(W, ww, stride)]

    @torch.no_grad()
    def features(self, model: ImageTextModel, pixels: Tensor, guidance: Tensor | list[tuple[Tensor, tuple[int, int]]],
                 sam_grid: tuple[int, int] | None = None) -> Tensor:
        """Trident's features ``[B, n, E]`` on SAM's valid grid, from ``pixels`` ``[B, 3, H, W]`` and SAM's
        ``guidance`` ``[B, n, n]`` on ``sam_grid`` (:meth:`guidance`); or, for ``sam_halves``, a list of
        ``(guidance, grid)`` of the left and right halves: the stitched map's halves each get their own, side by
        side (``[B, vh · (vw₁ + vw₂), E]``, read row by row)."""
        view = model.vision
        B, _, H, W = pixels.shape
        ph, pw = view.patch_size
        L = view.num_layers
        wins = self.windows(model, H, W)
        nw = len(wins)
        crops = torch.stack([pixels[:, :, t:t + h, s:s + w] for t, s, h, w in wins], 1).flatten(0, 1)  # [B·nw, ...]
        # DINO's attention, the mean over each image's windows
        vfm = self.backbone(model)
        cfg = model.preprocess_config
        dino = vfm(vfm.normalize_from(crops, cfg.mean, cfg.std))
        dgrid = dino.grid
        fd = dino.features.flatten(2).to(pixels.dtype).view(B, nw, dino.features.shape[1], -1)
        p = self.params
        A = torch.cat([dino_attention(fd[b], p["beta"], p["gamma"]) for b in range(B)])  # [B·nw, Nd, Nd]
        # CLIP to the input of the last block; its values moved by DINO's attention
        name = f"blocks.{L - 2}.resid_post"
        x = model.run(crops, plan=self.plan_for(Plan().at(-1, attention="identity", mlp=False)), names=[name])[name]
        last = view.blocks[-1]
        x = x[:, view.num_prefix_tokens:]
        gh, gw = crops.shape[-2] // ph, crops.shape[-1] // pw
        v = _qkv(last, last.ln_1(x), x.shape[0], x.shape[1])[2].flatten(2)  # [B·nw, N, D]
        v = F.interpolate(v.transpose(1, 2).reshape(len(v), -1, gh, gw), size=dgrid, mode="bilinear",
                          align_corners=False).flatten(2).transpose(1, 2)
        y = F.linear(A @ v, last.out_weight, last.out_bias)  # [B·nw, Nd, D]
        # stitch the windows onto the whole input's grid
        y = y.transpose(1, 2).reshape(B, nw, -1, *dgrid)
        if dgrid[1] % gw:
            r = max(int(round(dgrid[0] / gh)), 1)  # the original's ratio; at least 1 (DINO coarser than CLIP)
            y = F.interpolate(y.flatten(0, 1), size=(gh * r, gw * r), mode="bilinear",
                              align_corners=False).view(B, nw, -1, gh * r, gw * r)
        else:
            r = dgrid[1] // gw
        whole = y.new_zeros(B, y.shape[2], H // ph * r, W // pw * r)
        count = y.new_zeros(1, 1, *whole.shape[-2:])
        for i, (t, s, h, w) in enumerate(wins):
            rows, cols = slice(t // ph * r, (t + h) // ph * r), slice(s // pw * r, (s + w) // pw * r)
            whole[:, :, rows, cols] += y[:, i]
            count[:, :, rows, cols] += 1
        whole = whole / count
        parts = [(guidance, sam_grid)] if isinstance(guidance, Tensor) else guidance
        cut = whole.shape[-1] // 2
        pieces = [whole] if len(parts) == 1 else [whole[..., :cut], whole[..., cut:]]
        zs = []
        for piece, (g, grid) in zip(pieces, parts, strict=True):  # SAM's guidance on its (part of the) grid
            piece = F.interpolate(piece, size=grid, mode="bilinear", align_corners=False)
            zs.append((g @ piece.flatten(2).transpose(1, 2)).view(B, *grid, -1))  # [B, vh, vw, D]
        z = torch.cat(zs, dim=2).flatten(1, 2)  # [B, n, D]
        # CLIP's head
        head = view.head
        z = head.ln_post(z)
        z = z @ head.proj if head.proj is not None else z
        return z if head.proj_bias is None else z + head.proj_bias

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        why = self.unsupported(model)
        if why:
            raise UnsupportedArchitectureError(why if why.endswith(".") else why + ".")
        if self.params["sam_halves"]:  # the original's Cityscapes rule: SAM on the left and right halves apart
            cut = pixels.shape[-1] // 2
            parts = [self.guidance(model, pixels[..., :cut]), self.guidance(model, pixels[..., cut:])]
            if parts[0][1][0] != parts[1][1][0]:
                raise InvalidInputError(f"Trident's sam_halves: the halves of a {pixels.shape[-1]}-pixel-wide input "
                                        "give SAM grids of different heights; use an input of even width")
            feats = self.features(model, pixels, parts)
            sam_grid = (parts[0][1][0], parts[0][1][1] + parts[1][1][1])
        else:
            guidance, sam_grid = self.guidance(model, pixels)
            feats = self.features(model, pixels, guidance, sam_grid)
        feats = F.normalize(feats if feats.dtype == torch.float64 else feats.float(), dim=-1)
        scores = feats @ texts.directions.to(feats).T  # [B, n, T]
        return scores.transpose(1, 2).reshape(pixels.shape[0], -1, *sam_grid)
