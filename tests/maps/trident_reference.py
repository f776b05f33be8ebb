"""A naive float64 Trident, written from the paper (arXiv 2411.09219, §3.2–3.3) and the structure of the official
``trident.py`` and ``open_clip/transformer.py`` (YuHengsss/Trident@a93b346), independently of cliplens.

One image at a time (as the original): the windows are cut with mmseg's grid formula; each window runs through
open_clip's own modules token by token (explicit per-head softmax); DINO is the transformers model's
``last_hidden_state``; the windows' outputs are summed onto the whole grid cell by cell; SAM's last attention is
recorded by replacing the last block's attention forward with the modified encoder's (which keeps ``attn`` and
``v``), and the guidance is built head by head and query by query with Python loops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tests.maps.corrclip_reference import IMAGENET_MEAN, IMAGENET_STD, _block, _positions


def _windows(H, W, crop, stride):
    """mmseg's sliding windows ``(y1, x1, y2, x2)`` (the original's ``get_windowed_imgs``)."""
    h_crop, w_crop = min(crop, H), min(crop, W)
    h_grids = max(H - h_crop + stride - 1, 0) // stride + 1
    w_grids = max(W - w_crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(h_grids):
        for j in range(w_grids):
            y1, x1 = i * stride, j * stride
            y2, x2 = min(y1 + h_crop, H), min(x1 + w_crop, W)
            out.append((max(y2 - h_crop, 0), max(x2 - w_crop, 0), y2, x2))
    return out


@torch.no_grad()
def reference_sam(sam, rgb, *, cos_fac=1.2, refine_neg_cos=True):
    """SAM's guidance ``[n, n]`` (float64) and valid grid for one ``rgb`` uint8 ``[H, W, 3]`` image."""
    from segment_anything import SamPredictor
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    attn_mod = sam.image_encoder.blocks[-1].attn
    kept = {}
    plain = attn_mod.forward

    def modified(x):  # the official modified Attention.forward, keeping attn and v
        B, H, W, _ = x.shape
        qkv = attn_mod.qkv(x).reshape(B, H * W, 3, attn_mod.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * attn_mod.num_heads, H * W, -1).unbind(0)
        attn = (q * attn_mod.scale) @ k.transpose(-2, -1)
        if attn_mod.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, attn_mod.rel_pos_h, attn_mod.rel_pos_w, (H, W), (H, W))
        attn = attn.softmax(dim=-1)
        kept["attn"], kept["v"], kept["hw"] = attn, v.view(B, attn_mod.num_heads, H, W, -1), (H, W)
        out = (attn @ v).view(B, attn_mod.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return attn_mod.proj(out)

    attn_mod.forward = modified
    try:
        predictor = SamPredictor(sam)
        predictor.set_image(rgb)
    finally:
        attn_mod.forward = plain
    H, W = kept["hw"]
    heads = attn_mod.num_heads
    vh, vw = predictor.input_size[0] // 16, predictor.input_size[1] // 16
    attn = kept["attn"].double().view(heads, H, W, H, W)[:, :vh, :vw, :vh, :vw].reshape(heads, vh * vw, vh * vw)
    v = kept["v"].double()[0, :, :vh, :vw].reshape(heads, vh * vw, -1)
    n = vh * vw
    cos = torch.stack([F.normalize(v[h], dim=-1) @ F.normalize(v[h], dim=-1).T for h in range(heads)])
    guide = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        t = cos_fac * cos[:, i, :].mean().item()
        if not refine_neg_cos and t < 0:
            t = 0.6
        t = min(t, 0.9)
        row = torch.zeros(n, dtype=torch.float64)
        for h in range(heads):
            row += torch.where(cos[h, i] > t, attn[h, i], torch.zeros_like(attn[h, i]))
        row = row / heads
        guide[i] = row / row.sum()
    return guide, (vh, vw)


def _dino_tokens(dino, x):
    """DINO's last-layer patch tokens after its final norm ``[C, gh, gw]`` for one normalised image ``x``."""
    kwargs = {"interpolate_pos_encoding": True} if type(dino).__name__ == "ViTModel" else {}
    out = dino(pixel_values=x[None], **kwargs).last_hidden_state[0, 1:]
    p = dino.config.patch_size
    return out.T.reshape(-1, x.shape[-2] // p, x.shape[-1] // p)


@torch.no_grad()
def reference_features(clip, dino, pixels, guide, sam_grid, mean, std, *, slide_crop=336, slide_stride=224,
                       beta=1.2, gamma=3.0):
    """Trident's features ``[n, E]`` (float64) on SAM's valid grid for one image ``pixels`` ``[3, H, W]``
    (CLIP-normalised) and SAM's guidance ``guide`` ``[n, n]``."""
    visual = clip.visual
    p = visual.conv1.stride[0]
    H, W = pixels.shape[-2:]
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    wins = _windows(H, W, slide_crop, slide_stride)
    crops = [pixels[:, y1:y2, x1:x2].double() for y1, x1, y2, x2 in wins]
    # DINO's similarity over all windows, its mean over the whole window batch
    feats = []
    for c in crops:
        d = ((c * s + m) - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(
            IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
        feats.append(_dino_tokens(dino, d.float().double()))  # vfm hands DINO float32-rounded pixels
    dgrid = tuple(feats[0].shape[-2:])
    sims = [F.normalize(f.flatten(1), dim=0).T @ F.normalize(f.flatten(1), dim=0) for f in feats]
    mean_sim = torch.stack(sims).mean()
    blocks = list(visual.transformer.resblocks)
    last = blocks[-1]
    outs = []
    for c, S in zip(crops, sims, strict=True):
        token = (c.shape[-2] // p, c.shape[-1] // p)
        x = visual.conv1(c[None]).flatten(2)[0].T
        x = torch.cat([visual.class_embedding[None], x]) + _positions(visual, token)
        x = visual.ln_pre(x)
        nobody = torch.zeros(len(x), len(x), dtype=torch.bool)
        for blk in blocks[:-1]:
            x = _block(blk, x, nobody)
        D = x.shape[-1]
        v = F.linear(last.ln_1(x[1:]), last.attn.in_proj_weight[2 * D:], last.attn.in_proj_bias[2 * D:])
        v = F.interpolate(v.T.reshape(1, D, *token), size=dgrid, mode="bilinear", align_corners=False)[0]
        v = v.flatten(1).T
        logits = (S - mean_sim * beta) * gamma
        logits[logits < 0] = float("-inf")
        y = last.attn.out_proj(logits.softmax(-1) @ v)  # [Nd, D]
        img = y.T.reshape(D, *dgrid)
        if dgrid[1] % token[1]:
            ratio = max(int(round(dgrid[0] / token[0])), 1)  # cliplens's floor (the original: 0 fails)
            img = F.interpolate(img[None], size=(token[0] * ratio, token[1] * ratio), mode="bilinear",
                                align_corners=False)[0]
        else:
            ratio = dgrid[1] // token[1]
        outs.append((img, ratio))
    ratio = outs[0][1]
    total = torch.zeros(outs[0][0].shape[0], H // p * ratio, W // p * ratio, dtype=torch.float64)
    count = torch.zeros(H // p * ratio, W // p * ratio, dtype=torch.float64)
    for (y1, x1, y2, x2), (img, _) in zip(wins, outs, strict=True):
        assert img.shape[1:] == ((y2 - y1) // p * ratio, (x2 - x1) // p * ratio)
        for i in range(img.shape[1]):
            for j in range(img.shape[2]):
                total[:, y1 // p * ratio + i, x1 // p * ratio + j] += img[:, i, j]
                count[y1 // p * ratio + i, x1 // p * ratio + j] += 1
    stitched = total / count
    if isinstance(guide, list):  # Cityscapes: (guidance, grid) of the left and right halves, cut at the middle
        cut = stitched.shape[-1] // 2
        rows = []
        for half, (g, grid) in zip((stitched[..., :cut], stitched[..., cut:]), guide, strict=True):
            whole = F.interpolate(half[None], size=grid, mode="bilinear", align_corners=False)[0]
            rows.append((g @ whole.flatten(1).T).reshape(*grid, -1))
        z = torch.cat(rows, dim=1).flatten(0, 1)
    else:
        whole = F.interpolate(stitched[None], size=sam_grid, mode="bilinear", align_corners=False)[0]
        z = guide @ whole.flatten(1).T
    return visual.ln_post(z) @ visual.proj


def reference_raw(clip, dino, sam, pixels, rgb, texts, mean, std, *, cos_fac=1.2, refine_neg_cos=True,
                  sam_halves=False, **kw):
    """``[B, T, vh, vw]`` cosine maps, one image at a time; ``rgb`` the uint8 images SAM sees ``[B, H, W, 3]``;
    ``sam_halves``: SAM on the left and right halves of each image apart (the original's Cityscapes case)."""
    out = []
    for b in range(pixels.shape[0]):
        if sam_halves:
            cut = rgb.shape[2] // 2
            guide = [reference_sam(sam, np.ascontiguousarray(half), cos_fac=cos_fac, refine_neg_cos=refine_neg_cos)
                     for half in (rgb[b][:, :cut], rgb[b][:, cut:])]
            grid = (guide[0][1][0], guide[0][1][1] + guide[1][1][1])
        else:
            guide, grid = reference_sam(sam, rgb[b], cos_fac=cos_fac, refine_neg_cos=refine_neg_cos)
        feats = reference_features(clip, dino, pixels[b], guide, grid, mean, std, **kw)
        cos = F.normalize(feats, dim=-1) @ F.normalize(texts.double(), dim=-1).T
        out.append(cos.T.reshape(-1, *grid))
    return torch.stack(out)


def tiny_sam(img_size=128, seed=0):
    """A small random-weight segment_anything SAM (8x8 grid at 128 px; the last block global with relative
    positions), in float64; 1-D and relative-position parameters perturbed so that they are not 0/1."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    grid = img_size // 16
    encoder = ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=32, depth=2, num_heads=4, out_chans=16,
                              use_rel_pos=True, window_size=4, global_attn_indexes=(1,))
    prompt = PromptEncoder(embed_dim=16, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size),
                           mask_in_chans=4)
    decoder = MaskDecoder(transformer_dim=16, transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32,
                                                                            num_heads=2), iou_head_hidden_dim=16)
    sam = Sam(encoder, prompt, decoder)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, q in sam.named_parameters():
            if q.ndim <= 1 or "rel_pos" in name:
                q.add_(0.3 * torch.randn(q.shape, generator=g))
    return sam.double().eval()

