"""Naive, independent reference implementation of CLIP Surgery (test oracle).

Li et al., "A Closer Look at the Explainability of CLIP" (xmed-lab/CLIP_Surgery). Written straight from the
formulas of the design notes, on an open_clip model's own modules, in plain loops and float64. It does not use
(or look at) cliplens's implementation; clarity over speed.

Contents
--------
* :func:`reference_surgery_tokens` -- architecture surgery (v-v side path on the last ``k`` blocks).
* :func:`reference_feature_surgery` -- feature surgery, literal ``[B, N, T, C]`` tensor form.
* :func:`reference_empty_surgery` -- the empty-prompt variant.
* :func:`reference_maps` -- per-map min-max over the patches, then bilinear upsampling.
* :func:`reference_points` -- text -> point prompts for SAM.

Choices where the spec leaves room (see also the docstrings):

* ``k = 0``: no surgical block; the "side path" starts (and ends) at the output of the last block, so every
  output token is the vanilla one. ``k`` may be at most the depth.
* Maps of a constant score vector divide 0 by 0 (NaN), exactly as the original; no epsilon is added.
* Points: the sort is stable (ties keep grid order; the original's ``sort`` is not stable); when ``k = 0``
  positives and negatives are both empty (the original's ``rank[-0:]`` would return every cell as positive).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F


def _visual_tower(model: torch.nn.Module) -> torch.nn.Module:
    return model.visual if hasattr(model, "visual") else model


def _local_positional_table(visual: torch.nn.Module, grid: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Positional embedding for a ``grid`` of patches, without touching the model.

    The CLS row is kept; the patch rows (the model's own grid, row-major) are resized with ``mode`` (bicubic,
    HF's rule; or bilinear, CLIP Surgery's) interpolation, ``align_corners=False``, no antialias; or by other
    methods' code: ``bicubic_dino`` (DINO's scale factor ``(n + 0.1) / n₀``), ``bicubic_antialias`` (timm's
    ``resample_abs_pos_embed``). At the model's own grid the table is returned as is.
    """
    table = visual.positional_embedding  # [1 + g0h * g0w, D]
    g0h, g0w = visual.grid_size
    if (g0h, g0w) == tuple(grid):
        return table
    if mode == "bicubic_antialias":  # GEM's and LeGrad's rule is timm's own function: use it
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(table[None], new_size=list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                      antialias=True)[0]
    cls_row = table[:1]
    patch_rows = table[1:]
    width = patch_rows.shape[-1]
    as_image = patch_rows.reshape(1, g0h, g0w, width).permute(0, 3, 1, 2)  # [1, D, g0h, g0w]
    if mode == "bicubic_dino":
        # DINO's interpolate_pos_encoding, as NACLIP, SCLIP, ClearCLIP and ResCLIP copy it: the grid plus 0.1 over
        # the table's side, given as the scale factor (the output size is the floor: the grid itself)
        resized = F.interpolate(as_image, scale_factor=((grid[0] + 0.1) / g0h, (grid[1] + 0.1) / g0w), mode="bicubic",
                                align_corners=False, recompute_scale_factor=False)
        assert tuple(resized.shape[-2:]) == tuple(grid)
    else:
        resized = F.interpolate(as_image, size=tuple(grid), mode=mode, align_corners=False, antialias=False)
    resized_rows = resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], width)
    return torch.cat([cls_row, resized_rows], dim=0)


def _embed(visual: torch.nn.Module, x: torch.Tensor, positional: str = "bicubic") -> torch.Tensor:
    """conv1 patches (row-major), CLS token first, positional embedding, ln_pre -> [B, 1 + gh * gw, D]."""
    patches = visual.conv1(x)  # [B, D, gh, gw]
    batch, width, gh, gw = patches.shape
    patches = patches.reshape(batch, width, gh * gw).permute(0, 2, 1)  # [B, gh * gw, D]
    cls = visual.class_embedding.reshape(1, 1, width).expand(batch, 1, width)
    tokens = torch.cat([cls, patches], dim=1)
    tokens = tokens + _local_positional_table(visual, (gh, gw), positional)
    return visual.ln_pre(tokens)


