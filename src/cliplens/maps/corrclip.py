"""CorrCLIP (Zhang, Liu & Tang, "CorrCLIP: Reconstructing Patch Correlations in CLIP for Open-Vocabulary Semantic
Segmentation", arXiv 2411.10086, ICCV 2025): CLIP's last attention replaced by correlations that SAM's regions
scope and DINO's features value, plus two extra branches.

Follows ``CorrCLIPv1/open_clip/transformer.py`` (``VisionTransformer.forward``) and
``CorrCLIPv1/corrclip_segmentor.py`` of github.com/zdk258/CorrCLIP@103bc18 (the v1 files unchanged since 20935a8;
``CorrCLIPv2/`` is a later variant, not the paper's). Per image, with ``F`` DINO's last-block ``q + k`` (all
heads, CLS dropped, L2-normalised) on DINO's grid and ``S = F Fᵀ``. The parts are named by the paper's section
headings; their numbers are not given, as the paper's text could not be checked where this was written:

1. **Regions** (the paper's *Scope Reconstruction*). SAM's automatic masks, sorted by ascending area, are written
   as labels 1, 2, ... onto a map of zeros, so larger masks overwrite smaller ones (:func:`regions_from_masks`);
   made once per fitted input and cropped with each window, as the original crops its per-image map. Resized
   (nearest) to DINO's grid.
2. **Mask merging**: with more than two labels, each label's mean ``F`` (L2-normalised) is compared; the smallest
   label present (the unsegmented pixels, 0, when there are any) is left out; the others are clustered with
   DBSCAN (distance ``max(I) − I``, ``eps = merge_eps``, ``min_samples = 1``), which is exactly the connected
   components of the graph "distance ≤ eps" (:func:`merge_regions`).
3. **Scope**: cell ``i`` may attend to ``j`` when both lie in the same merged region other than the smallest,
   or when either lies in the smallest and ``S_ij`` exceeds the mean of ``S``. **Value** (*Value Reconstruction*):
   ``A = softmax(τ · S)`` over the allowed cells (:func:`scope_attention`), one matrix for every channel.
4. **Main and spatial branches** (*Feature Refinement*): the last block's ``v = W_v ln_1(x) + b_v`` of the patch tokens, for
   ``x`` the input of the last block (main) and for the mean of the outputs of the spatial layers (0-based
   ``L−2−n .. L−3``, ``n = 5, 12, 28`` for 12, 24, 32 layers, else ``L − 4``: 5–9 for ViT-B), bilinearly resized
   from CLIP's grid to DINO's, then ``A v`` and the out-projection (with its bias, without layer-scale, as the
   original calls ``attn.out_proj``); no residual, no MLP.
5. **Semantic branch**: one *mask class token* per region (labels resized nearest to CLIP's grid), started
   from the CLS token after ``ln_pre``; in every block it attends, with that block's own attention, to the CLS
   token and to its region's patches only (not to itself), then the residual and MLP; the patch tokens never
   see it, so the main stream is the plain forward. Each DINO cell takes the token of its region.
6. Output per DINO cell: ``(ln_post(main) + α · ln_post(spatial) + β · ln_post(semantic)) · proj``, with
   ``α = 1``, ``β = 0.5``; raw map ``cos(f, t)`` on DINO's grid (twice CLIP's for ViT-B/16 with DINO ViT-B/8).

Defaults as the original: DINO ``vfm="dino_vitb8"`` (:mod:`cliplens.models.vfm`), SAM 2 ``sam2_hiera_l`` with
``points_per_side = 8``, ``pred_iou_thresh = 0.4``, ``stability_score_thresh = 0.4`` (and
``multimask_output=False``, ``apply_postprocessing=False``), ``τ = 4``, ``eps = 0.2``; positional table resized
with DINO's rule (``bicubic_dino``, the original's ``interpolate_pos_encoding``). The paper's CLIP is MetaCLIP
(``ViT-B-16-quickgelu``, ``metaclip_fullcc``). SAM 1 (``sam="vit_b"|"vit_l"|"vit_h"``) works the same way
through ``segment_anything``'s generator, and any object with a ``generate(rgb_uint8)`` method may be passed.

Deviations, and why: SAM sees the fitted model input (e.g. short side 336) instead of the original image
(the map interface works on the fitted input; SAM resizes to 1024 either way); batches of any size (the
original runs one image: its semantic branch reads image 0 only); regions are relabelled 0..R−1 per image and
window (the original keeps SAM's ids and adds 10000 to merged ones, which collides with its padding value
10000 when a window is padded — cliplens windows are never padded).

**Map correction** (``map_correction=True``, the original's ``postprocess_result``, always on there): after the
labels are taken, every SAM region but the smallest-numbered one takes its most frequent predicted label
(:func:`vote_in_regions`). It acts on labels, not scores, so it is :meth:`CorrCLIP.correct_labels`, which
``segment`` and ``segment-eval`` apply; the region map comes with each image's maps (:attr:`ImageMaps.regions`,
SAM's regions over the fitted input, resized nearest to the image as the original resizes its masks). A plain
map (``explain``) is not changed by it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.forward import _mlp, _out_proj, _qkv
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan, resolve_layer_indices
from cliplens.errors import (
    CliplensError,
    InvalidInputError,
    MissingDependencyError,
    UnsupportedArchitectureError,
    install_hint,
)
from cliplens.maps.base import ImageMaps, MapMethod, cls_readout_message, register_map
from cliplens.maps.inputs import labels_to_image
from cliplens.maps.targets import TextEmbeddings

__all__ = ["SAM2_CONFIGS", "CorrCLIP", "merge_regions", "regions_from_masks", "scope_attention", "spatial_layers",
           "vote_in_regions"]

#: SAM 2 names -> the config file inside the ``sam2`` package (``build_sam2``)
SAM2_CONFIGS: dict[str, str] = {
    **{f"sam2_hiera_{s}": f"configs/sam2/sam2_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
    **{f"sam2.1_hiera_{s}": f"configs/sam2.1/sam2.1_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
}


def spatial_layers(num_layers: int) -> list[int]:
    """The spatial branch's layers (0-based, their outputs averaged): ``L−2−n .. L−3`` with ``n`` = 5, 12, 28 for
    12, 24, 32 layers, else ``L − 4`` (5–9 for a 12-layer tower)."""
    n = {12: 5, 24: 12, 32: 28}.get(num_layers, num_layers - 4)
    return list(range(max(num_layers - 2 - n, 0), num_layers - 2))


def regions_from_masks(masks: Iterable[dict[str, Any]], size: tuple[int, int]) -> Tensor:
    """A region map ``[H, W]`` (int64) from automatic-mask-generator annotations (``segmentation`` ``[H, W]``
    bool, ``area``): sorted by ascending area, labelled 1, 2, ... in that order, later (larger) masks
    overwriting earlier ones; 0 where no mask lies."""
    out = torch.zeros(size, dtype=torch.long)
    for i, ann in enumerate(sorted(masks, key=lambda a: a["area"]), start=1):
        out[torch.as_tensor(ann["segmentation"], dtype=torch.bool)] = i
    return out


def _compact(labels: Tensor) -> Tensor:
    """Labels renumbered ``0..R−1`` in increasing order (so 0 is the smallest label present)."""
    return torch.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def _components(adjacent: Tensor) -> Tensor:
    """Connected components of a symmetric boolean graph ``[R, R]``: ``0..K−1`` ordered by first member."""
    reach = adjacent | torch.eye(len(adjacent), dtype=torch.bool, device=adjacent.device)
    while True:
        r = reach.to(torch.float32)
        nxt = (r @ r) > 0
        if torch.equal(nxt, reach):
            break
        reach = nxt
    first = reach.to(torch.uint8).argmax(dim=1)  # each region's smallest reachable index
    return torch.unique(first, return_inverse=True)[1]


def merge_regions(labels: Tensor, feats: Tensor, eps: float = 0.2) -> Tensor:
    """Mask merging for one image: ``labels`` ``[N]`` (compact, 0 the unsegmented region) and unit features
    ``feats`` ``[N, C]`` -> merged labels ``[N]`` (0 kept; the others 1..K by cluster). DBSCAN with
    ``min_samples = 1`` on the distance ``max(I) − I`` between the regions' normalised mean features = the
    connected components of "distance ≤ eps"."""
    R = int(labels.max()) + 1
    if R <= 2:
        return labels
    feats = feats.float() if feats.dtype in (torch.float16, torch.bfloat16) else feats  # sums over many cells
    onehot = F.one_hot(labels, R).to(feats.dtype)  # [N, R]
    means = F.normalize((onehot.T @ feats) / onehot.sum(0)[:, None], dim=-1)[1:]
    sim = means @ means.T
    comp = _components((sim.max() - sim) <= eps)
    return torch.cat([labels.new_zeros(1), 1 + comp])[labels]


def scope_attention(feats: Tensor, labels: Tensor, tau: float = 4.0) -> Tensor:
    """CorrCLIP's attention ``[B, N, N]`` from unit features ``feats`` ``[B, N, C]`` and merged ``labels``
    ``[B, N]`` (0: the unsegmented region): ``softmax(τ · S)`` over the allowed pairs (see the module docs)."""
    S = feats @ feats.transpose(1, 2)
    li, lj = labels[:, :, None], labels[:, None, :]
    same = (li == lj) & (li != 0)
    loose = ((li == 0) | (lj == 0)) & (S > S.mean(dim=(1, 2), keepdim=True))
    logits = (S.float() if S.dtype in (torch.float16, torch.bfloat16) else S) * tau
    return logits.masked_fill(~(same | loose), float("-inf")).softmax(-1).to(feats.dtype)


def vote_in_regions(labels: Tensor, regions: Tensor) -> Tensor:
    """Map correction: every region of ``regions`` ``[H, W]`` except the one with the smallest label (the
    unsegmented pixels) takes the most frequent of ``labels`` ``[H, W]`` there (ties: the smallest label, as
    ``torch.mode``). Returns a new tensor."""
    reg = _compact(regions).flatten()
    lab = labels.flatten().long()
    C, R = int(lab.max()) + 1, int(reg.max()) + 1
    counts = torch.bincount(reg * C + lab, minlength=R * C).view(R, C)
    winner = counts.argmax(dim=1)  # first maximum: the smallest label among ties
    out = torch.where(reg > 0, winner[reg], lab)
    return out.view(labels.shape).to(labels.dtype)


def _nearest(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``[B, h, w]`` integer labels resized nearest (as the original: through float) -> ``[B, H, W]`` int64."""
    return F.interpolate(labels[:, None].double(), size=size, mode="nearest")[:, 0].long()


