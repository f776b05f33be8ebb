"""The head atlas's data: what every analysed head does, in texts, images and regions.

For each head of a TEXTSPAN result (:mod:`cliplens.analyses.textspan`) and each of its texts:

* **scores** — every image of the store scored along the text: the head's normalised joint-space term
  (:meth:`cliplens.store.Store.head_terms`, the head's direct effect on the unit-norm image embedding)
  dotted with the text's unit embedding. The ``k`` images scoring highest and the ``k`` scoring lowest are
  shown. This reads the store only.
* **maps** — for each image shown, the joint spatial-and-text map: the head's per-source-token terms
  (normalised like the scores) projected on the same text, one value per image patch (the CLS token's term
  is kept apart). The patch values and the CLS term add up to the image's score. They come from the store's
  ``spatial`` field when the store holds that layer, otherwise from a spatial decomposition of just the
  images shown (``model.decompose(pixels, spatial=True, layers=[...])``): only they are run through the
  model again.

:func:`build_atlas` returns an :class:`Atlas` (the data); :mod:`cliplens.report.atlas` writes it as HTML
pages and PNGs. :func:`store_dataset` finds the data set the store was made from (given, or reopened from
the store's header) and checks that it is the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cliplens.analyses.textspan import HeadSpan, TextSpanResult
from cliplens.core.model import ImageTextModel
from cliplens.datasets import open_dataset
from cliplens.datasets.reopen import check_same_dataset, reopen_dataset
from cliplens.decomposition.shares import site_share
from cliplens.errors import InvalidInputError, ModelLoadError
from cliplens.store.reader import Store

__all__ = ["Atlas", "AtlasHead", "AtlasText", "ShownImage", "build_atlas", "check_heads", "choose_images",
           "store_dataset", "text_scores", "token_scores"]

#: images of the store scored at once (memory: block × heads × embed_dim × 8 bytes)
_BLOCK = 1024


@dataclass
class ShownImage:
    """One image shown for a (head, text): where it is, its score and its map."""

    row: int  # the store's row
    index: int  # the data set's index
    id: str
    label: str  # its class name ("" when unlabelled)
    score: float  # the head's normalised term · the text's unit embedding
    cls: float | None  # the CLS token's share of the score (None: the model has no CLS token)
    map: np.ndarray  # [grid_h, grid_w] each patch token's share of the score (float64)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "index": self.index, "id": self.id, "label": self.label, "score": self.score,
                "cls": self.cls, "map_min": float(self.map.min()), "map_max": float(self.map.max())}


@dataclass
class AtlasText:
    """One TEXTSPAN text of a head, with the images at both ends of its direction."""

    text: str
    fraction: float  # the share of the head's total variance that removing the text's direction removed
    cumulative: float  # … by the head's texts up to this one
    removed: float  # the variance removed (fraction × the head's total)
    pick_score: float  # the score TEXTSPAN picked it by (not a share)
    top: list[ShownImage]  # highest score first
    bottom: list[ShownImage]  # lowest score first

    @property
    def limit(self) -> float:
        """``max |value|`` over this text's maps (their common colour scale; 1 when all are zero)."""
        lim = max((float(np.abs(s.map).max()) for s in [*self.top, *self.bottom]), default=0.0)
        return lim if lim > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "share_removed": self.fraction, "cumulative_share": self.cumulative,
                "variance_removed": self.removed, "pick_score": self.pick_score, "map_limit": self.limit,
                "top": [s.to_dict() for s in self.top], "bottom": [s.to_dict() for s in self.bottom]}


@dataclass
class AtlasHead:
    layer: int
    head: int
    texts: list[AtlasText]
    total_variance: float

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}"

    @property
    def explained(self) -> float:
        return float(sum(t.fraction for t in self.texts))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "head": self.head, "explained": self.explained,
                "total_variance": self.total_variance, "texts": [t.to_dict() for t in self.texts]}


@dataclass
class Atlas:
    """Everything the atlas pages show (see the module docs)."""

    heads: list[AtlasHead]
    views: dict[int, np.ndarray]  # store row -> uint8 [h, w, 3]: the model's input, at most view_size px
    grid: tuple[int, int]  # patch tokens of the model's input (rows, columns)
    map_source: dict[int, str]  # layer -> "store" (its spatial field) or "model" (re-run on the images shown)
    images_per_text: int
    info: dict[str, Any] = field(default_factory=dict)  # store, model, data set, TEXTSPAN settings

    @property
    def layers(self) -> list[int]:
        return sorted({h.layer for h in self.heads})

    def heads_of(self, layer: int) -> list[AtlasHead]:
        return [h for h in self.heads if h.layer == layer]

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "grid": list(self.grid), "images_per_text": self.images_per_text,
                "map_source": {str(k): v for k, v in self.map_source.items()},
                "heads": [h.to_dict() for h in self.heads]}


