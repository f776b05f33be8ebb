"""Naive, independent reference implementations of dense and attribution maps (test oracle).

Methods: MaskCLIP, SCLIP, ClearCLIP, NACLIP, ResCLIP, GEM (dense, text-similarity maps); raw attention,
attention rollout (text-independent); Grad-CAM, Chefer et al. (gradient x attention relevance), LeGrad (gradient
attribution). Written straight from the formulas of the spec, on an open_clip model's own modules (``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, each block's ``ln_1`` / ``attn`` weights / ``ls_1``
/ ``ln_2`` / ``mlp`` / ``ls_2``, ``ln_post``, ``proj``). Attention is re-implemented explicitly (per head,
``[B, H, N, N]`` probability tensors), so gradients can be taken with respect to the tensors built here. It does
not use (or look at) cliplens's implementation; clarity over speed, float64 throughout.

Notation: ``s = d_head ** -0.5``; ``q, k, v`` are the per-head projections of the block's LN1 output ``X``
(in_proj biases included), shaped ``[B, H, N, d_head]``; ``O(z)`` is the out-projection (bias included) followed
by the block's layer-scale ``ls_1`` (the identity without one); softmax is over the keys (last axis).
"tokens -> features" is ``normalize(ln_post(token) @ proj)`` per token. A dense raw map for a unit text ``t``
is ``feature_n . t`` for every patch token ``n`` (CLS dropped), reshaped row-major to ``[gh, gw]``.

Entry point: :func:`reference_raw` ``(name, model, x, directions, **params) -> [B, T, gh, gw]`` (float64).

Choices where the spec leaves room:

* ResCLIP's default reference layers use Python's ``round`` (half to even): ``range(round(5L/12), round(9L/12))``
  (so L = 6 gives ``range(2, 4)``). ``reference_layers`` are 0-based block indices; negative ones count from the
  end. A reference layer may be the last block: its pattern is then the vanilla one at the last block's input.
* GEM: ``iterations = 0`` means ``A_z = softmax(beta ẑ ẑᵀ)`` of the normalised projection itself. The side stream
  is mapped with every token (CLS included) as the stream carries it; only the patch tokens are scored.
* Layer indices given as negative numbers (``gradcam``'s ``layer``, ``rollout`` / ``chefer`` / ``legrad``'s
  ``start_layer``) count from the end (``-1`` = last block).
* Gradients are taken per text; a batch is handled at once because every image's objective depends only on its
  own tokens (the gradient of the batch sum is the per-image gradient).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from tests.maps.surgery_reference import _embed, _visual_tower

DENSE_METHODS = ("maskclip", "sclip", "clearclip", "naclip", "resclip", "gem")
TEXT_FREE_METHODS = ("raw-attention", "rollout")
GRADIENT_METHODS = ("gradcam", "chefer", "legrad")
ALL_METHODS = DENSE_METHODS + TEXT_FREE_METHODS + GRADIENT_METHODS


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def prepare_visual(model: torch.nn.Module, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A deep copy of the visual tower in ``dtype`` (the model itself is never modified)."""
    visual = copy.deepcopy(_visual_tower(model)).to(dtype).eval()
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
        raise ValueError("reference supports the plain CLS-token towers only")
    for block in visual.transformer.resblocks:
        attn = block.attn
        if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
            raise TypeError("expected nn.MultiheadAttention blocks with a packed in_proj_weight")
    return visual


def layer_index(index: int, depth: int) -> int:
    """A block index, negatives counted from the end; must land in [0, depth)."""
    resolved = index + depth if index < 0 else index
    if not 0 <= resolved < depth:
        raise ValueError(f"layer {index} is out of range for {depth} blocks")
    return resolved


def head_geometry(block: torch.nn.Module) -> tuple[int, int, float]:
    """(number of heads, d_head, s = d_head ** -0.5)."""
    width, heads = block.attn.embed_dim, block.attn.num_heads
    d_head = width // heads
    return heads, d_head, d_head ** -0.5


def split_heads(z: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, D] -> [B, H, N, d_head] (head h owns the columns h*d .. (h+1)*d - 1)."""
    batch, n_tokens, width = z.shape
    return z.reshape(batch, n_tokens, heads, width // heads).permute(0, 2, 1, 3)


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d_head] -> [B, N, D]."""
    batch, heads, n_tokens, d_head = z.shape
    return z.permute(0, 2, 1, 3).reshape(batch, n_tokens, heads * d_head)