def _vanilla_block(block: torch.nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """The model's own block, unchanged (x is [B, N, D])."""
    if batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


def _vv_attention_branch(block: torch.nn.Module, x_main: torch.Tensor) -> torch.Tensor:
    """What one surgical block adds to the side path: ls_1(out_proj(concat_h VV_h(ln_1(x_main)))).

    X = ln_1(x_main); q, k, v = X W_q^T + b_q, X W_k^T + b_k, X W_v^T + b_v (in_proj); then q = k = v = v and per
    head h: VV_h = softmax(s * v_h v_h^T) v_h with s = d_head^-1/2, softmax over the keys.
    """
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise TypeError("expected an nn.MultiheadAttention with a packed in_proj_weight")
    width = attn.embed_dim
    n_heads = attn.num_heads
    d_head = width // n_heads
    scale = d_head ** -0.5

    X = block.ln_1(x_main)  # [B, N, D]
    W = attn.in_proj_weight  # [3D, D], rows q | k | v
    b = attn.in_proj_bias if attn.in_proj_bias is not None else torch.zeros(3 * width, dtype=X.dtype)
    q = X @ W[0:width].T + b[0:width]
    k = X @ W[width:2 * width].T + b[width:2 * width]
    v = X @ W[2 * width:3 * width].T + b[2 * width:3 * width]
    q = k = v  # the surgery: the query and key projections are replaced by the value projection

    head_outputs = []
    for h in range(n_heads):
        cols = slice(h * d_head, (h + 1) * d_head)
        q_h, k_h, v_h = q[..., cols], k[..., cols], v[..., cols]  # [B, N, d_head], all equal to v_h
        logits = scale * (q_h @ k_h.transpose(-1, -2))  # [B, N(queries), N(keys)]
        weights = torch.softmax(logits, dim=-1)  # over the keys
        head_outputs.append(weights @ v_h)
    out = torch.cat(head_outputs, dim=-1)  # [B, N, D]

    out = out @ attn.out_proj.weight.T
    if attn.out_proj.bias is not None:
        out = out + attn.out_proj.bias
    return block.ls_1(out)  # identity when the model has no layer-scale


@torch.no_grad()
def reference_surgery_tokens(
    model: torch.nn.Module, x: torch.Tensor, k: int = 6, dtype: torch.dtype = torch.float64,
    positional: str = "bilinear",
) -> torch.Tensor:
    """Architecture surgery: output tokens [B, N, E] (N = 1 + gh * gw, CLS first, row-major patches).

    With L blocks and the surgical blocks l = L-k .. L-1:

    * main stream: x_main^(0) = ln_pre(embeddings), x_main^(l+1) = vanilla block_l(x_main^(l)) for all l;
    * side path: x_side = x_main^(L-k) + sum_{l=L-k}^{L-1} ls_1_l(O_l(VV_l(ln_1_l(x_main^(l))))), no MLP, where
      VV_l is per-head softmax(s v_h v_h^T) v_h (q = k = v = v, in_proj biases included, s = d_head^-1/2) and
      O_l is out_proj with its bias;
    * output: token 0 = x_main^(L)[CLS], tokens 1.. = x_side[1..]; each token through ln_post then @ proj.

    ``k = 0`` means no surgical block (every token is vanilla). The model is not modified: the visual tower is
    deep-copied and cast to ``dtype``; other input sizes use a local positional table resized with ``positional``
    interpolation (the original's: bilinear; the original writes it back into the model, this does not).
    """
    visual = copy.deepcopy(_visual_tower(model)).to(dtype).eval()
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
        raise ValueError("reference supports the plain CLS-token towers only")
    blocks = list(visual.transformer.resblocks)
    depth = len(blocks)
    if not 0 <= k <= depth:
        raise ValueError(f"k must be in [0, {depth}], got {k}")
    batch_first = getattr(visual.transformer, "batch_first", True)
    first_surgical = depth - k

    x_main = _embed(visual, x.to(dtype), positional)
    x_side = None
    for index, block in enumerate(blocks):
        if index == first_surgical:
            x_side = x_main.clone()  # the side path starts from the main stream's residual (CLS included)
        if index >= first_surgical:
            x_side = x_side + _vv_attention_branch(block, x_main)  # from the *main* stream's ln_1
        x_main = _vanilla_block(block, x_main, batch_first)
    if x_side is None:  # k = 0: the side path starts after the last block, i.e. it is the main stream
        x_side = x_main.clone()

    tokens = torch.cat([x_main[:, :1], x_side[:, 1:]], dim=1)
    tokens = visual.ln_post(tokens)  # per-token statistics
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    return tokens


def reference_feature_surgery(tokens_normalised: torch.Tensor, texts_normalised: torch.Tensor) -> torch.Tensor:
    """Feature surgery, literal tensor form -> [B, N, T].

    f: [B, N, C] L2-normalised tokens (token 0 = CLS); t: [T, C] L2-normalised text embeddings.

    p_{b,j} = softmax_j(2 * f_{b,CLS} . t_j); w_{b,j} = p_{b,j} / mean_j p_{b,j};
    F_{b,n,j,c} = f_{b,n,c} * t_{j,c} * w_{b,j}; F <- F - mean_j F; S_{b,n,j} = sum_c F_{b,n,j,c}.
    The weights are per image, so any batch size works.
    """
    f = tokens_normalised
    t = texts_normalised
    batch, n_tokens, channels = f.shape
    n_texts = t.shape[0]

    cls_similarity = f[:, 0, :] @ t.T  # [B, T]
    p = torch.softmax(2.0 * cls_similarity, dim=-1)
    w = p / p.mean(dim=-1, keepdim=True)  # [B, T]

    feats = f.reshape(batch, n_tokens, 1, channels) * t.reshape(1, 1, n_texts, channels)  # [B, N, T, C]
    feats = feats * w.reshape(batch, 1, n_texts, 1)
    redundant = feats.mean(dim=2, keepdim=True)  # mean over the texts
    feats = feats - redundant
    return feats.sum(dim=-1)


def reference_empty_surgery(
    tokens_normalised: torch.Tensor, texts_normalised: torch.Tensor, empty: torch.Tensor
) -> torch.Tensor:
    """Empty-prompt variant -> [B, N, T]: S_{b,n,j} = f_{b,n} . (t_j - t_empty). No weights, no mean removal.

    ``empty`` is the (normalised, prompt-ensembled) embedding of the empty string, shape [C] or [1, C].
    """
    empty = empty.reshape(1, -1)
    return tokens_normalised @ (texts_normalised - empty).T


def reference_maps(scores: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Similarity maps [B, T, H, W] from scores [B, N, T] (token 0 = CLS).

    Drop CLS; per image and text, min-max over the patches: (s - min) / (max - min) (a constant map gives NaN,
    as in the original); reshape the row-major patches to [gh, gw]; bilinear upsampling to ``size`` = (H, W),
    ``align_corners=False``.
    """
    gh, gw = grid
    patches = scores[:, 1:, :]  # [B, gh * gw, T]
    if patches.shape[1] != gh * gw:
        raise ValueError(f"{patches.shape[1]} patch tokens do not fill a {gh}x{gw} grid")
    low = patches.min(dim=1, keepdim=True).values
    high = patches.max(dim=1, keepdim=True).values
    patches = (patches - low) / (high - low)
    maps = patches.permute(0, 2, 1).reshape(scores.shape[0], scores.shape[2], gh, gw)  # [B, T, gh, gw]
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def reference_points(
    grid_scores: torch.Tensor, image_hw: tuple[int, int], threshold: float = 0.8
) -> tuple[list[list[int]], list[int]]:
    """Point prompts for SAM from one text's patch scores on the token grid [gh, gw] (not min-max'ed).

    1. bilinear downsample (``align_corners=False``) to (h, w) = (gh // 2, gw // 2);
    2. flatten row-major, min-max; rank the cells by ascending score (stable sort);
    3. k = min(#cells with score >= threshold, (h * w) // 2);
    4. positives = the top-k cells *in ascending score order* (as the original: ``rank[-k:]``), label 1;
       negatives = the bottom-k cells (ascending), label 0;
    5. a cell (row, col) becomes the point [x, y] with x = int(min((col + 0.5) * W / w, W - 1)),
       y = int(min((row + 0.5) * H / h, H - 1)) (truncation), with (H, W) = ``image_hw``.

    Returns (points, labels): positives then negatives. The coordinates are computed in Python floats; the
    original multiplies a float32 tensor by W / w, which can truncate differently when the product is an
    exact integer.
    """
    gh, gw = grid_scores.shape
    h, w = gh // 2, gw // 2
    grid = grid_scores.to(torch.float64).reshape(1, 1, gh, gw)
    small = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    values = small.reshape(-1)
    values = (values - values.min()) / (values.max() - values.min())
    rank = torch.sort(values, stable=True).indices.tolist()  # ascending

    n_cells = h * w
    k = min(int((values >= threshold).sum()), n_cells // 2)
    positives = rank[n_cells - k:] if k > 0 else []
    negatives = rank[:k]

    H, W = image_hw

    def to_point(index: int) -> list[int]:
        row, col = divmod(index, w)
        x = min((col + 0.5) * W / w, W - 1)
        y = min((row + 0.5) * H / h, H - 1)
        return [math.trunc(x), math.trunc(y)]

    points = [to_point(i) for i in positives] + [to_point(i) for i in negatives]
    labels = [1] * len(positives) + [0] * len(negatives)
    return points, labels