# ---- the data set ----------------------------------------------------------------------------------

def store_dataset(store: Store, data: Any = None, *, layout: str | None = None, split: str | None = None,
                  **options: Any) -> Any:
    """The data set ``store`` was made from: ``data`` (a spec or folder as given to ``cliplens store build``,
    or a data set object), or, when ``None``, reopened from the store's header
    (:func:`cliplens.datasets.reopen.reopen_dataset`). Either way it must have the fingerprint the store
    recorded (the same ids and labels in the same order)."""
    recorded = store.header.get("dataset", {})
    if data is None:
        return reopen_dataset(recorded)
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        dataset = open_dataset(data, layout=layout, split=split, **options)
        source = f"the data set {str(data)!r}"
    else:
        dataset = data
        source = "the data set given"
    check_same_dataset(dataset, recorded, source)
    return dataset


# ---- which images --------------------------------------------------------------------------------

def check_heads(store: Store, spans: TextSpanResult) -> None:
    """Refuse a TEXTSPAN result whose heads are not all in the store, or made on more images than it has."""
    L, H = store.shape["layers"], store.shape["heads"]
    bad = [h.name for h in spans.heads if not (0 <= h.layer < L and 0 <= h.head < H)]
    if bad:
        raise InvalidInputError(f"the TEXTSPAN results name heads that the store's model does not have "
                                f"({', '.join(bad[:6])}{' …' if len(bad) > 6 else ''}; it has {L} layers of {H} heads, "
                                "L0.H0 to " f"L{L - 1}.H{H - 1}): were they computed on another store? Run "
                                f"'cliplens textspan {store.path}' to compute them on this one")
    if not spans.heads:
        raise InvalidInputError("the TEXTSPAN results hold no heads: nothing to put in an atlas")
    if spans.images > len(store):
        raise InvalidInputError(f"the TEXTSPAN results were computed on {spans.images} images but the store holds "
                                f"{len(store)}: they come from another store; run 'cliplens textspan {store.path}'")
    empty = [h.name for h in spans.heads if not h.texts]
    if empty:
        raise InvalidInputError(f"the TEXTSPAN results give no texts for {', '.join(empty[:6])}")


def text_scores(store: Store, heads: Sequence[HeadSpan], directions: Sequence[Tensor], *,
                dtype: torch.dtype = torch.float64, block: int = _BLOCK) -> list[np.ndarray]:
    """Per head, ``[images, texts]``: every store image's normalised term of that head dotted with each of
    ``directions[i]`` (``[texts, E]``, unit rows). Reads the store in blocks of ``block`` images."""
    n = len(store)
    out = [np.empty((n, d.shape[0]), dtype=np.float64) for d in directions]
    for layer in sorted({h.layer for h in heads}):
        mine = [i for i, h in enumerate(heads) if h.layer == layer]
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            terms = store.head_terms(images=rows, layers=[layer], dtype=dtype)[:, 0]  # [b, H, E]
            for i in mine:
                out[i][rows] = (terms[:, heads[i].head] @ directions[i].to(dtype).T).numpy()
    return out


