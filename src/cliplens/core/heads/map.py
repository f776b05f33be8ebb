"""Attention pooling with a learned probe (SigLIP and SigLIP 2's "MAP" head; PE-Core's pooling).

Every token goes through a LayerNorm of its own (SigLIP's ``post_layernorm``), a learned probe attends over
all of them with ``H_p`` heads, the heads' outputs are concatenated and projected, and an MLP is added on top:

    y_n = LN(x_n),   α[h, n] = softmax_n(q_h · k_h(y_n) / √d),   o = W_out · concat_h(Σ_n α[h, n] v_h(y_n)) + b_out,
    z = o + MLP(LN₂(o)).

Decomposition rule: one readout per pooling head ``h`` (``a = α[h]``, per-token statistics frozen: ``ω = α/σ_n``),
``M_h = W_v^h · W_out^h`` (``in_h`` ``[D, d]``, ``out_h`` ``[d, E]``), ``b = W_out · b_v + b_out``; the attention
part splits exactly per pooling head × source token and, through the frozen per-token LayerNorm, back over
source layers. The MLP is nonlinear: one lumped term (``z_nl = MLP(LN₂(o))``), its share reported.

An optional projection after it (PE-Core: the trunk's head Linear, ``z' = P z + p``) is folded in: each readout's
second factor becomes ``out_h Pᵀ``, the constant ``P b + p``, the lumped part ``P · MLP(LN₂(o))``.

Dense output (every token through the head on its own): the probe's attention restricted to that one token, so
``α = 1`` on it (TextRegion's rule for a region of one token): ``o_n = W_out(v(y_n)) + b_out``,
``z_n = o_n + MLP(LN₂(o_n))``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.heads.base import AttentionPooling, Readout, ln_stats
from cliplens.core.layers import LayerNormView, apply_activation

__all__ = ["MapHead"]


class MapHead(AttentionPooling):
    """SigLIP's multihead attention pooling head (see the module docs); weights follow ``F.linear``."""

    kind: ClassVar[str] = "map"
    affine: ClassVar[bool] = False

    def __init__(self, *, norm: LayerNormView, probe: Tensor, q_weight: Tensor, q_bias: Tensor | None,
                 k_weight: Tensor, k_bias: Tensor | None, v_weight: Tensor, v_bias: Tensor | None,
                 out_weight: Tensor, out_bias: Tensor | None, num_heads: int, mlp_norm: LayerNormView,
                 fc1_weight: Tensor, fc1_bias: Tensor | None, fc2_weight: Tensor, fc2_bias: Tensor | None,
                 activation: str = "gelu_tanh", proj_weight: Tensor | None = None,
                 proj_bias: Tensor | None = None) -> None:
        self._norm = norm
        #: ``[E', E]`` an optional projection after the MLP (``F.linear`` convention) and its bias
        self.proj_weight, self.proj_bias = proj_weight, proj_bias
        self.probe = probe.reshape(-1)  # [D]
        self.q_weight, self.q_bias = q_weight, q_bias
        self.k_weight, self.k_bias = k_weight, k_bias
        self.v_weight, self.v_bias = v_weight, v_bias
        self.out_weight, self.out_bias = out_weight, out_bias
        self.num_heads = int(num_heads)
        self.mlp_norm = mlp_norm
        self.fc1_weight, self.fc1_bias = fc1_weight, fc1_bias
        self.fc2_weight, self.fc2_bias = fc2_weight, fc2_bias
        self.activation = activation

    # ---- weights ------------------------------------------------------------------------------------------
    @property
    def norm(self) -> LayerNormView:
        return self._norm

    def readout_out(self) -> Tensor:
        out = super().readout_out()  # [Hp, d, E]
        return out if self.proj_weight is None else out @ self.proj_weight.t()

    def bias(self) -> Tensor | None:
        const = super().bias()
        if self.proj_weight is None:
            return const
        if const is None:
            return self.proj_bias
        return self.proj_weight @ const + (0 if self.proj_bias is None else self.proj_bias)  # type: ignore[operator]

    @property
    def embed_dim(self) -> int:
        return int((self.out_weight if self.proj_weight is None else self.proj_weight).shape[0])

    def finish(self, o: Tensor) -> Tensor:
        """The embedding from the pooled, out-projected vector ``o``: ``o + MLP(LN₂(o))``, then the projection."""
        z = o + self.mlp(o)
        return z if self.proj_weight is None else F.linear(z, self.proj_weight, self.proj_bias)

    # ---- running it -----------------------------------------------------------------------------------------
    def pattern(self, y: Tensor) -> Tensor:
        """``[B, Hp, N]``: the probe's attention over the normalised tokens ``y``."""
        q = F.linear(self.probe.to(y.dtype), self.q_weight, self.q_bias).reshape(self.num_heads, 1, -1)
        k = self.split(F.linear(y, self.k_weight, self.k_bias))  # [B, Hp, N, d]
        logits = torch.matmul(q.float() if y.dtype in (torch.float16, torch.bfloat16) else q,
                              k.float().transpose(-1, -2) if y.dtype in (torch.float16, torch.bfloat16)
                              else k.transpose(-1, -2)) * self.head_dim ** -0.5
        return logits.softmax(-1)[:, :, 0].to(y.dtype)

    def mlp(self, o: Tensor) -> Tensor:
        """The lumped nonlinear part ``MLP(LN₂(o))`` of the pooled vector ``o`` ``[B, E]``."""
        h = apply_activation(F.linear(self.mlp_norm(o), self.fc1_weight, self.fc1_bias), self.activation)
        return F.linear(h, self.fc2_weight, self.fc2_bias)

    def pool(self, y: Tensor, alpha: Tensor) -> Tensor:
        """``o`` ``[B, E]``: the normalised tokens ``y`` pooled with the pattern ``alpha`` ``[B, Hp, N]`` and
        out-projected (before the MLP)."""
        v = self.split(F.linear(y, self.v_weight, self.v_bias))  # [B, Hp, N, d]
        o = torch.matmul(alpha[:, :, None], v)[:, :, 0]  # [B, Hp, d]
        return F.linear(o.reshape(o.shape[0], -1), self.out_weight, self.out_bias)

    def __call__(self, x: Tensor, rec: Any = None) -> Tensor:
        y = self._norm(x)
        alpha = self.pattern(y)
        if rec is not None and rec.wants("head.pattern"):
            alpha = rec("head.pattern", alpha)
        o = self.pool(y, alpha)
        if rec is not None and rec.wants("pooled"):
            o = rec("pooled", o)
        return self.finish(o)

    def dense(self, x: Tensor) -> Tensor:
        y = self._norm(x)
        o = F.linear(F.linear(y, self.v_weight, self.v_bias), self.out_weight, self.out_bias)
        return self.finish(o)

    def readout(self, x: Tensor) -> Readout:
        y = self._norm(x)
        alpha = self.pattern(y)
        o = self.pool(y, alpha)
        mean, std = ln_stats(self._norm, x)
        B = x.shape[0]
        return Readout(pooling=alpha.to(mean.dtype), token_scale=1 / std, token_mean=mean,
                       scale=torch.ones(B, self.num_heads, dtype=mean.dtype, device=mean.device),
                       nonlinear=self._lumped(o).to(mean.dtype))

    def _lumped(self, o: Tensor) -> Tensor:
        m = self.mlp(o)
        return m if self.proj_weight is None else F.linear(m, self.proj_weight)

    def parameters(self) -> list[Tensor]:
        out = [self.probe, self.q_weight, self.k_weight, self.v_weight, self.out_weight, self.fc1_weight,
               self.fc2_weight]
        out += [t for t in (self.q_bias, self.k_bias, self.v_bias, self.out_bias, self.fc1_bias, self.fc2_bias,
                            self._norm.weight, self._norm.bias, self.mlp_norm.weight, self.mlp_norm.bias,
                            self.proj_weight, self.proj_bias)
                if t is not None]
        return out

    def meta(self) -> list[Any]:
        return super().meta() + [self.activation, self.mlp_norm.eps]