def qkv(block: torch.nn.Module, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head q, k, v [B, H, N, d_head] of the LN1 output X [B, N, D], in_proj biases included."""
    attn = block.attn
    width = attn.embed_dim
    W = attn.in_proj_weight
    b = attn.in_proj_bias if attn.in_proj_bias is not None else torch.zeros(3 * width, dtype=X.dtype)
    q = X @ W[0:width].T + b[0:width]
    k = X @ W[width:2 * width].T + b[width:2 * width]
    v = X @ W[2 * width:].T + b[2 * width:]
    heads = attn.num_heads
    return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)


def out_branch(block: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """O(z) = ls_1(out_proj(concat_h z_h)) with out_proj's bias; z is [B, H, N, d_head] -> [B, N, D]."""
    out = merge_heads(z) @ block.attn.out_proj.weight.T
    if block.attn.out_proj.bias is not None:
        out = out + block.attn.out_proj.bias
    return block.ls_1(out)  # identity when the model has no layer-scale


def mlp_branch(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ls_2(MLP(LN2(x)))."""
    return block.ls_2(block.mlp(block.ln_2(x)))


def softmax_keys(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def self_attention(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale * a bᵀ) over the keys, per head: [B, H, N, N]."""
    return softmax_keys(scale * (a @ b.transpose(-1, -2)))


def gaussian_window(grid: tuple[int, int], sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Ω [N, N] (N = 1 + gh * gw): between patches at (i, j) and (k, l), exp(-((i-k)² + (j-l)²) / (2σ²));
    0 in the CLS row and column. Patch n (1-based after CLS) sits at row (n-1) // gw, column (n-1) % gw."""
    gh, gw = grid
    n_tokens = 1 + gh * gw
    omega = torch.zeros(n_tokens, n_tokens, dtype=dtype)
    for a in range(gh * gw):
        row_a, col_a = divmod(a, gw)
        for b in range(gh * gw):
            row_b, col_b = divmod(b, gw)
            squared = (row_a - row_b) ** 2 + (col_a - col_b) ** 2
            omega[1 + a, 1 + b] = math.exp(-squared / (2.0 * sigma ** 2))
    return omega


def features(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """tokens [..., D] -> normalize(ln_post(token) @ proj) [..., E], per token."""
    out = visual.ln_post(tokens)
    if visual.proj is not None:
        out = out @ visual.proj
    return F.normalize(out, dim=-1)


def patch_cosine_map(visual: torch.nn.Module, tokens: torch.Tensor, grid: tuple[int, int],
                     directions: torch.Tensor) -> torch.Tensor:
    """tokens [B, N, D] (CLS first) -> cosine with each text [B, T, gh, gw] (patches only, row-major)."""
    f = features(visual, tokens[:, 1:])  # [B, P, E]
    cos = f @ directions.to(f.dtype).T  # [B, P, T]
    batch, _, n_texts = cos.shape
    return cos.permute(0, 2, 1).reshape(batch, n_texts, *grid)


def grid_map(values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, P] patch values -> [B, gh, gw] (row-major)."""
    return values.reshape(values.shape[0], *grid)


# ----------------------------------------------------------------------------------------------------------------
# the vanilla forward, explicit
# ----------------------------------------------------------------------------------------------------------------
class Trace:
    """Everything of one explicit vanilla forward: per block its input, LN1 output X, q, k, v, attention
    probabilities A [B, H, N, N] and output; ``grid`` = (gh, gw)."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.X: list[torch.Tensor] = []
        self.q: list[torch.Tensor] = []
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.A: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.grid: tuple[int, int] = (0, 0)

    @property
    def final(self) -> torch.Tensor:
        return self.outputs[-1]


#: how each method's official code resizes the positional table for another grid (the rest: bicubic to the size)
#: NACLIP clip/model.py@0cac3a6, SCLIP clip/model.py@b56bd30, ClearCLIP open_clip/transformer.py@ad68a40, ResCLIP
#: clip/model.py@0e085f7 (DINO's interpolate_pos_encoding); GEM gem/gem_utils.py@5fa677c, LeGrad
#: legrad/utils.py@a9edb03 (timm's resample_abs_pos_embed, antialiased)
METHOD_POSITIONAL = {"sclip": "bicubic_dino", "clearclip": "bicubic_dino", "naclip": "bicubic_dino",
                     "resclip": "bicubic_dino", "gem": "bicubic_antialias", "legrad": "bicubic_antialias"}
POSITIONAL = {"mode": "bicubic"}  # the rule vanilla_trace uses (set by reference_raw for the method at hand)


def vanilla_trace(visual: torch.nn.Module, x: torch.Tensor) -> Trace:
    """x_0 = ln_pre(embeddings); per block: X = ln_1(x), A = softmax(s q kᵀ), x' = x + O(A v),
    x'' = x' + ls_2(MLP(ln_2(x'))). The graph is kept (call under torch.enable_grad() to differentiate)."""
    dtype = next(visual.parameters()).dtype
    x = x.to(dtype)
    trace = Trace()
    trace.grid = tuple(visual.conv1(x[:1]).shape[-2:])
    tokens = _embed(visual, x, POSITIONAL["mode"])
    for block in visual.transformer.resblocks:
        heads, _, scale = head_geometry(block)
        X = block.ln_1(tokens)
        q, k, v = qkv(block, X)
        A = self_attention(q, k, scale)
        hidden = tokens + out_branch(block, A @ v)
        out = hidden + mlp_branch(block, hidden)
        trace.inputs.append(tokens)
        trace.X.append(X)
        trace.q.append(q)
        trace.k.append(k)
        trace.v.append(v)
        trace.A.append(A)
        trace.outputs.append(out)
        tokens = out
    return trace


def image_embedding(visual: torch.nn.Module, trace: Trace) -> torch.Tensor:
    """e = normalize(ln_post(CLS of the last output) @ proj) [B, E]."""
    return features(visual, trace.final[:, 0])


# ----------------------------------------------------------------------------------------------------------------
# dense methods: the last block's attention
# ----------------------------------------------------------------------------------------------------------------
def default_reference_layers(depth: int) -> list[int]:
    """ResCLIP's default: range(round(5L/12), round(9L/12)), Python rounding (half to even)."""
    return list(range(round(5 * depth / 12), round(9 * depth / 12)))


def last_block_attention(name: str, trace: Trace, visual: torch.nn.Module, **params) -> torch.Tensor:
    """The modified attention [B, H, N, N] of the last block for maskclip / sclip / clearclip / naclip / resclip."""
    blocks = visual.transformer.resblocks
    depth = len(blocks)
    _, _, scale = head_geometry(blocks[-1])
    q, k = trace.q[-1], trace.k[-1]
    batch, heads, n_tokens, _ = q.shape
    if name == "maskclip":
        eye = torch.eye(n_tokens, dtype=q.dtype)
        return eye.expand(batch, heads, n_tokens, n_tokens)
    if name == "sclip":
        return self_attention(q, q, scale) + self_attention(k, k, scale)
    if name == "clearclip":
        return self_attention(q, q, scale)
    if name == "naclip":
        logits = scale * (k @ k.transpose(-1, -2))
        if params.get("gaussian", True):
            logits = logits + gaussian_window(trace.grid, params.get("sigma", 5.0), q.dtype)
        return softmax_keys(logits)
    if name == "resclip":
        sigma, tau, lam = params.get("sigma", 5.0), params.get("tau", 2.0), params.get("lam", 0.3)
        layers = params.get("reference_layers")
        layers = default_reference_layers(depth) if layers is None else [layer_index(i, depth) for i in layers]
        if not layers:
            raise ValueError("no reference layers")
        R = sum(trace.A[i] for i in layers) / len(layers)  # vanilla patterns of the unmodified forward
        local = softmax_keys(scale * (k @ k.transpose(-1, -2)) + gaussian_window(trace.grid, sigma, q.dtype))
        return tau * ((1.0 - lam) * local + lam * R)
    raise ValueError(f"no last-block attention for {name!r}")


def gem_attention(z: torch.Tensor, beta: torch.Tensor, iterations: int) -> torch.Tensor:
    """A_z [B, H, N, N]: repeat ``iterations`` times {ẑ = z/‖z‖; z <- softmax(β ẑ ẑᵀ) ẑ}; ẑ = z/‖z‖;
    A_z = softmax(β ẑ ẑᵀ). ‖·‖ per token per head; β [B] (one per image)."""
    b = beta.reshape(-1, 1, 1, 1)
    for _ in range(iterations):
        zn = F.normalize(z, dim=-1)
        z = softmax_keys(b * (zn @ zn.transpose(-1, -2))) @ zn
    zn = F.normalize(z, dim=-1)
    return softmax_keys(b * (zn @ zn.transpose(-1, -2)))


def gem_beta(X: torch.Tensor, scale: float, temperature: float | None) -> torch.Tensor:
    """β [B]: the temperature if given, else mean_n ‖X_n‖₂ (full width, all tokens) × s."""
    if temperature is not None:
        return torch.full((X.shape[0],), float(temperature), dtype=X.dtype)
    return X.norm(dim=-1).mean(dim=-1) * scale


# ----------------------------------------------------------------------------------------------------------------
# dense methods: tokens and maps
# ----------------------------------------------------------------------------------------------------------------
_DENSE_DEFAULTS = {
    "maskclip": dict(residual_ffn=True),
    "sclip": {},
    "clearclip": {},
    "naclip": dict(gaussian=True, sigma=5.0),
    "resclip": dict(sigma=5.0, tau=2.0, lam=0.3, reference_layers=None),
    "gem": dict(blocks=6, iterations=1, temperature=None),
}


def _check_params(name: str, params: dict, allowed: dict) -> dict:
    unknown = set(params) - set(allowed)
    if unknown:
        raise TypeError(f"{name}: unknown parameters {sorted(unknown)}")
    return {**allowed, **params}


@torch.no_grad()
def reference_dense_tokens(name: str, model: torch.nn.Module, x: torch.Tensor,
                           **params) -> tuple[torch.Tensor, tuple[int, int]]:
    """The tokens [B, N, D] (before ln_post) whose patches a dense method scores, and the grid (gh, gw)."""
    params = _check_params(name, params, _DENSE_DEFAULTS[name])
    visual = prepare_visual(model)
    trace = vanilla_trace(visual, x)
    blocks = visual.transformer.resblocks
    depth = len(blocks)

    if name == "gem":
        n_blocks = params["blocks"]
        if not 1 <= n_blocks <= depth:
            raise ValueError(f"gem blocks must be in [1, {depth}]")
        first = depth - n_blocks
        side = trace.inputs[first].clone()  # the side stream starts from that block's input, CLS included
        for index in range(first, depth):
            block = blocks[index]
            _, _, scale = head_geometry(block)
            beta = gem_beta(trace.X[index], scale, params["temperature"])  # from the MAIN stream's LN1 output
            q, k, v = trace.q[index], trace.k[index], trace.v[index]
            A = sum(gem_attention(z, beta, params["iterations"]) for z in (q, k, v)) / 3.0
            side = side + out_branch(block, A @ v)  # the original v; no MLP on the side stream
        return side, trace.grid

    block = blocks[-1]
    x_in, v = trace.inputs[-1], trace.v[-1]
    A = last_block_attention(name, trace, visual, **params)
    branch = out_branch(block, A @ v)
    if name in ("sclip",) or (name == "maskclip" and params["residual_ffn"]):
        hidden = x_in + branch
        return hidden + mlp_branch(block, hidden), trace.grid
    return branch, trace.grid  # no residual, no MLP


def reference_dense(name: str, model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                    **params) -> torch.Tensor:
    """Dense method raw maps [B, T, gh, gw]: cosine of each patch feature with each (unit) text."""
    with torch.no_grad():
        tokens, grid = reference_dense_tokens(name, model, x, **params)
        visual = prepare_visual(model)
        return patch_cosine_map(visual, tokens, grid, directions.to(torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# text-independent maps
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def reference_raw_attention(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, gh, gw]: the last block's vanilla attention, CLS query row, mean over heads, patch columns."""
    visual = prepare_visual(model)
    trace = vanilla_trace(visual, x)
    return grid_map(trace.A[-1][:, :, 0, 1:].mean(dim=1), trace.grid)


@torch.no_grad()
def reference_rollout(model: torch.nn.Module, x: torch.Tensor, start_layer: int = 0) -> torch.Tensor:
    """[B, gh, gw]: J = Â_{L-1} ... Â_{start}, Â_l = 0.5 mean_h A_l + 0.5 I; the map is J[0, 1:]."""
    visual = prepare_visual(model)
    trace = vanilla_trace(visual, x)
    depth = len(trace.A)
    start = layer_index(start_layer, depth)
    batch, _, n_tokens, _ = trace.A[0].shape
    eye = torch.eye(n_tokens, dtype=trace.A[0].dtype)
    J = eye.expand(batch, n_tokens, n_tokens)
    for index in range(start, depth):
        A_hat = 0.5 * trace.A[index].mean(dim=1) + 0.5 * eye
        J = A_hat @ J  # later layers on the left
    return grid_map(J[:, 0, 1:], trace.grid)


# ----------------------------------------------------------------------------------------------------------------
# gradient methods
# ----------------------------------------------------------------------------------------------------------------
def _logit_scale(model: torch.nn.Module) -> float:
    return float(torch.exp(model.logit_scale.detach().to(torch.float64)))


def reference_gradcam_gradient(model: torch.nn.Module, x: torch.Tensor, direction: torch.Tensor,
                               layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, G): A = block ``layer``'s LN1 output [B, N, D]; G = ∂y/∂A with y = cos(e, t) per image."""
    visual = prepare_visual(model)
    with torch.enable_grad():
        trace = vanilla_trace(visual, x)
        index = layer_index(layer, len(trace.X))
        e = image_embedding(visual, trace)
        y = e @ direction.to(e.dtype)  # [B]; e is unit, t is unit
        (G,) = torch.autograd.grad(y.sum(), trace.X[index])
    return trace.X[index].detach(), G


def reference_gradcam(model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                      layer: int = -1) -> torch.Tensor:
    """[B, T, gh, gw]: α_c = mean over patch tokens of G[n, c]; map_n = ReLU(Σ_c α_c A[n, c]), patches n."""
    visual = prepare_visual(model)
    grid = tuple(visual.conv1(x[:1].to(torch.float64)).shape[-2:])
    maps = []
    for t in directions.to(torch.float64):
        A, G = reference_gradcam_gradient(model, x, t, layer)
        alpha = G[:, 1:].mean(dim=1)  # [B, D]
        cam = torch.relu((A[:, 1:] * alpha[:, None, :]).sum(dim=-1))  # [B, P]
        maps.append(grid_map(cam, grid))
    return torch.stack(maps, dim=1)


def reference_chefer_gradients(model: torch.nn.Module, x: torch.Tensor, direction: torch.Tensor,
                               start_layer: int = 0) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """(layers, [A_l], [∂y/∂A_l]) for l >= start_layer, y = exp(logit_scale) · cos(e, t) per image."""
    visual = prepare_visual(model)
    with torch.enable_grad():
        trace = vanilla_trace(visual, x)
        depth = len(trace.A)
        layers = list(range(layer_index(start_layer, depth), depth))
        e = image_embedding(visual, trace)
        y = _logit_scale(model) * (e @ direction.to(e.dtype))
        grads = torch.autograd.grad(y.sum(), [trace.A[li] for li in layers])
    return layers, [trace.A[li].detach() for li in layers], list(grads)


def reference_chefer(model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                     start_layer: int = 0) -> torch.Tensor:
    """[B, T, gh, gw]: Ē_l = mean_h ReLU(∂y/∂A_l ⊙ A_l); R = I; R <- R + Ē_l R in layer order; map R[0, 1:]."""
    visual = prepare_visual(model)
    grid = tuple(visual.conv1(x[:1].to(torch.float64)).shape[-2:])
    maps = []
    for t in directions.to(torch.float64):
        _, As, Gs = reference_chefer_gradients(model, x, t, start_layer)
        batch, _, n_tokens, _ = As[0].shape
        R = torch.eye(n_tokens, dtype=torch.float64).expand(batch, n_tokens, n_tokens)
        for A, G in zip(As, Gs, strict=True):
            E = torch.relu(G * A).mean(dim=1)  # [B, N, N]
            R = R + E @ R
        maps.append(grid_map(R[:, 0, 1:], grid))
    return torch.stack(maps, dim=1)


def legrad_layer_scores(visual: torch.nn.Module, trace: Trace, direction: torch.Tensor,
                        layers: list[int]) -> list[torch.Tensor]:
    """s_l [B] = normalize(ln_post(mean over all tokens of block l's output) @ proj) · t."""
    scores = []
    for li in layers:
        pooled = trace.outputs[li].mean(dim=1)  # CLS and patches
        scores.append(features(visual, pooled) @ direction.to(pooled.dtype))
    return scores


def reference_legrad_gradients(model: torch.nn.Module, x: torch.Tensor, direction: torch.Tensor,
                               start_layer: int = -2) -> tuple[list[int], list[torch.Tensor]]:
    """(layers, [∂s_l/∂A_l]) for l >= start_layer; each layer's gradient from its own s_l only."""
    visual = prepare_visual(model)
    with torch.enable_grad():
        trace = vanilla_trace(visual, x)
        depth = len(trace.A)
        layers = list(range(layer_index(start_layer, depth), depth))
        scores = legrad_layer_scores(visual, trace, direction, layers)
        grads = [torch.autograd.grad(s.sum(), trace.A[li], retain_graph=True)[0] for li, s in zip(layers, scores, strict=True)]
    return layers, grads


def reference_legrad(model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                     start_layer: int = -2) -> torch.Tensor:
    """[B, T, gh, gw]: Σ_l mean over heads and all query rows of ReLU(∂s_l/∂A_l), patch columns."""
    visual = prepare_visual(model)
    grid = tuple(visual.conv1(x[:1].to(torch.float64)).shape[-2:])
    maps = []
    for t in directions.to(torch.float64):
        _, grads = reference_legrad_gradients(model, x, t, start_layer)
        total = sum(torch.relu(G).mean(dim=(1, 2))[:, 1:] for G in grads)  # [B, P]
        maps.append(grid_map(total, grid))
    return torch.stack(maps, dim=1)


# ----------------------------------------------------------------------------------------------------------------
# dispatcher
# ----------------------------------------------------------------------------------------------------------------
def reference_raw(name: str, model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                  **params) -> torch.Tensor:
    """Raw maps [B, T, gh, gw] (float64) of method ``name`` for the unit texts ``directions`` [T, E]."""
    directions = directions.detach().to(torch.float64)
    x = x.detach()
    POSITIONAL["mode"] = METHOD_POSITIONAL.get(name, "bicubic")
    try:
        return _reference_raw(name, model, x, directions, **params)
    finally:
        POSITIONAL["mode"] = "bicubic"


def _reference_raw(name: str, model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                   **params) -> torch.Tensor:
    if name in DENSE_METHODS:
        return reference_dense(name, model, x, directions, **params)
    n_texts = directions.shape[0]
    if name == "raw-attention":
        _check_params(name, params, {})
        single = reference_raw_attention(model, x)
        return single[:, None].expand(-1, n_texts, -1, -1).clone()
    if name == "rollout":
        single = reference_rollout(model, x, **_check_params(name, params, dict(start_layer=0)))
        return single[:, None].expand(-1, n_texts, -1, -1).clone()
    if name == "gradcam":
        return reference_gradcam(model, x, directions, **_check_params(name, params, dict(layer=-1)))
    if name == "chefer":
        return reference_chefer(model, x, directions, **_check_params(name, params, dict(start_layer=0)))
    if name == "legrad":
        return reference_legrad(model, x, directions, **_check_params(name, params, dict(start_layer=-2)))
    raise ValueError(f"unknown method {name!r}")


# ----------------------------------------------------------------------------------------------------------------
# small random models for the tests (not part of the oracle)
# ----------------------------------------------------------------------------------------------------------------
TEXT_CFG = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)


def build_tiny_clip(layers: int = 8, ls_init_value: float | None = None, image_size=64, patch_size: int = 16,
                    width: int = 64, head_width: int = 16, seed: int = 0):
    """A small random open_clip CLIP; 1-D parameters (biases, LN affines, layer-scale, class embedding, logit
    scale) perturbed so that they are not 0/1."""
    import open_clip

    vision_cfg = dict(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                      head_width=head_width)
    if ls_init_value is not None:
        vision_cfg["ls_init_value"] = ls_init_value
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(32, vision_cfg=vision_cfg, text_cfg=TEXT_CFG).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def random_images(batch: int = 2, hw=(64, 64), seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *hw, generator=g)


def random_directions(n: int, dim: int = 32, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