def choose_images(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(top, bottom)``: the rows of the ``k`` highest scores (highest first) and of the ``k`` lowest (lowest
    first); ties keep the store's order."""
    k = max(1, min(int(k), len(scores)))
    return np.argsort(-scores, kind="stable")[:k], np.argsort(scores, kind="stable")[:k]


# ---- the maps ------------------------------------------------------------------------------------

def token_scores(store: Store, layer: int, head: int, z: Tensor, scale: Tensor, mean: Tensor, wsum: Tensor,
                 norm: Tensor, directions: Tensor) -> Tensor:
    """``[n, N, texts]``: each source token's normalised joint-space term of head ``(layer, head)``, dotted
    with each of ``directions`` (``[texts, E]``).

    ``z`` ``[n, R, N, dh]``: the head's output read out by the pooling head's readouts, split by source token, in
    head space (for CLS pooling ``α(CLS→m)·v_m``; the store's ``spatial`` field or a spatial decomposition's
    ``heads``); ``scale``, ``mean``, ``wsum`` ``[n, R]``: the pooling head's frozen readouts; ``norm`` ``[n]``: the
    image embeddings' norms. The constant part of the head's term (its share of the out-projection bias and of
    the pooling head's constant) is spread evenly over the N tokens, as in
    :meth:`cliplens.decomposition.Decomposition.head_terms`, so the tokens add up to the head's term in
    :meth:`cliplens.store.Store.head_terms` (both through :mod:`cliplens.decomposition.algebra`)."""
    L, H = store.shape["layers"], store.shape["heads"]
    jm = store.joint_map(torch.float64)
    d = directions.double().T  # [E, T]
    z, scale, mean, wsum, norm = z.double(), scale.double(), mean.double(), wsum.double(), norm.double()
    N = z.shape[2]
    per_token = jm.head_against(z, layer, head, scale, d)  # [n, N, T]
    const = (jm.head_bias([layer], scale, wsum)[:, 0] + site_share(L) * jm.total_constant(scale, mean)) @ d / H
    per_token = per_token + const[:, None, :] / N
    return per_token / norm[:, None, None]


def _view(pixels: Tensor, mean: Sequence[float], std: Sequence[float], size: int) -> np.ndarray:
    """The model's input as uint8 ``[h, w, 3]``, at most ``size`` pixels on its longer side."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = (pixels.detach().float().cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
    out = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if max(out.size) > size:
        out.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(out)


# ---- the whole atlas -----------------------------------------------------------------------------

def build_atlas(
    store: Store,
    spans: TextSpanResult,
    model: ImageTextModel,
    dataset: Any = None,
    *,
    images_per_text: int = 5,
    text_embeddings: Mapping[str, Tensor] | None = None,
    batch_size: int = 16,
    view_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> Atlas:
    """The atlas of every head of ``spans`` (see the module docs).

    Args:
        store: the store the TEXTSPAN results were computed on.
        spans: the TEXTSPAN results (:func:`~cliplens.analyses.textspan.textspan` or
            :meth:`TextSpanResult.read`).
        model: the store's model (its fingerprint is checked): embeds the texts and maps the images shown.
        dataset: the store's data set (checked by fingerprint); ``None`` reopens it from the store's header.
        images_per_text: images shown at each end of each text's direction.
        text_embeddings: text -> embedding, for texts already embedded (the rest are embedded here).
        batch_size: images decomposed at once.
        view_size: the images shown are kept at most this many pixels on their longer side.
        progress: called with ``(images done, images to do)`` while the images shown are mapped.
    """
    if images_per_text < 1:
        raise InvalidInputError(f"images per text must be at least 1, got {images_per_text}")
    check_heads(store, spans)
    recorded = store.header["model"]["fingerprint"]
    if model.fingerprint() != recorded:
        raise ModelLoadError(f"the model given ({model.name}, {model.weights}) is not the one the store was made with "
                             "(its fingerprint differs): pass the store's model")
    dataset = store_dataset(store, dataset)

    # the texts' unit directions
    known = dict(text_embeddings or {})
    missing = list(dict.fromkeys(t for h in spans.heads for t in h.texts if t not in known))
    if missing:
        known.update(zip(missing, model.encode_text(missing).float().cpu(), strict=True))
    directions = [torch.nn.functional.normalize(torch.stack([known[t].float().cpu() for t in h.texts]).double(),
                                                dim=-1) for h in spans.heads]

    # which images, from the store alone
    k = max(1, min(images_per_text, len(store) // 2))
    scores = text_scores(store, spans.heads, directions)
    chosen: list[list[tuple[np.ndarray, np.ndarray]]] = [
        [choose_images(sc[:, j], k) for j in range(sc.shape[1])] for sc in scores]
    rows = sorted({int(r) for per in chosen for top, bottom in per for r in (*top, *bottom)})

    # the maps, re-running the model only on those images (and only for layers the store has no spatial terms of)
    spatial_layers = list(store.settings.get("spatial_layers", []))
    layers = sorted({h.layer for h in spans.heads})
    from_model = [layer for layer in layers if layer not in spatial_layers or "spatial" not in store.fields]
    map_source = {layer: ("model" if layer in from_model else "store") for layer in layers}
    cfg = model.preprocess_config
    views: dict[int, np.ndarray] = {}
    maps: dict[tuple[int, int, int], tuple[np.ndarray, float]] = {}  # (head i, text j, row) -> (map, cls)
    wanted: dict[int, list[tuple[int, int]]] = {}  # row -> [(head i, text j)]
    for i, per in enumerate(chosen):
        for j, (top, bottom) in enumerate(per):
            for r in dict.fromkeys(int(x) for x in (*top, *bottom)):
                wanted.setdefault(r, []).append((i, j))
    indices = store.indices
    emb_store = store.field("embedding")
    prefix = int(store.shape.get("prefix_tokens", 1))
    grid: tuple[int, int] | None = None
    done = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        samples = [dataset[int(indices[r])] for r in batch]
        pixels = model.preprocess([s.image for s in samples])
        ph, pw = model.vision.patch_size
        grid = (pixels.shape[-2] // ph, pixels.shape[-1] // pw)
        for r, px in zip(batch, pixels, strict=True):
            views[r] = _view(px, cfg.mean, cfg.std, view_size)
        # layer -> (z [b, R, N, H, dh], (scale, mean, wsum) [b, R], norm [b])
        sources: dict[int, tuple[Tensor, tuple[Tensor, Tensor, Tensor], Tensor]] = {}
        if from_model:
            dec = model.decompose(pixels, spatial=True, layers=from_model)
            emb = dec.embedding.detach().double().cpu()
            _warn_if_changed(emb, torch.from_numpy(emb_store.take(np.asarray(batch))).double(), samples)
            heads = dec.heads.detach().cpu()
            ro = dec.readout
            frozen = (ro.scale.detach().cpu(), ro.mean.detach().cpu(), ro.weights.sum(-1).detach().cpu())
            for li, layer in enumerate(dec.head_layers):
                sources[layer] = (heads[:, :, li], frozen, emb.norm(dim=-1))
        store_layers = [layer for layer in layers if map_source[layer] == "store"]
        if store_layers:
            sp = store.field("spatial").take(np.asarray(batch))  # [b, R, Ls, N, H, dh]
            rows_np = np.asarray(batch)
            frozen = tuple(torch.from_numpy(store.field(f).take(rows_np).astype(np.float64))  # type: ignore[assignment]
                           for f in ("scale", "mean", "wsum"))
            norm = torch.from_numpy(emb_store.take(rows_np).astype(np.float64)).norm(dim=-1)
            for layer in store_layers:
                sources[layer] = (torch.from_numpy(sp[:, :, spatial_layers.index(layer)].astype(np.float64)), frozen,
                                  norm)
        for i, h in enumerate(spans.heads):
            here = [b for b, r in enumerate(batch) if any(i == hi for hi, _ in wanted.get(r, []))]
            if not here:
                continue
            z, (scale, mean, wsum), norm = sources[h.layer]
            sel = torch.tensor(here)
            tok = token_scores(store, h.layer, h.head, z[sel][:, :, :, h.head], scale[sel], mean[sel], wsum[sel],
                               norm[sel], directions[i])  # [n, N, T]
            for n, b in enumerate(here):
                r = batch[b]
                for hi, j in wanted[r]:
                    if hi == i:
                        maps[(i, j, r)] = (tok[n, prefix:, j].reshape(grid).numpy().copy(),
                                           float(tok[n, 0, j]) if prefix else None)
        done += len(batch)
        if progress is not None:
            progress(done, len(rows))

    labels, names = store.labels, store.class_names

    def shown(i: int, j: int, r: int) -> ShownImage:
        m, cls = maps[(i, j, r)]
        name = names[labels[r]] if 0 <= labels[r] < len(names) else ""
        return ShownImage(r, int(indices[r]), store.ids[r], name, float(scores[i][r, j]), cls, m)

    heads_out = []
    for i, h in enumerate(spans.heads):
        rows = zip(h.texts, h.fractions, h.cumulative, h.removed, h.scores, strict=True)
        texts = [AtlasText(t, float(f), float(c), float(v), float(p), [shown(i, j, int(r)) for r in chosen[i][j][0]],
                           [shown(i, j, int(r)) for r in chosen[i][j][1]])
                 for j, (t, f, c, v, p) in enumerate(rows)]
        heads_out.append(AtlasHead(h.layer, h.head, texts, float(h.total_variance)))
    info = {
        "store": str(store.path), "images": len(store), "model": dict(store.header["model"]),
        "dataset": {k: store.header.get("dataset", {}).get(k) for k in ("name", "layout", "num_samples")},
        "class_names": store.class_names,
        "shape": dict(store.shape),
        "textspan": {"rank": spans.rank, "texts_per_head": spans.texts_per_head, "images": spans.images,
                     "pool_size": spans.pool_size, "accuracy_rebuilt": spans.accuracy,
                     "accuracy_baseline": spans.baseline_accuracy, **{k: v for k, v in spans.settings.items()
                                                                       if k in ("pool", "store")}},
    }
    return Atlas(heads_out, views, grid or (0, 0), map_source, k, info)


def _warn_if_changed(fresh: Tensor, stored: Tensor, samples: Sequence[Any]) -> None:
    """Warn when an image, run again, no longer gives the embedding the store holds (the file changed)."""
    err = (fresh - stored).norm(dim=-1) / stored.norm(dim=-1).clamp_min(1e-12)
    bad = [s.id for s, e in zip(samples, err.tolist(), strict=True) if e > 1e-2]
    if bad:
        warnings.warn(f"{len(bad)} image(s) shown in the atlas no longer give the embedding stored for them "
                      f"({', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}): their files changed since the store was "
                      "built, so their maps describe the new files", stacklevel=3)
