"""The pooling head: how the last residual stream becomes the image embedding, and its exact linearisation.

A head reads the final tokens ``x`` ``[B, N, D]`` and returns the embedding ``[B, E]`` (the plan's last step).
Each kind states its own decomposition rule through :meth:`PoolHead.readout`: with the head's normalisation
statistics and pooling weights frozen at their values in the real forward, the embedding is

    z = Σ_r  (ρ_r(x) ⊙ γ · s_r  −  m_r · s_r · γ  +  w_r · β) · M_r   +   b   +   z_nl

with one term per *readout* ``r`` (one for CLS or mean pooling; one per pooling head for attention pooling):

* ``ρ_r(x) = Σ_n ω[r, n] · x_n`` — a weighted sum of the tokens (``ω`` includes the per-token ``1/σ_n`` of a
  LayerNorm applied to every token before pooling; then ``s_r = 1``);
* ``s_r`` — the readout's common scale (``1/σ`` of a LayerNorm applied once, to the CLS token or to the pooled
  vector), ``m_r`` its mean term (``μ``, or ``Σ_n ω[r, n] μ_n`` for per-token statistics), ``w_r = Σ_n a[r, n]``
  the sum of the raw pooling weights (1 for CLS, mean and softmax pooling);
* ``M_r = in_r · out_r`` — the readout's linear map to the joint space (``in_r`` ``[D, k]``, identity when
  absent; ``out_r`` ``[k, E]``), ``γ``/``β`` the LayerNorm's affine (absent: 1 and 0), ``b`` a constant;
* ``z_nl`` — what is not linear (SigLIP's ``MLP(LN(·))`` after the pooling attention), one lumped term.

Because ``ρ_r`` is linear in ``x`` and ``x`` is a sum of components (the embedding term, each attention
layer, each MLP), every component maps to the joint space on its own (:mod:`cliplens.decomposition.algebra`,
the one place that writes the formula out), and the parts sum to ``z`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from cliplens.core.layers import LayerNormView

__all__ = ["AttentionPooling", "PoolHead", "Readout"]


@dataclass
class Readout:
    """A head at one forward, frozen (see the module docs). ``N`` is the number of tokens the head read."""

    #: ``[B, R, N]`` the raw pooling weights ``a`` (attention probabilities; 1 at CLS; 1/N for a mean)
    pooling: Tensor
    #: ``[B, N]`` each token's normalisation factor ``t_n`` (``1/σ_n`` when the norm is applied to every token
    #: before pooling, else 1) and ``[B, N]`` its normalisation mean ``μ_n`` (for a norm applied once, its ``μ``
    #: at every token)
    token_scale: Tensor
    token_mean: Tensor
    #: ``[B, R]`` the common scale ``s_r`` (``1/σ`` of a norm applied once, else 1)
    scale: Tensor
    #: ``[B, E]`` the lumped nonlinear part (``None``: the head is affine)
    nonlinear: Tensor | None = None

    @property
    def num_readouts(self) -> int:
        return int(self.pooling.shape[1])

    @property
    def weights(self) -> Tensor:
        """``[B, R, N]`` ``ω = a · t``: the token weights a component is read with."""
        return self.pooling * self.token_scale[:, None]

    @property
    def mean(self) -> Tensor:
        """``[B, R]`` ``m_r = Σ_n ω[r, n] μ_n``."""
        return (self.weights * self.token_mean[:, None]).sum(-1)


class PoolHead:
    """Base class of pooling heads (one file per kind in :mod:`cliplens.core.heads`)."""

    #: the kind's name (``cls``, ``mean``, ``map``, ``attnpool``)
    kind: ClassVar[str] = ""
    #: whether the head reads only the CLS token (the decomposition then records the CLS position only)
    reads_cls_only: ClassVar[bool] = False
    #: whether the head is affine once its statistics and pooling weights are frozen (``z_nl`` is 0)
    affine: ClassVar[bool] = True

    # ---- the weights the decomposition maps through --------------------------------------------------
    @property
    def norm(self) -> LayerNormView | None:
        """The LayerNorm applied before the readout maps (per token or once); ``None`` when there is none."""
        return None

    @property
    def num_readouts(self) -> int:
        return 1

    def readout_in(self) -> Tensor | None:
        """``[R, D, k]`` the first factor of each readout's map (``None``: identity, ``k = D``)."""
        return None

    def readout_out(self) -> Tensor:
        """``[R, k, E]`` the second factor of each readout's map."""
        raise NotImplementedError

    def bias(self) -> Tensor | None:
        """``[E]`` the constant ``b`` (``None``: zero)."""
        return None

    @property
    def embed_dim(self) -> int:
        return int(self.readout_out().shape[-1])

    # ---- running it ------------------------------------------------------------------------------------
    def __call__(self, x: Tensor, rec: Any = None) -> Tensor:
        """The embedding ``[B, E]`` of the final tokens ``x`` ``[B, N, D]`` (recording the head's taps on
        ``rec``, a :class:`cliplens.core.hooks.Recorder`)."""
        raise NotImplementedError

    def dense(self, x: Tensor) -> Tensor:
        """``[B, N, E]``: every token through the head on its own (each kind says how in its docstring)."""
        raise NotImplementedError

    def readout(self, x: Tensor) -> Readout:
        """The frozen linearisation of the head at the final tokens ``x`` ``[B, N, D]`` (for a head that reads
        only the CLS token, ``x`` may hold that token alone)."""
        raise NotImplementedError

    def parameters(self) -> list[Tensor]:
        """Every tensor the head reads (fingerprints, storage checks)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What reports and stores record about the head."""
        return {"kind": self.kind, "readouts": self.num_readouts, "affine": self.affine}

    def meta(self) -> list[Any]:
        """The head's settings that are not tensors (for the weights' fingerprint)."""
        ln = self.norm
        return [self.kind, self.num_readouts] + ([ln.eps, ln.compute_fp32] if ln is not None else [])


