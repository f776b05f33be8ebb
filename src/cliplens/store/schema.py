"""What a store holds, and its files.

A store is a folder:

* ``store.json`` — the header, written first: format, the model (name, weights, fingerprint of the weights
  and preprocessing), the settings that change what is stored (dtype, spatial layers, chunk size, batch
  size, input size), the data set (layout, root, size, class names, attribute names), the zero-shot
  templates, the checksum kind the files carry and the build command (for the message that says how to
  repair the store). A store made with another model or other settings is refused, saying what differs.
* ``projections.safetensors`` — the weight-derived matrices the analyses need, so that nothing re-runs the
  model (:class:`cliplens.decomposition.algebra.HeadWeights`): ``out_weight`` ``[L, D, H·dh]`` (each layer's
  out-projection, layer-scale folded in), ``out_bias`` ``[L, D]``, the pooling head's LayerNorm
  ``ln_gamma``/``ln_beta`` ``[D]``, its readouts' maps ``readout_out`` ``[R, k, E]`` (and ``readout_in``
  ``[R, D, k]`` when not the identity) and constant ``head_bias`` ``[E]``; and ``classifier`` ``[C, E]`` (the
  zero-shot classifier of the class names, unit-norm rows).
* ``chunk-000000.safetensors``, ``chunk-000001.safetensors``, … — chunk ``c`` holds the data set's images
  ``c·S .. (c+1)·S − 1`` (``S`` = chunk size) that could be read, one row each (:data:`FIELDS`), and in its
  metadata their ids, attributes and the images skipped as unreadable. A chunk is written to a temporary
  file and renamed: a chunk file that exists is complete.
* ``manifest.json`` — written when every chunk is done (by rank 0 under ``torchrun``): the chunks, the
  images skipped, the total.

Per image (row): the terms of :func:`cliplens.decomposition.decompose`, each component read out by the pooling
head's ``R`` readouts (one for CLS pooling, where the read-out value is the value at the CLS token; one per
pooling head for attention pooling), residual space unless said (``L`` layers, ``H`` heads, ``dh`` head width,
``D`` width, ``E`` joint dimension): ``heads`` ``[R, L, H, dh]``, ``attn_out`` and ``mlp_out`` ``[R, L, D]``,
``embed_term`` ``[R, D]``, the head's frozen ``scale``, ``mean`` and weight sum ``wsum`` ``[R]``, ``embedding``
``[E]``, ``label``, ``index``; for CLS pooling ``cls_heads`` ``[1, L, H, dh]``; for a head that is not affine
``nonlinear`` ``[E]``; for a tower with a sub-LayerNorm over the concatenated heads (EVA02) ``shift`` ``[R, L, D]``;
optionally ``spatial`` ``[R, Ls, N, H, dh]`` for chosen layers, and ``neuron_weights``/``neuron_const`` for chosen
MLP layers (the neurons' second-order factors; see :data:`FIELDS`).
Sizes per image are in the README. Stores of the first format (CLS pooling only, no readout axis; ``mean`` and
``std`` at CLS) are read as the same thing (:class:`cliplens.store.Store`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cliplens.jsonio import differences as _differences
from cliplens.jsonio import read_json, write_json_atomic

__all__ = ["FIELDS", "FORMAT", "FORMAT_1", "HEADER", "LARGE", "MANIFEST", "PROJECTIONS", "StoreSettings", "chunk_name",
           "differences", "read_json", "write_json_atomic"]

FORMAT = "cliplens.store/2"
#: the first format: CLS pooling only, no readout axis (read as format 2 by the reader)
FORMAT_1 = "cliplens.store/1"
HEADER = "store.json"
MANIFEST = "manifest.json"
PROJECTIONS = "projections.safetensors"

#: name -> (shape, meaning); "heads"-like fields are stored in the store's dtype, the rest in float32
FIELDS: dict[str, tuple[str, str]] = {
    "heads": ("[R, L, H, dh]", "each head's output read out by each readout (for CLS pooling: at the CLS query), in "
                               "head space (before the out-projection)"),
    "cls_heads": ("[1, L, H, dh]", "CLS pooling: the part of it that comes from the CLS token itself: "
                                   "α(CLS→CLS)·v_CLS"),
    "attn_out": ("[R, L, D]", "each attention layer's whole output (out-projection bias and layer-scale included)"),
    "mlp_out": ("[R, L, D]", "each MLP's output (layer-scale included)"),
    "embed_term": ("[R, D]", "the embedding term x_0 (the ln_pre output)"),
    "scale": ("[R]", "each readout's frozen scale (CLS pooling: 1/σ of ln_post at CLS) (float32)"),
    "mean": ("[R]", "each readout's frozen mean term (CLS pooling: ln_post's mean at CLS) (float32)"),
    "wsum": ("[R]", "each readout's token-weight sum (what a bias at every token gets; 1 for CLS pooling) "
                    "(float32)"),
    "nonlinear": ("[E]", "a head that is not affine: its lumped nonlinear part (SigLIP's MLP after the pooling) "
                         "(float32)"),
    "shift": ("[R, L, D]", "a tower with a sub-LayerNorm over the concatenated heads (EVA02): each layer's shift "
                           "W_O(β − γμ/σ) + b_O read out, a term of its own; the heads are stored through the frozen "
                           "sub-LN (γ/σ applied)"),
    "embedding": ("[E]", "the image embedding from the same forward (float32)"),
    "label": ("[]", "the class index from the data set (int64; -1: unlabelled)"),
    "index": ("[]", "the image's index in the data set (int64)"),
    "spatial": ("[R, Ls, N, H, dh]", "optional: per source token and head, the readouts' α·v_m for the spatial "
                                     "layers"),
    "neuron_weights": ("[K, Nn, Lp, H]", "optional (CLS pooling): for the neuron layers, each MLP neuron's numbers "
                                         "through each later head (Σ_m a_m·α_m/σ_m times 1/σ_post; Lp = the layers "
                                         "after the first neuron layer), from which cliplens.analyses.neurons "
                                         "rebuilds the neurons' second-order effects without the model's forward"),
    "neuron_const": ("[K, E]", "optional: each neuron layer's per-neuron share of the constants (float32)"),
}
#: fields stored in the chosen dtype (the rest: float32 / int64)
LARGE = ("heads", "cls_heads", "attn_out", "mlp_out", "embed_term", "spatial", "shift", "neuron_weights")


@dataclass(frozen=True)
class StoreSettings:
    """The settings that change what is stored (a store is only resumed or reused with the same ones)."""

    dtype: str = "float32"  # or "float16"
    spatial_layers: tuple[int, ...] = ()
    chunk_size: int = 1024
    batch_size: int = 32
    templates: str = "auto"  # the data set's own class prompts if it has them, else "imagenet"
    #: MLP layers whose neurons' second-order factors are kept (``neuron_weights``; cliplens.analyses.neurons)
    neuron_layers: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spatial_layers"] = list(self.spatial_layers)
        d["neuron_layers"] = list(self.neuron_layers)
        if not self.neuron_layers:  # a store without them has the header of the stores made before they existed
            del d["neuron_layers"]
        return d


def chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.safetensors"


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Differences between a store's header and the one a build would write (``key: A (store) vs B (now)``)."""
    return _differences(a, b, prefix, ("store", "now"))
