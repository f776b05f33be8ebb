"""CASS (Kim et al., CVPR 2025): DINO's attention graph distilled into CLIP's last block, and object-level context.

Paper: "Distilling Spectral Graph for Object-Context Aware Open-Vocabulary Semantic Segmentation", Sec. 3.2
(spectral object-level context distillation) and Sec. 3.3 (object presence-driven object-level context). Code
followed: github.com/MICV-yonsei/CASS@228ecdd, ``clip/model.py`` (``VisionTransformer.forward``, ``custom_attn``,
``_apply_spectral_strategy``, ``optimal_q``, ``_scale_singular_values``) and ``cass_segmentor.py``
(``forward_feature``, ``hierarchical_prompt``, ``hierarchical_clustering``).

Per image, with ``s = d_head^-½``, CLIP's last-block keys ``k_h`` of the patches (CLS dropped) and the second
backbone's (default DINO ViT-B/8) last-block keys, resized bilinearly to CLIP's grid and min-max rescaled to the
range of CLIP's keys, ``k'_h``:

1. ``A_h = s k_h k_hᵀ`` (CLIP) and ``D_h = s k'_h k'_hᵀ`` (the backbone), per head.
2. Spectra: the ``k_eigen = 20`` largest eigenvalues of each, L2-normalised; ``cost_ij = 1 − W(p(D_i), p(A_j))`` with
   ``p`` the L1-normalised spectrum and ``W`` the sum of absolute differences of the sorted values; heads are
   matched by the assignment that minimises the total cost (Hungarian); for the pair ``(i, j)``: ``w = 1 − cost_ij``.
3. ``D_j`` is replaced by its rank-``q`` approximation (``q = 10``; singular values rescaled linearly from
   ``[min, max]`` to ``[½ min, 1½ max]`` unless ``rescale=False``), its diagonal zeroed, min-max rescaled to the range
   of ``A_i``; the head's graph is ``G = (10 w D̃ + A_i) / (10 w + 1)``.
4. The last block outputs ``O(softmax(G + Ω) v)`` only (no residual, no MLP), ``Ω`` NACLIP's Gaussian window
   (σ = 5 patches); each patch through ``ln_post`` and the projection.
5. Object-level context (from the text side): the queries are clustered (Ward linkage on cosine distances, cut at
   ``h_threshold``); in each cluster, the query most similar to the image's own embedding ``g`` (the unmodified
   forward's CLS) gets ``normalize((1 − α) t + α m)``, ``m`` the normalised mean of the two patch features most
   similar to ``t`` (``α = mean_vector_weight``); the map is ``(1 − λ) cos(f, t') + λ cos(g, t)``
   (``λ = global_semantics_weight``).

Defaults as the repository's segmentor runs ViT-B/16 (``h_threshold = mean_vector_weight = global_semantics_weight
= 0``: no object-level context; its configs set them per data set: ``segment-eval --preset cass``), CLIP's
positional table resized by DINO's scale-factor rule at other grids, the second backbone's by its torch.hub rule.

Deviations, and why:

* The rank-``q`` approximation is the exact truncated SVD; the repository uses ``torch.svd_lowrank`` (randomised,
  two power iterations: its result changes from run to run). Its ``optimal_q`` always returns the ``q = 10``
  factors it starts with (the energy it tests is relative to those 10 values), so the rank is 10.
* The backbone reads the window re-normalised with its own statistics; the repository un-normalises CLIP's pixels
  with ImageNet statistics (a mismatch), rounds them to 8-bit and resizes them with PIL to a square of the short
  side (here: bilinear, on the pixels).
* ``g`` is the window's own CLS embedding; the repository uses the whole image's (except on Cityscapes), which
  equals it where it runs whole images (VOC21).
* The text clusters come from the targets of each call (the repository: its class file's queries).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention.neighbourhood import gaussian_prior
from cliplens.core.forward import _out_proj, project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError, MissingDependencyError, install_hint
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings
from cliplens.models.vfm import VFM_POSITIONAL

__all__ = ["CASS", "spectral_graph", "text_clusters"]

#: the repository's fixed settings (clip/model.py custom_attn's config, optimal_q's initial_q, topk's k)
K_EIGEN, SCALE_FACTOR, RANK, TOP_K = 20, 10.0, 10, 2


def _scipy() -> Any:
    """scipy (the head matching, the text clusters), or one paragraph saying how to install it."""
    try:
        import scipy.cluster.hierarchy
        import scipy.optimize
        import scipy.spatial.distance
    except ImportError as e:
        raise MissingDependencyError(f"The 'cass' map needs scipy. Install it with: {install_hint('scipy', 'dino')}.") from e
    return scipy


def _minmax_to(x: Tensor, ref: Tensor) -> Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) * (ref.max() - ref.min()) + ref.min()


def spectral_graph(k: Tensor, dk: Tensor, *, rescale: bool = True) -> Tensor:
    """Steps 1-3 for one image: CLIP's keys ``k`` and the backbone's ``dk`` ``[H, N, dh]`` -> graphs ``[H, N, N]``.

    Both graphs are Gram matrices ``s X Xᵀ`` of rank at most ``dh``, so their spectra and the rank-``q``
    approximation come from the ``dh x dh`` matrices ``s Xᵀ X`` (the same non-zero eigenvalues; eigenvectors
    ``X w / √(λ/s)``): ``O(N dh²)`` instead of ``O(N³)`` per head, the same values up to rounding."""
    linear_sum_assignment = _scipy().optimize.linear_sum_assignment
    H, N, dh = k.shape
    s = dh ** -0.5
    a = k @ k.transpose(1, 2) * s
    kk, dd = k.double(), dk.double()
    vals_a = torch.linalg.eigvalsh(kk.transpose(1, 2) @ kk * s).flip(-1)  # [H, dh], descending
    vals_d, vecs_d = torch.linalg.eigh(dd.transpose(1, 2) @ dd * s)
    vals_d, vecs_d = vals_d.flip(-1), vecs_d.flip(-1)
    count = min(N, K_EIGEN)  # the N x N graph's largest eigenvalues: its rank-dh part, then zeros

    def spectrum(vals: Tensor) -> Tensor:
        top = F.pad(vals, (0, max(0, count - vals.shape[1])))[:, :count]
        return F.normalize(F.normalize(top, dim=1), p=1, dim=1).sort(-1).values

    pd, pa = spectrum(vals_d), spectrum(vals_a)
    # pair by pair, summed as the repository sums them: equal-cost matchings are common (one dominant eigenvalue makes
    # cost_ij a sum of a term in i and one in j), and the assignment among them follows the last bits of each cost
    cost = torch.stack([torch.stack([1.0 - torch.sum(torch.abs(pd[i] - pa[j])) for j in range(H)]) for i in range(H)])
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    out = torch.empty_like(a)
    for idx, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        w = float(1.0 - cost[i, j])
        lam, vec = vals_d[j, :RANK], vecs_d[j, :, :RANK]  # D_j's singular values are its eigenvalues (PSD)
        sv = lam
        if rescale:
            lo, hi = sv.min(), sv.max()
            sv = (sv - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo
        # Σ σ'_r u_r u_rᵀ with u_r = X w_r / √(λ_r / s): s · X W diag(σ'/λ) Wᵀ Xᵀ
        xw = dd[j] @ vec  # [N, RANK]
        approx = (xw * (sv / lam)) @ xw.T * s
        approx.fill_diagonal_(0.0)
        approx = _minmax_to(approx, a[i].double()).to(a.dtype)
        out[idx] = (w * SCALE_FACTOR * approx + a[i]) / (w * SCALE_FACTOR + 1.0)
    return out


def text_clusters(directions: Tensor, threshold: float) -> list[list[int]]:
    """The queries grouped by Ward linkage on cosine distances, cut at ``threshold`` (step 5)."""
    T = directions.shape[0]
    if T < 2:
        return [list(range(T))]
    scipy = _scipy()
    fcluster, linkage = scipy.cluster.hierarchy.fcluster, scipy.cluster.hierarchy.linkage
    squareform = scipy.spatial.distance.squareform
    t = F.normalize(directions.double(), dim=-1).cpu()
    dist = (1.0 - t @ t.T).clamp_min(0.0)
    dist.fill_diagonal_(0.0)
    dist = (dist + dist.T) / 2
    labels = fcluster(linkage(squareform(dist.numpy(), checks=False), method="ward"), t=threshold,
                      criterion="distance") - 1
    return [[i for i in range(T) if labels[i] == c] for c in range(int(labels.max()) + 1)]


@register_map("cass")
class CASS(MapMethod):
    """CASS's spectral graph distillation in CLIP's last block, and its object-level context (see the module docs).

    ``vfm``: the second backbone, a name (``"dino_vitb8"``, …; see :mod:`cliplens.models.vfm`) or, from Python, a
    loaded transformers model with CLIP's number of heads and width."""

    paper = ('Kim et al., "Distilling Spectral Graph for Object-Context Aware Open-Vocabulary Semantic '
             'Segmentation" (CVPR 2025)')
    code = "github.com/MICV-yonsei/CASS@228ecdd"

    own_positional = "bicubic_dino"
    second_backbone = True
    uses_all_targets = True

    def __init__(self, vfm: Any = "dino_vitb8", sigma: float = 5.0, rescale: bool = True,
                 h_threshold: float = 0.0, mean_vector_weight: float = 0.0, global_semantics_weight: float = 0.0,
                 positional: str | None = "bicubic_dino", vfm_positional: str = "hub") -> None:
        if vfm_positional not in VFM_POSITIONAL:
            raise InvalidInputError(f"CASS's vfm_positional must be one of {', '.join(VFM_POSITIONAL)}; got "
                                    f"{vfm_positional!r}")
        for name, value in (("mean_vector_weight", mean_vector_weight),
                            ("global_semantics_weight", global_semantics_weight)):
            if not 0.0 <= float(value) <= 1.0:
                raise InvalidInputError(f"CASS's {name} must be between 0 and 1, got {value}")
        super().__init__(vfm=vfm, sigma=float(sigma), rescale=bool(rescale), h_threshold=float(h_threshold),
                         mean_vector_weight=float(mean_vector_weight),
                         global_semantics_weight=float(global_semantics_weight), positional=positional,
                         vfm_positional=vfm_positional)

    def unsupported(self, model: ImageTextModel) -> str | None:
        why = super().unsupported(model)  # the backbone loads, or why not
        if why:
            return why
        bb = self.backbone(model)
        blk = model.vision.blocks[-1]
        if (bb.heads, bb.head_dim) != (blk.num_heads, blk.head_dim):
            return (f"the 'cass' map pairs the second backbone's heads with CLIP's: {bb.name!r} has {bb.heads} heads of "
                    f"{bb.head_dim}, CLIP's last block {blk.num_heads} of {blk.head_dim}; choose a backbone of "
                    "the same width (DINO ViT-B/8 or ViT-B/16 for a ViT-B CLIP)")
        return None

    def _vfm_keys(self, model: ImageTextModel, pixels: Tensor, grid: tuple[int, int]) -> Tensor:
        """The backbone's last-block patch keys on CLIP's ``grid``: ``[B, H, N, dh]``."""
        bb = self.backbone(model)
        H, W = pixels.shape[-2:]
        side = min(H, W)
        px = pixels if H == W else F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False)
        cfg = model.preprocess_config
        mean, std = (cfg.mean, cfg.std) if cfg.do_normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        out = bb(bb.normalize_from(px, mean, std), positional=self.params["vfm_positional"])
        dk = out.patches(out.k)  # [B, H, n, dh]
        B, Hh, _, dh = dk.shape
        dk = dk.permute(0, 1, 3, 2).reshape(B, Hh * dh, *out.grid)
        dk = F.interpolate(dk, size=grid, mode="bilinear", align_corners=False)
        return dk.reshape(B, Hh, dh, -1).transpose(2, 3)

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        last = view.num_layers - 1
        names = [f"blocks.{last}.attn.k", f"blocks.{last}.attn.v"]
        out = model.run(pixels, plan=self.plan_for(Plan()), names=names)  # the unmodified forward: g, k, v
        gh, gw = out.grid
        n = gh * gw
        k, v = (out[nm][:, -n:].transpose(1, 2) for nm in names)  # [B, H, N, dh] (patches only)
        dk = self._vfm_keys(model, pixels, (gh, gw)).to(k.dtype)
        omega = gaussian_prior((gh, gw), self.params["sigma"], device=k.device, dtype=k.dtype, prefix=0)
        t = texts.directions.to(k.device)
        t = t.double() if k.dtype == torch.float64 else t.float()
        g = F.normalize(out.embedding.to(t.dtype), dim=-1)  # [B, E]
        clusters = text_clusters(t, self.params["h_threshold"])
        alpha, lam = self.params["mean_vector_weight"], self.params["global_semantics_weight"]
        maps = []
        for b in range(pixels.shape[0]):
            kb = k[b]
            dkb = (dk[b] - dk[b].min()) / (dk[b].max() - dk[b].min()) * (kb.max() - kb.min()) + kb.min()
            graph = spectral_graph(kb, dkb, rescale=self.params["rescale"])
            z = (graph + omega).softmax(-1) @ v[b]  # [H, N, dh]
            tokens = project_tokens(view, _out_proj(view.blocks[last], z.transpose(0, 1)[None]))[0]
            f = F.normalize(tokens.to(t.dtype), dim=-1)  # [N, E]
            glob = g[b] @ t.T  # [T]
            adjusted = t.clone()
            for members in clusters:
                c = members[int(glob[members].argmax())]
                top = (f @ t[c]).topk(min(TOP_K, n)).indices
                m = F.normalize(f[top].mean(0), dim=0)
                adjusted[c] = F.normalize((1 - alpha) * t[c] + alpha * m, dim=0)
            scores = (f @ adjusted.T) * (1 - lam) + glob[None] * lam  # [N, T]
            maps.append(scores.T.reshape(-1, gh, gw))
        return torch.stack(maps)