class AttentionPooling(PoolHead):
    """What the attention-pooling heads share (a learned probe, :mod:`.map`; a mean-token query, :mod:`.attnpool`):
    one readout per pooling head, whose map is that head's value slice then its slice of the out-projection,
    and the constant ``W_out · b_v + b_out`` (the pooling weights of each head sum to 1). Subclasses set
    ``v_weight``, ``v_bias``, ``out_weight``, ``out_bias`` (``F.linear`` convention) and ``num_heads``."""

    v_weight: Tensor
    v_bias: Tensor | None
    out_weight: Tensor
    out_bias: Tensor | None
    num_heads: int

    @property
    def num_readouts(self) -> int:
        return self.num_heads

    @property
    def head_dim(self) -> int:
        return int(self.v_weight.shape[0]) // self.num_heads

    def readout_in(self) -> Tensor:
        return self.v_weight.reshape(self.num_heads, self.head_dim, -1).transpose(1, 2)  # [Hp, D, d]

    def readout_out(self) -> Tensor:
        return self.out_weight.t().reshape(self.num_heads, self.head_dim, -1)  # [Hp, d, E]

    def bias(self) -> Tensor | None:
        terms = [t for t in (None if self.v_bias is None else self.out_weight @ self.v_bias, self.out_bias)
                 if t is not None]
        return sum(terms) if terms else None  # type: ignore[return-value]

    @property
    def embed_dim(self) -> int:
        return int(self.out_weight.shape[0])

    def split(self, t: Tensor) -> Tensor:
        """``[B, N, Hp·d]`` -> ``[B, Hp, N, d]``."""
        B, N = t.shape[:2]
        return t.reshape(B, N, self.num_heads, -1).transpose(1, 2)


def ln_stats(ln: LayerNormView, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` over the last axis as ``ln`` computes them (float32 for half inputs when it does)."""
    xf = x.float() if ln.compute_fp32 else x
    return xf.mean(-1), torch.sqrt(xf.var(-1, unbiased=False) + ln.eps)