@register_map("corrclip")
class CorrCLIP(MapMethod):
    """CorrCLIP's reconstructed correlations with DINO and SAM (see the module docs)."""

    paper = ('Zhang, Liu & Tang, "CorrCLIP: Reconstructing Patch Correlations in CLIP for Open-Vocabulary Semantic '
             'Segmentation" (arXiv 2411.10086, ICCV 2025)')
    code = "github.com/zdk258/CorrCLIP@103bc18 (CorrCLIPv1/open_clip/transformer.py, corrclip_segmentor.py)"

    own_positional = "bicubic_dino"
    second_backbone = True  # DINO (and SAM): run by name, not in --method all

    def __init__(self, vfm: Any = "dino_vitb8", sam: Any = "sam2_hiera_l", sam_checkpoint: str | None = None,
                 points_per_side: int = 8, pred_iou_thresh: float = 0.4, stability_score_thresh: float = 0.4,
                 tau: float = 4.0, alpha: float = 1.0, beta: float = 0.5, merge_eps: float = 0.2,
                 spatial_layers: Iterable[int] | None = None, map_correction: bool = True,
                 positional: str | None = "bicubic_dino") -> None:
        if isinstance(points_per_side, bool) or int(points_per_side) < 1:
            raise InvalidInputError(f"CorrCLIP's points_per_side must be a positive integer, got {points_per_side!r}")
        for what, v in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh)):
            if not 0.0 <= float(v) <= 1.0:
                raise InvalidInputError(f"CorrCLIP's {what} must be between 0 and 1, got {v}")
        if float(tau) <= 0 or float(merge_eps) <= 0:
            raise InvalidInputError(f"CorrCLIP's tau and merge_eps must be > 0 (DBSCAN's eps); got {tau} and {merge_eps}")
        self._vfm, self._sam = vfm, sam
        self._generator: Any = None
        self._last_regions: tuple[Tensor, Tensor] | None = None  # (the pixels, their regions): for input_regions
        super().__init__(vfm=vfm if isinstance(vfm, str) else type(vfm).__name__,
                         sam=sam if isinstance(sam, str) else type(sam).__name__,
                         sam_checkpoint=None if sam_checkpoint is None else str(sam_checkpoint),
                         points_per_side=int(points_per_side), pred_iou_thresh=float(pred_iou_thresh),
                         stability_score_thresh=float(stability_score_thresh), tau=float(tau), alpha=float(alpha),
                         beta=float(beta), merge_eps=float(merge_eps),
                         spatial_layers=None if spatial_layers is None else [int(i) for i in spatial_layers],
                         map_correction=bool(map_correction), positional=positional)

    # ---- what the method needs --------------------------------------------------------------------------------
    def unsupported(self, model: ImageTextModel) -> str | None:
        try:  # SAM first (its weights are never found by name), then the base rules: blocks, the second backbone
            self.mask_generator(model)
        except CliplensError as e:
            return f"the 'corrclip' map needs DINO and SAM: {e}"
        return super().unsupported(model) or cls_readout_message("corrclip", model.vision, "its mask class tokens start from the CLS token")

    def layers(self, model: ImageTextModel) -> list[int]:
        L = model.vision.num_layers
        given = self.params["spatial_layers"]
        layers = spatial_layers(L) if given is None else resolve_layer_indices(given, L, "spatial layer")
        if not layers or max(layers) >= L - 1:
            raise InvalidInputError(f"CorrCLIP's spatial layers must be before the last block ({L - 1}); got {layers}")
        return layers

    def mask_generator(self, model: ImageTextModel) -> Any:
        """SAM's automatic mask generator with the method's settings (built once; the mask generator SAM and
        SAM 2 ship, or any object with their ``generate(rgb_uint8) -> [{"segmentation", "area"}]``)."""
        if self._generator is None:
            self._generator = self._build_generator(model)
        return self._generator

    def _build_generator(self, model: ImageTextModel) -> Any:
        sam, p = self._sam, self.params
        settings = dict(points_per_side=p["points_per_side"], pred_iou_thresh=p["pred_iou_thresh"],
                        stability_score_thresh=p["stability_score_thresh"])
        if not isinstance(sam, str):
            if callable(getattr(sam, "generate", None)):
                return sam
            kind = type(sam).__module__.split(".")[0]
            if kind == "segment_anything":
                from segment_anything import SamAutomaticMaskGenerator

                return SamAutomaticMaskGenerator(sam, **settings)
            if kind == "sam2":
                from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

                return SAM2AutomaticMaskGenerator(sam, multimask_output=False, **settings)
            raise InvalidInputError(f"CorrCLIP's sam must be a SAM or SAM 2 model, a mask generator (an object with "
                                    f"generate(image)) or a name; got {type(sam).__name__}")
        from cliplens.models.sam import SAM_TYPES, load_sam

        names = ", ".join([*SAM_TYPES, *SAM2_CONFIGS])
        if sam not in SAM_TYPES and sam not in SAM2_CONFIGS:
            raise InvalidInputError(f"CorrCLIP's sam must be one of {names}, or a SAM model object; got {sam!r}")
        ckpt = p["sam_checkpoint"]
        if ckpt is None:
            raise InvalidInputError(
                f"CorrCLIP needs SAM's weights, which cliplens cannot download: pass a local checkpoint with "
                f"--param sam_checkpoint=PATH (for the default sam={sam!r}: sam2_hiera_large.pt from the SAM 2 "
                "repository; or --param sam=vit_h with sam_vit_h_4b8939.pth from segment-anything).")
        if sam in SAM_TYPES:
            from segment_anything import SamAutomaticMaskGenerator


            return SamAutomaticMaskGenerator(load_sam(ckpt, sam, model.device), **settings)
        try:
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
            from sam2.build_sam import build_sam2
        except ImportError:
            raise MissingDependencyError(
                f"CorrCLIP with sam={sam!r} needs SAM 2, which is not installed: {install_hint('sam2', 'sam2')} (or "
                f"use SAM 1: --param sam=vit_h with its checkpoint; {install_hint('segment-anything', 'sam')}).") from None
        if not os.path.isfile(ckpt):
            raise InvalidInputError(f"SAM 2 checkpoint {ckpt!r} is not a file: pass the local .pt file of {sam}")
        built = build_sam2(SAM2_CONFIGS[sam], ckpt, device=str(model.device), apply_postprocessing=False)
        return SAM2AutomaticMaskGenerator(built, multimask_output=False, **settings)

    # ---- regions, features, maps -------------------------------------------------------------------------------
    def regions(self, model: ImageTextModel, pixels: Tensor) -> Tensor:
        """SAM's region map ``[B, H, W]`` (int64, compact labels, 0 = the smallest) of preprocessed ``pixels``."""
        cfg = model.preprocess_config
        mean = torch.tensor(cfg.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=pixels.device).view(1, 3, 1, 1)
        rgb = ((pixels.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        generator = self.mask_generator(model)
        H, W = pixels.shape[-2:]
        maps = [regions_from_masks(generator.generate(im.permute(1, 2, 0).cpu().numpy()), (H, W)) for im in rgb]
        out = torch.stack([_compact(m) for m in maps]).to(pixels.device)
        self._last_regions = (pixels, out)
        return out

    def input_regions(self, px: Tensor) -> Tensor | None:
        """SAM's regions of ``px`` from the run that just mapped it (for the map correction)."""
        last, self._last_regions = self._last_regions, None
        if not self.params["map_correction"] or last is None or last[0] is not px:
            return None
        return last[1]

    def correct_labels(self, maps: ImageMaps, labels: Tensor) -> Tensor:
        """The original's map correction (see the module docs): each SAM region takes its most frequent label."""
        if not self.params["map_correction"] or maps.regions is None:
            return labels
        regions = labels_to_image(maps.regions, maps.box, maps.image_size, fill=int(maps.regions.min()))
        return vote_in_regions(labels, regions)

    def _contrasted(self, model: ImageTextModel, px: Tensor, texts: TextEmbeddings, empty: TextEmbeddings | None,
                    contrast: str, window: int | None, stride: int | None) -> Tensor:
        # SAM runs once on each whole fitted input; its region map rides along as a 4th channel, so that every
        # sliding window (the base class crops the pixels) sees its crop of the same map, as in the original
        why = self.unsupported(model)
        if why:
            raise UnsupportedArchitectureError(why if why.endswith(".") else why + ".")
        regions = self.regions(model, px)
        top = int(regions.max())
        if top > (256 if px.dtype == torch.bfloat16 else 2048 if px.dtype == torch.float16 else 2 ** 24):
            raise InvalidInputError(f"CorrCLIP: {top + 1} SAM regions cannot ride along in {px.dtype}; run the "
                                    "model in float32 or lower points_per_side")
        return super()._contrasted(model, torch.cat([px, regions[:, None].to(px.dtype)], dim=1), texts, empty,
                                   contrast, window, stride)

    def dino_features(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """DINO's last-block ``q + k`` per patch (heads concatenated), L2-normalised ``[B, N_d, C]``, and its grid."""
        vfm = self.backbone(model)
        cfg = model.preprocess_config
        out = vfm(vfm.normalize_from(pixels, cfg.mean, cfg.std))
        qk = out.patches(out.q) + out.patches(out.k)  # [B, heads, N_d, dh]
        feats = qk.transpose(1, 2).flatten(2).to(device=pixels.device, dtype=pixels.dtype)
        return F.normalize(feats, dim=-1), out.grid

    def features(self, model: ImageTextModel, pixels: Tensor, regions: Tensor, dino: Tensor,
                 dino_grid: tuple[int, int]) -> Tensor:
        """CorrCLIP's features ``[B, N_d, E]`` on DINO's grid, from ``pixels`` ``[B, 3, H, W]``, the region map
        ``regions`` ``[B, H, W]`` and DINO's unit features ``dino`` ``[B, N_d, C]`` on ``dino_grid``."""
        view = model.vision
        B = pixels.shape[0]
        L = view.num_layers
        layers = self.layers(model)
        p = self.params
        # regions on DINO's grid, merged; scope-and-value attention
        lab_d = _nearest(regions, dino_grid).flatten(1)
        lab_d = torch.stack([merge_regions(_compact(lab_d[b]), dino[b], p["merge_eps"]) for b in range(B)])
        attn = scope_attention(dino, lab_d, p["tau"])  # [B, N_d, N_d]
        # mask class tokens: one per region present on CLIP's grid
        grid = (pixels.shape[-2] // view.patch_size[0], pixels.shape[-1] // view.patch_size[1])
        lab_c = _nearest(lab_d.view(B, *dino_grid), grid).flatten(1)  # [B, N_c]
        present = [torch.unique(lab_c[b]) for b in range(B)]
        R = max(len(u) for u in present)
        which = torch.full((B, R), -1, dtype=torch.long, device=lab_c.device)
        for b, u in enumerate(present):
            which[b, :len(u)] = u
        allow = torch.ones(B, R, 1, dtype=torch.bool, device=lab_c.device)  # the CLS token
        allow = torch.cat([allow, lab_c[:, None, :] == which[:, :, None]], dim=2)  # [B, R, 1 + N_c]
        state: dict[str, Tensor] = {}

        def start(x: Tensor, name: str) -> None:
            state["mct"] = x[:, :1].expand(B, R, x.shape[-1])

        def keep_k(k: Tensor, name: str) -> None:
            state["k"] = k

        def step(v: Tensor, name: str) -> None:  # one block for the mask class tokens, from the main stream's k, v
            blk = view.blocks[int(name.split(".")[1])]
            mct = state["mct"]
            q = _qkv(blk, blk.ln_1(mct), B, R)[0].transpose(1, 2)  # [B, H, R, dh]
            k = state.pop("k").transpose(1, 2)
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
            a = scores.masked_fill(~allow[:, None], float("-inf")).softmax(-1).to(v.dtype)
            mct = mct + _out_proj(blk, torch.matmul(a, v.transpose(1, 2)).transpose(1, 2))
            state["mct"] = mct + _mlp(blk, blk.ln_2(mct), None, "")

        hooks: dict[str, Any] = {"embed": start, "blocks.*.attn.k": keep_k, "blocks.*.attn.v": step}
        names = sorted({f"blocks.{i}.resid_post" for i in [*layers, L - 2]})
        plan = Plan().at(-1, attention="identity", mlp=False)  # the last block's own output is not used
        out = model.run(pixels, plan=self.plan_for(plan), names=names, hooks=hooks)
        main = out[f"blocks.{L - 2}.resid_post"]
        spatial = torch.stack([out[f"blocks.{i}.resid_post"] for i in layers]).mean(0)
        # main and spatial branches: the last block's values, moved by CorrCLIP's attention
        last = view.blocks[-1]
        k0 = view.num_prefix_tokens
        both = torch.cat([main, spatial])
        v = _qkv(last, last.ln_1(both), 2 * B, both.shape[1])[2].flatten(2)[:, k0:]  # [2B, N_c, D]
        v = v.transpose(1, 2).reshape(2 * B, -1, *grid)
        v = F.interpolate(v, size=dino_grid, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        y = F.linear(torch.matmul(attn.repeat(2, 1, 1), v), last.out_weight, last.out_bias)
        # semantic branch: each DINO cell takes its region's token
        up = _nearest(lab_c.view(B, *grid), dino_grid).flatten(1)  # [B, N_d]
        slot = torch.stack([torch.searchsorted(present[b], up[b]) for b in range(B)])
        sem = torch.gather(state["mct"], 1, slot[:, :, None].expand(-1, -1, state["mct"].shape[-1]))
        head = view.head
        ln = head.ln_post
        normed = ln(y[:B]) + p["alpha"] * ln(y[B:]) + p["beta"] * ln(sem)
        z = normed @ head.proj if head.proj is not None else normed
        return z if head.proj_bias is None else z + head.proj_bias

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        if pixels.shape[1] == 4:  # from _contrasted: the region map rides along
            px, regions = pixels[:, :3], pixels[:, 3].round().long()
        else:
            px, regions = pixels, self.regions(model, pixels)
        dino, dino_grid = self.dino_features(model, px)
        feats = self.features(model, px, regions, dino, dino_grid)
        feats = F.normalize(feats if feats.dtype == torch.float64 else feats.float(), dim=-1)
        scores = feats @ texts.directions.to(feats).T  # [B, N_d, T]
        return scores.transpose(1, 2).reshape(px.shape[0], -1, *dino_grid)
