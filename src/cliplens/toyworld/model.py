"""ToyCLIP: a small CLIP whose image tower is a standard pre-LN CLIP ViT.

The image tower maps one-to-one onto :class:`cliplens.core.view.VisionView`:

    patch conv (stride = patch, no bias) -> prepend class_embedding -> + positional_embedding
    -> ln_pre -> blocks [x += attn(ln_1(x)); x += mlp(ln_2(x))] -> ln_post(x[:, 0]) @ proj

Each block stores a fused ``in_proj_weight`` ``[3D, D]`` / ``in_proj_bias`` ``[3D]`` (like
open_clip / ``nn.MultiheadAttention``), an ``out_proj`` Linear, and an MLP ``fc1 -> GELU -> fc2``.
:meth:`ToyCLIP.vision_view` slices those parameters (views, never copies).

The text tower is a tiny causal transformer (same block type, causal attention), pooled at the
``<eot>`` token, then ``ln_final`` and ``text_projection``.

``pool="map"`` (``toy-siglip``) makes the image tower SigLIP's: no CLS token, every token through ``ln_post``,
then attention pooling with a learned probe (:class:`AttentionPool`, the MAP head: probe attention over all
tokens, out-projection, ``+ MLP(LN(·))``), and ``loss="sigmoid"`` trains it with SigLIP's pairwise sigmoid loss
and a learned logit bias.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cliplens.core.view import BlockView, LayerNormView, VisionView
from cliplens.toyworld.tokenizer import ToyTokenizer

__all__ = ["ToyCLIPConfig", "ToyCLIP", "AttentionPool", "Block", "load_toy_clip", "save_toy_clip", "with_pooling",
           "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = "toy-clip.safetensors"


@dataclass
class ToyCLIPConfig:
    """All sizes of a ToyCLIP (round-trips through JSON)."""

    name: str = "toy-clip"
    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    layers: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 128
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_mlp_ratio: float = 4.0
    context_length: int = 48
    #: text pooling: "mean" over <sot>..<eot> (every word feeds the embedding directly, which lets
    #: the text tower learn shape/size/position words quickly) or "eot" (CLIP's pooling)
    text_pool: str = "mean"
    vocab_size: int = 128
    eot_id: int = 2
    pad_id: int = 0
    ln_eps: float = 1e-5
    init_logit_scale: float = math.log(1 / 0.07)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    #: image pooling: "cls" (CLIP: ln_post at the CLS token, then proj) or "map" (SigLIP: ln_post at every
    #: token, then attention pooling with a learned probe over ``pool_heads`` heads; no CLS token, no proj)
    pool: str = "cls"
    pool_heads: int = 4
    #: training loss: "softmax" (CLIP's InfoNCE) or "sigmoid" (SigLIP's pairwise sigmoid, with a logit bias)
    loss: str = "softmax"
    init_logit_bias: float = -10.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyCLIPConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> ToyCLIPConfig:
        return cls.from_dict(json.loads(s))


class Block(nn.Module):
    """Pre-LN transformer block with a fused qkv projection and a GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-5) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads = width, heads
        hidden = int(round(width * mlp_ratio))
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def attention(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attention(self.ln_1(x), causal=causal)
        x = x + self.fc2(F.gelu(self.fc1(self.ln_2(x))))
        return x


class AttentionPool(nn.Module):
    """SigLIP's MAP head: a learned probe attends over all tokens (``heads`` heads, fused q/k/v like
    ``nn.MultiheadAttention``), out-projection to ``out_dim``, then ``x + MLP(LN(x))`` (tanh GELU)."""

    def __init__(self, width: int, heads: int, out_dim: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(width ** -0.5 * torch.randn(width))
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, out_dim)
        self.norm = nn.LayerNorm(out_dim, eps=eps)
        hidden = int(round(out_dim * mlp_ratio))
        self.fc1 = nn.Linear(out_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, y: Tensor) -> Tensor:
        b, n, d = y.shape
        h = self.heads
        w, bias = self.in_proj_weight, self.in_proj_bias
        q = F.linear(self.probe, w[:d], bias[:d]).view(1, h, 1, d // h).expand(b, h, 1, d // h)
        k = F.linear(y, w[d:2 * d], bias[d:2 * d]).view(b, n, h, d // h).transpose(1, 2)
        v = F.linear(y, w[2 * d:], bias[2 * d:]).view(b, n, h, d // h).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)[:, :, 0].reshape(b, d)
        o = self.out_proj(o)
        return o + self.fc2(F.gelu(self.fc1(self.norm(o)), approximate="tanh"))


class ToyCLIP(nn.Module):
    """A small CLIP: ViT image tower + causal text tower, joint space of ``embed_dim``."""

    def __init__(self, config: ToyCLIPConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or ToyCLIPConfig()
        if c.image_size % c.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        d = c.width
        # ---- image tower
        if c.pool not in ("cls", "map") or c.loss not in ("softmax", "sigmoid"):
            raise ValueError(f"pool must be 'cls' or 'map' and loss 'softmax' or 'sigmoid'; got {c.pool!r}, {c.loss!r}")
        self.conv1 = nn.Conv2d(3, d, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        scale = d**-0.5
        cls = c.pool == "cls"
        self.class_embedding = nn.Parameter(scale * torch.randn(d)) if cls else None
        self.positional_embedding = nn.Parameter(scale * torch.randn(int(cls) + c.grid_size**2, d))
        self.ln_pre = nn.LayerNorm(d, eps=c.ln_eps)
        self.blocks = nn.ModuleList(Block(d, c.heads, c.mlp_ratio, c.ln_eps) for _ in range(c.layers))
        self.ln_post = nn.LayerNorm(d, eps=c.ln_eps)
        self.proj = nn.Parameter(scale * torch.randn(d, c.embed_dim)) if cls else None
        self.attn_pool = None if cls else AttentionPool(d, c.pool_heads, c.embed_dim)
        # ---- text tower
        t = c.text_width
        self.token_embedding = nn.Embedding(c.vocab_size, t)
        self.text_positional_embedding = nn.Parameter(0.01 * torch.randn(c.context_length, t))
        self.text_blocks = nn.ModuleList(
            Block(t, c.text_heads, c.text_mlp_ratio, c.ln_eps) for _ in range(c.text_layers)
        )
        self.ln_final = nn.LayerNorm(t, eps=c.ln_eps)
        self.text_projection = nn.Parameter(t**-0.5 * torch.randn(t, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(c.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(c.init_logit_bias))) if c.loss == "sigmoid" else None
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        # residual-branch output layers start small (GPT-2 style) for stable training
        for blk in list(self.blocks) + list(self.text_blocks):
            nn.init.normal_(blk.out_proj.weight, std=0.02 / math.sqrt(2 * max(c.layers, 1)))
            nn.init.normal_(blk.fc2.weight, std=0.02 / math.sqrt(2 * max(c.layers, 1)))
            nn.init.zeros_(blk.out_proj.bias)
            nn.init.zeros_(blk.fc2.bias)

    # ------------------------------------------------------------------ image
    def image_tokens(self, pixels: Tensor) -> Tensor:
        """Patch tokens (+ CLS first for CLS pooling) + positions, before ``ln_pre`` -> ``[B, (1+)N, D]``."""
        x = self.conv1(pixels.to(self.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        if self.class_embedding is not None:
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        return x + self.positional_embedding.to(x.dtype)

    def encode_image(self, pixels: Tensor, normalize: bool = False) -> Tensor:
        """Normalised pixels ``[B, 3, S, S]`` -> image embeddings ``[B, E]``."""
        x = self.ln_pre(self.image_tokens(pixels))
        for blk in self.blocks:
            x = blk(x)
        z = self.ln_post(x[:, 0]) @ self.proj if self.attn_pool is None else self.attn_pool(self.ln_post(x))
        return F.normalize(z, dim=-1) if normalize else z

    # ------------------------------------------------------------------- text
    def encode_text(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        """Token ids ``[B, ctx]`` (from the toy tokenizer) -> text embeddings ``[B, E]``.

        Pooling (``config.text_pool``): the mean of the final-layer tokens from ``<sot>`` to the first
        ``<eot>`` (default), or the ``<eot>`` token alone; tokens after ``<eot>`` never matter.
        """
        tokens = tokens.to(self.token_embedding.weight.device)
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.text_positional_embedding[:n]
        for blk in self.text_blocks:
            x = blk(x, causal=True)
        x = self.ln_final(x)
        is_eot = tokens == self.config.eot_id
        idx = torch.where(is_eot.any(1), is_eot.float().argmax(1), torch.full_like(tokens[:, 0], n - 1))
        if self.config.text_pool == "eot":
            pooled = x[torch.arange(x.shape[0], device=x.device), idx]
        else:  # "mean": average of the (causal, contextualised) tokens <sot> .. <eot>
            keep = (torch.arange(n, device=x.device)[None, :] <= idx[:, None]).to(x.dtype)
            pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        z = pooled @ self.text_projection
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, pixels: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (normalised image embeddings, normalised text embeddings, logit scale exp)."""
        return (
            self.encode_image(pixels, normalize=True),
            self.encode_text(tokens, normalize=True),
            self.logit_scale.exp(),
        )

    # ------------------------------------------------------------------- view
    def vision_view(self) -> VisionView:
        """A :class:`cliplens.core.view.VisionView` referencing this model's parameters."""
        c = self.config
        d = c.width

        def ln(m: nn.LayerNorm) -> LayerNormView:
            return LayerNormView(m.weight, m.bias, m.eps)

        blocks = []
        for b in self.blocks:
            w, bias = b.in_proj_weight, b.in_proj_bias
            blocks.append(
                BlockView(
                    ln_1=ln(b.ln_1),
                    q_weight=w[:d], k_weight=w[d : 2 * d], v_weight=w[2 * d :],
                    q_bias=bias[:d], k_bias=bias[d : 2 * d], v_bias=bias[2 * d :],
                    out_weight=b.out_proj.weight, out_bias=b.out_proj.bias,
                    ln_2=ln(b.ln_2),
                    fc1_weight=b.fc1.weight, fc1_bias=b.fc1.bias,
                    fc2_weight=b.fc2.weight, fc2_bias=b.fc2.bias,
                    num_heads=c.heads, activation="gelu",
                    qkv_weight=w, qkv_bias=bias,
                )
            )
        head = None
        if self.attn_pool is not None:
            from cliplens.core.heads import MapHead

            p = self.attn_pool
            w, bias = p.in_proj_weight, p.in_proj_bias
            head = MapHead(norm=ln(self.ln_post), probe=p.probe, q_weight=w[:d], q_bias=bias[:d],
                           k_weight=w[d:2 * d], k_bias=bias[d:2 * d], v_weight=w[2 * d:], v_bias=bias[2 * d:],
                           out_weight=p.out_proj.weight, out_bias=p.out_proj.bias, num_heads=p.heads,
                           mlp_norm=ln(p.norm), fc1_weight=p.fc1.weight, fc1_bias=p.fc1.bias,
                           fc2_weight=p.fc2.weight, fc2_bias=p.fc2.bias, activation="gelu_tanh")
        return VisionView(
            patch_weight=self.conv1.weight,
            patch_bias=None,
            class_embedding=self.class_embedding,
            positional_embedding=self.positional_embedding,
            ln_pre=ln(self.ln_pre),
            blocks=tuple(blocks),
            ln_post=ln(self.ln_post) if head is None else None,
            proj=self.proj,
            image_size=(c.image_size, c.image_size),
            source=f"toy:{c.name}",
            head=head,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------- pixels in
    def normalize_pixels(self, images: Tensor) -> Tensor:
        """uint8 ``[B, H, W, 3]`` (or float in [0, 1] ``[B, 3, H, W]``) -> normalised input."""
        if images.dtype == torch.uint8:
            x = images.permute(0, 3, 1, 2).float() / 255.0
        else:
            x = images.float()
        mean = torch.tensor(self.config.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.conv1.weight.device)


def with_pooling(model: ToyCLIP, *, pool: str, loss: str, name: str, seed: int = 0) -> ToyCLIP:
    """A new ToyCLIP with ``pool``/``loss`` that starts from ``model``'s weights: the blocks, ``ln_pre``,
    ``ln_post`` and the whole text tower are copied; going to ``pool="map"`` drops the CLS token (and its
    positional row) and the projection, and the attention pooling starts random (from ``seed``)."""
    from dataclasses import replace

    cfg = replace(model.config, pool=pool, loss=loss, name=name)
    torch.manual_seed(seed)
    new = ToyCLIP(cfg)
    state = model.state_dict()
    if model.config.pool == "cls" and pool == "map":
        state["positional_embedding"] = state["positional_embedding"][1:]
    own = new.state_dict()
    new.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return new


def save_toy_clip(model: ToyCLIP, path: str, vocab: list[str], info: dict[str, Any] | None = None) -> None:
    """Save weights (safetensors, config + vocab in metadata) and a JSON sidecar next to it."""
    from pathlib import Path

    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"config": model.config.to_json(), "vocab": json.dumps(vocab)}
    save_file(state, str(path), metadata=meta)
    side = {"config": model.config.to_dict(), "vocab": vocab}
    side.update(info or {})
    Path(path).with_suffix(".json").write_text(json.dumps(side, indent=2, sort_keys=False) + "\n")


def load_toy_clip(path: Any = None, device: str | torch.device = "cpu") -> tuple[ToyCLIP, Any]:
    """Load a ToyCLIP and its tokenizer; the shipped default weights when ``path`` is None."""
    from importlib import resources

    from safetensors import safe_open
    from safetensors.torch import load_file

    if path is None:
        ref = resources.files("cliplens.toyworld") / "weights" / DEFAULT_WEIGHTS
        with resources.as_file(ref) as p:
            return load_toy_clip(p, device=device)
    path = str(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta or "vocab" not in meta:
        raise ValueError(f"{path} has no toy-clip config/vocab metadata")
    cfg = ToyCLIPConfig.from_json(meta["config"])
    model = ToyCLIP(cfg)
    model.load_state_dict(load_file(path))
    model.eval().to(device)
    tok = ToyTokenizer(json.loads(meta["vocab"]), context_length=cfg.context_length)
    return model, tok
