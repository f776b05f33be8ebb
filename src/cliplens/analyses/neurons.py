"""Neurons' second-order effects over a data set (Gandelsman, Efros, Steinhardt, *Interpreting the Second-Order
Effects of Neurons in CLIP*, ICLR 2025, arXiv 2406.04341): principal components, sparse text descriptions,
ablations with zero-shot accuracy, segmentation maps, and the effects of a store's images.

The effects themselves (one batch, exact, batched over neurons) are :mod:`cliplens.decomposition.neurons`'s
(re-exported here). Following the paper's code (github.com/yossigandelsman/second_order_lens @ 1d4fe4d,
``prs_second_order_neurons_hook.py``, ``compute_pcas.py``, ``compute_ablations.py``,
``compute_sparse_decomposition.py``, ``decompose.py``, ``compute_segmentation.py``):

* **scaled effects**: the code multiplies each effect by ``100 / ‖z‖`` (``z`` the unnormalised embedding);
  :meth:`NeuronEffects.scaled` does that, and the principal components, ablations and descriptions use it;
* **first principal component** (:func:`principal_components`): centre each neuron's scaled effects by their
  mean over the data set, keep the ``top_k = 100`` images with the largest centred norm, take the first right
  singular vector of those rows (no second centring), oriented so that more than half of them project
  positively; the 100th-largest norm is the neuron's *significance threshold*;
* **sparse text description** (:func:`describe`): the pool's normalised text embeddings, centred by their
  mean over the pool, each *coordinate* divided by its norm over the pool (the code's ``axis=0``) and times 100;
  then orthogonal matching pursuit with ``n_texts`` atoms (the code's default 32; its README command 128)
  on each principal component. The code's vocabulary is its 30,000 common words; cliplens uses any pool
  (``cliplens.analyses.pools``), whose size the result states. The solver is a batched OMP written here
  (checked against scikit-learn's ``orthogonal_mp``);
* **ablations** (:func:`ablation_study`): mean-ablation of a layer's second-order effects (replace each by its
  mean over the training images), of the significant neurons only, of the insignificant only, and
  reconstruction from the principal components (and from the text descriptions), with zero-shot accuracy;
* **segmentation** (:func:`neuron_maps`): the class predicted zero-shot, the ``top`` neurons (over the chosen
  layers) whose principal component points most along that class's embedding (largest ``|pc · w_c|``), and
  the mean of their post-activation values over the patch tokens;
* **a store's images** (:func:`store_effects`): from the numbers a store built with ``neuron_layers`` keeps (no
  forward), or by re-running the model on the store's data set; written to memory-mapped ``.npy`` files, as the
  code writes its ``[images, neurons, d]`` arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.decomposition.neurons import (
    COEFFICIENT,
    NeuronEffects,
    SecondOrder,
    check_neuron_layers,
    second_order,
)
from cliplens.errors import InvalidInputError

__all__ = ["COEFFICIENT", "NeuronComponents", "NeuronDescription", "NeuronEffects", "SecondOrder",
           "ablation_study", "check_neuron_layers", "describe", "neuron_maps", "omp", "principal_components",
           "second_order", "store_effects", "text_dictionary"]


def _view(model: Any) -> Any:
    return model if hasattr(model, "blocks") else model.vision


# ---- over a data set: principal components, descriptions, ablations ------------------------------------------------
@dataclass
class NeuronComponents:
    """Per neuron of one layer: ``mean`` ``[n, E]`` of its scaled effects over the images, ``pcs`` ``[n, E]``
    the first principal component (unit, oriented), ``norms`` ``[n, top_k]`` the largest centred norms in
    increasing order (``threshold``: the smallest of them), ``explained`` ``[n]`` the share of the top images'
    variance (uncentred second moment) the component carries, and ``selectivity`` ``[n]`` the share of images
    whose centred norm exceeds the threshold."""

    layer: int
    neurons: np.ndarray
    mean: np.ndarray
    pcs: np.ndarray
    norms: np.ndarray
    explained: np.ndarray
    top_images: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> np.ndarray:
        return self.norms[:, 0]


def principal_components(effects: np.ndarray | Tensor, *, layer: int = -1, top_k: int = 100, chunk: int = 16,
                         neurons: Sequence[int] | None = None) -> NeuronComponents:
    """Each neuron's first principal component from its scaled effects ``[I, n, E]`` (a memory-mapped array
    works: ``chunk`` neurons are read at a time, ``I · chunk · E`` float64 values in memory), by the paper's recipe
    (module docs)."""
    arr = effects
    n_img, n, E = arr.shape
    if n_img < 2:
        raise InvalidInputError("principal components need effects over at least 2 images")
    top = min(int(top_k), n_img)
    means, pcs, norms, expl, tops = [], [], [], [], []
    for s in range(0, n, chunk):
        e = torch.from_numpy(np.array(arr[:, s:s + chunk], dtype=np.float64)).transpose(0, 1)  # [c, I, E]
        m = e.mean(1, keepdim=True)
        cen = e - m
        nr = cen.norm(dim=-1)  # [c, I]
        vals, order = nr.sort(dim=1)
        sel = order[:, -top:]  # the top images, increasing norm
        rows = torch.gather(cen, 1, sel[..., None].expand(-1, -1, E))  # [c, top, E]
        _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
        pc = vh[:, 0]  # [c, E]
        positive = ((rows @ pc[..., None])[..., 0] > 0).sum(1)
        pc = torch.where((positive > top // 2)[:, None], pc, -pc)
        means.append(m[:, 0])
        pcs.append(pc)
        norms.append(vals[:, -top:])
        expl.append(sv[:, 0] ** 2 / (sv ** 2).sum(1).clamp_min(1e-300))
        tops.append(sel.flip(1))
    idx = np.arange(n) if neurons is None else np.asarray(neurons)
    return NeuronComponents(layer=layer, neurons=idx, mean=torch.cat(means).numpy(), pcs=torch.cat(pcs).numpy(),
                            norms=torch.cat(norms).numpy(), explained=torch.cat(expl).numpy(),
                            top_images=torch.cat(tops).numpy(), settings={"top_k": top, "images": n_img})


def omp(targets: Tensor, dictionary: Tensor, n_nonzero: int) -> Tensor:
    """Orthogonal matching pursuit, batched over targets: ``targets`` ``[n, E]``, ``dictionary`` ``[T, E]`` (atoms
    used as given, not renormalised: the atom chosen is the one with the largest ``|⟨atom, residual⟩|``, as
    scikit-learn's ``orthogonal_mp`` chooses) -> coefficients ``[n, T]`` with at most ``n_nonzero`` non-zeros;
    each step refits every chosen atom by least squares."""
    y = targets.to(torch.float64)
    Dm = dictionary.to(torch.float64)
    n, T = y.shape[0], Dm.shape[0]
    k = min(int(n_nonzero), T, Dm.shape[1])
    chosen = torch.zeros(n, 0, dtype=torch.long)
    resid = y.clone()
    coef = y.new_zeros(n, 0)
    taken = torch.zeros(n, T, dtype=torch.bool)
    rows = torch.arange(n)
    for _ in range(k):
        corr = (resid @ Dm.t()).abs().masked_fill(taken, -1.0)
        pick = corr.argmax(1)
        if bool((corr[rows, pick] <= 1e-12 * y.norm(dim=1).clamp_min(1e-300)).all()):
            break
        taken[rows, pick] = True
        chosen = torch.cat([chosen, pick[:, None]], 1)
        A = Dm[chosen].transpose(1, 2)  # [n, E, s]
        coef = torch.linalg.lstsq(A, y[..., None]).solution[..., 0]  # [n, s]
        resid = y - (A @ coef[..., None])[..., 0]
    out = y.new_zeros(n, T)
    if chosen.shape[1]:
        out.scatter_(1, chosen, coef)
    return out


@dataclass
class NeuronDescription:
    """A neuron's sparse text description: ``texts`` with their ``weights`` (largest |weight| first), and the
    cosine between its principal component and the description's reconstruction."""

    layer: int
    neuron: int
    texts: list[str]
    weights: list[float]
    cosine: float

    def line(self, n: int = 5) -> str:
        return " + ".join(f"{w:.3g} {t!r}" for t, w in zip(self.texts[:n], self.weights[:n], strict=True))


def text_dictionary(text_embeddings: Tensor, coefficient: float = COEFFICIENT) -> Tensor:
    """The paper's dictionary from normalised text embeddings ``[T, E]``: centred over the texts, each coordinate
    divided by its norm over the texts, times ``coefficient``."""
    t = torch.nn.functional.normalize(text_embeddings.to(torch.float64), dim=-1)
    t = t - t.mean(0, keepdim=True)
    return coefficient * t / t.norm(dim=0, keepdim=True).clamp_min(1e-300)


def describe(components: NeuronComponents, texts: Sequence[str], text_embeddings: Tensor, *,
             n_texts: int = 32, coefficient: float = COEFFICIENT) -> tuple[list[NeuronDescription], Tensor]:
    """Each neuron's principal component as a sparse combination of the pool's texts (OMP over the paper's
    dictionary, module docs). Returns the descriptions and the reconstructions ``[n, E]`` (coefficients times
    the dictionary), which :func:`ablation_study` can use."""
    if len(texts) != text_embeddings.shape[0]:
        raise InvalidInputError(f"{len(texts)} texts but {text_embeddings.shape[0]} text embeddings")
    Dm = text_dictionary(text_embeddings, coefficient)
    pcs = torch.as_tensor(components.pcs, dtype=torch.float64)
    coef = omp(pcs, Dm, n_texts)
    recon = coef @ Dm
    cos = torch.nn.functional.cosine_similarity(recon, pcs, dim=-1)
    out = []
    for i, neuron in enumerate(components.neurons):
        nz = torch.nonzero(coef[i]).reshape(-1)
        order = nz[coef[i, nz].abs().argsort(descending=True)]
        out.append(NeuronDescription(components.layer, int(neuron), [texts[j] for j in order.tolist()],
                                     [float(coef[i, j]) for j in order.tolist()], float(cos[i])))
    return out, recon


def ablation_study(effects: np.ndarray | Tensor, embeddings: Tensor | np.ndarray, labels: Sequence[int] | Tensor,
                   classifier: Tensor, components: NeuronComponents, *, reconstructions: Tensor | None = None,
                   coefficient: float = COEFFICIENT, chunk: int = 8) -> dict[str, float]:
    """Zero-shot accuracy (``[0, 1]``) of the scaled representation ``coefficient · z/‖z‖`` with one layer's
    second-order effects ``[I, n, E]`` (scaled; memory-mapped arrays are read ``chunk`` images at a time) changed,
    as the paper's ``compute_ablations.py``:

    * ``baseline``: nothing changed;
    * ``mean_ablated``: every neuron's effect replaced by its mean (``components.mean``, over the training images);
    * ``without_significant`` / ``without_insignificant``: only the neurons whose centred effect's norm is above
      (resp. at or below) their significance threshold mean-ablated, per image;
    * ``principal_components``: every effect replaced by its mean plus its projection on the neuron's component;
    * ``texts`` (with ``reconstructions``, :func:`describe`): plus its dot product with the text reconstruction
      times that reconstruction (the code's evaluation, unnormalised).

    ``classifier`` ``[E, C]`` (or ``[C, E]``) holds the classes' text embeddings."""
    z_all = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    W = classifier.to(torch.float64)
    if W.shape[0] != z_all.shape[1]:
        W = W.t()
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if not (effects.shape[0] == z_all.shape[0] == y_all.shape[0]):
        raise InvalidInputError(f"{effects.shape[0]} images of effects, {z_all.shape[0]} embeddings and "
                                f"{y_all.shape[0]} labels: they must be the same images")
    mean = torch.as_tensor(components.mean, dtype=torch.float64)
    pcs = torch.as_tensor(components.pcs, dtype=torch.float64)
    thr = torch.as_tensor(components.threshold, dtype=torch.float64)
    r = None if reconstructions is None else reconstructions.to(torch.float64)
    correct: dict[str, int] = {}
    for s in range(0, z_all.shape[0], chunk):
        e = torch.from_numpy(np.array(effects[s:s + chunk], dtype=np.float64))
        z, y = z_all[s:s + chunk], y_all[s:s + chunk]
        rep = coefficient * z / z.norm(dim=-1, keepdim=True)
        cen = e - mean
        ablated = rep - e.sum(1) + mean.sum(0)
        sig = cen.norm(dim=-1) > thr  # [i, n]
        reps = {
            "baseline": rep,
            "mean_ablated": ablated,
            "without_significant": ablated + (cen * (~sig)[..., None]).sum(1),
            "without_insignificant": ablated + (cen * sig[..., None]).sum(1),
            "principal_components": ablated + (torch.einsum("ind,nd->in", cen, pcs)[..., None] * pcs).sum(1),
        }
        if r is not None:
            reps["texts"] = ablated + (torch.einsum("ind,nd->in", cen, r)[..., None] * r).sum(1)
        for name, v in reps.items():
            correct[name] = correct.get(name, 0) + int(((v @ W).argmax(1) == y).sum())
    return {name: c / z_all.shape[0] for name, c in correct.items()}


@torch.no_grad()
def neuron_maps(model: Any, pixel_values: Tensor, components: Sequence[NeuronComponents], classifier: Tensor, *,
                top: int = 200, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Neuron-based segmentation maps (the paper's §5.3, ``compute_segmentation.py``): for each image the class
    predicted zero-shot (or ``classes``), the ``top`` neurons of the given layers whose principal component has
    the largest ``|pc · w_c|``, and the mean of their post-activation values at each patch token.

    Returns ``(maps [B, gh, gw], classes [B])`` on the token grid (upsample and min–max normalise to display, as
    the paper does)."""
    from cliplens.core.forward import run_vision

    view = _view(model)
    if not components:
        raise InvalidInputError("neuron maps need the principal components of at least one layer")
    layers = check_neuron_layers(view, [c.layer for c in components])
    out = run_vision(view, pixel_values.to(device=view.device, dtype=view.dtype),
                     names=[f"blocks.{k}.mlp.hidden" for k in layers])
    W = classifier.to(torch.float64)
    if W.shape[0] != view.embed_dim:
        W = W.t()
    if classes is None:
        classes_t = (out.embedding.to(torch.float64) @ W).argmax(1)
    else:
        classes_t = torch.as_tensor(list(classes), dtype=torch.long)
    pcs = torch.cat([torch.as_tensor(c.pcs, dtype=torch.float64) for c in components])  # [Σn, E]
    owner = [(c.layer, int(n)) for c in components for n in c.neurons]
    scores = (pcs @ W).abs()  # [Σn, C]
    k_top = min(int(top), pcs.shape[0])
    prefix = view.num_prefix_tokens
    gh, gw = out.grid
    maps = []
    for b in range(pixel_values.shape[0]):
        chosen = scores[:, int(classes_t[b])].topk(k_top).indices.tolist()
        acts = torch.stack([out.cache[f"blocks.{owner[i][0]}.mlp.hidden"][b, prefix:, owner[i][1]] for i in chosen])
        maps.append(acts.to(torch.float64).mean(0).reshape(gh, gw))
    return torch.stack(maps), classes_t


def default_chunk(width: int, heads: int, embed_dim: int, budget_bytes: float = 2e9) -> int:
    """Neurons per chunk so that the weight products of one pair of layers stay under ``budget_bytes``."""
    return max(1, min(width, int(budget_bytes // (4 * heads * embed_dim))))


# ---- a store's images ------------------------------------------------------------------------------------------------
@dataclass
class StoreEffects:
    """The scaled second-order effects (``100 · φ / ‖z‖``) of a store's images, one memory-mapped ``.npy`` file per
    layer (``[images, neurons, E]``), with the rows' embeddings and labels, and where the effects came from
    (``"store"``: its ``neuron_weights``; ``"forward"``: the model re-run on the reopened data set)."""

    layers: tuple[int, ...]
    files: dict[int, Path]
    rows: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    source: str

    def effects(self, layer: int) -> np.ndarray:
        """``[images, neurons, E]`` memory-mapped (read-only)."""
        return np.load(self.files[layer], mmap_mode="r")


def _stored_layers(store: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in store.settings.get("neuron_layers", ()))


def store_effects(store: Any, model: Any, layers: Sequence[int], out_dir: str | os.PathLike[str], *,
                  images: Sequence[int] | None = None, batch_size: int = 32, dtype: str = "float32",
                  dataset: Any = None, progress: bool = False) -> StoreEffects:
    """The scaled second-order effects of the neurons of ``layers`` for a store's images (``images``: row indices,
    default all), written to ``out_dir`` as ``effects-L{layer}.npy`` (``dtype`` float32 or float16; files there
    are never overwritten). ``model`` is the store's model (its weights give the products ``V``).

    A store built with these neuron layers (``cliplens store build --neuron-layers``) gives the per-image numbers
    directly (no forward); otherwise the model is re-run on the store's data set (``dataset``, or the one its
    header records, reopened and checked by fingerprint)."""
    from cliplens.progress import progress_bar

    lens = SecondOrder(model, layers)
    if dtype not in ("float32", "float16"):
        raise InvalidInputError(f"dtype must be float32 or float16, not {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / f"effects-L{k}.npy" for k in lens.layers}
    taken = [str(f) for f in files.values() if f.exists()]
    if taken:
        raise InvalidInputError(f"{', '.join(taken)} already exist: choose another folder (cliplens never overwrites "
                                "a file it did not just write)")
    rows = np.arange(len(store)) if images is None else np.asarray(list(images), dtype=np.int64)
    if rows.size < 2 or rows.min() < 0 or rows.max() >= len(store):
        raise InvalidInputError(f"images must be at least 2 rows of the store's {len(store)}")
    emb = store.field("embedding")[rows].astype(np.float64)
    labels = store.labels[rows]
    E = emb.shape[1]
    n = lens.neurons.numel()
    arrays = {k: np.lib.format.open_memmap(f, mode="w+", dtype=np.dtype(dtype), shape=(rows.size, n, E))
              for k, f in files.items()}
    stored = _stored_layers(store)
    from_store = set(lens.layers) <= set(stored)
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("second-order effects", total=int(rows.size))
        if from_store:
            _from_store(store, lens, rows, stored, arrays, batch_size, bar, task)
        else:
            _from_forward(store, model, lens, rows, arrays, batch_size, dataset, bar, task)
    for a in arrays.values():
        a.flush()
    del arrays
    return StoreEffects(lens.layers, files, rows, emb, labels, "store" if from_store else "forward")


def _from_store(store: Any, lens: SecondOrder, rows: np.ndarray, stored: tuple[int, ...], arrays: dict[int, Any],
                batch_size: int, bar: Any, task: Any) -> None:
    weights, consts = store.field("neuron_weights"), store.field("neuron_const")
    offset = min(lens.layers) - min(stored)  # the store's later layers start after its first neuron layer
    for s in range(0, rows.size, batch_size):
        r = rows[s:s + batch_size]
        w_all = torch.as_tensor(weights[r].astype(np.float32))  # [b, K, Nn, Lp, H]
        c_all = torch.as_tensor(consts[r].astype(np.float32))
        norms = torch.as_tensor(store.field("embedding")[r].astype(np.float64)).norm(dim=-1)
        for k in lens.layers:
            j = stored.index(k)
            eff = lens.effects_from(k, w_all[:, j, :, offset:], c_all[:, j], norms)
            arrays[k][s:s + r.size] = eff.scaled().cpu().numpy()
        bar.advance(task, int(r.size))


def _from_forward(store: Any, model: Any, lens: SecondOrder, rows: np.ndarray, arrays: dict[int, Any],
                  batch_size: int, dataset: Any, bar: Any, task: Any) -> None:
    from cliplens.datasets.reopen import check_same_dataset, reopen_dataset

    if dataset is None:
        dataset = reopen_dataset(store.header["dataset"])
    else:
        check_same_dataset(dataset, store.header["dataset"], "the data set given")
    index = store.indices
    for s in range(0, rows.size, batch_size):
        r = rows[s:s + batch_size]
        px = model.preprocess([dataset[int(index[i])].image for i in r])
        for k, eff in lens(px).items():
            arrays[k][s:s + r.size] = eff.scaled().cpu().numpy()
        bar.advance(task, int(r.size))
