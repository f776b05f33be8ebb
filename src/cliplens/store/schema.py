"""What a store holds, and its files.

A store is a folder:

* ``store.json`` — the header, written first: format, the model (name, weights, fingerprint of the weights
  and preprocessing), the settings that change what is stored (dtype, spatial layers, chunk size, batch
  size, input size), the data set (layout, root, size, class names, attribute names), the zero-shot
  templates, the checksum kind the files carry and the build command (for the message that says how to
  repair the store). A store made with another model or other settings is refused, saying what differs.
* ``projections.safetensors`` — the weight-derived matrices the analyses need, so that nothing re-runs the
  model: ``out_weight`` ``[L, D, H·dh]`` (each layer's out-projection, layer-scale folded in),
  ``out_bias`` ``[L, D]``, ``ln_gamma``/``ln_beta`` ``[D]`` (``ln_post``), ``proj`` ``[D, E]``, and
  ``classifier`` ``[C, E]`` (the zero-shot classifier of the class names, unit-norm rows).
* ``chunk-000000.safetensors``, ``chunk-000001.safetensors``, … — chunk ``c`` holds the data set's images
  ``c·S .. (c+1)·S − 1`` (``S`` = chunk size) that could be read, one row each (:data:`FIELDS`), and in its
  metadata their ids, attributes and the images skipped as unreadable. A chunk is written to a temporary
  file and renamed: a chunk file that exists was whole when written (its checksum tells if it still is).
* ``manifest.json`` — written when every chunk is done (by rank 0 under ``torchrun``): the chunks (each with
  its size and checksum), the projections' and the header's size and checksum, the images skipped, the total.

Every safetensors file carries its own checksum in its metadata (``sha256``); how, and how a store is
checked on open, on resume and by ``cliplens store info --verify``: :mod:`cliplens.store.integrity`.

Per image (row), at the CLS position, residual space unless said (``L`` layers, ``H`` heads, ``dh``
head width, ``D`` width, ``E`` joint dimension):
``heads`` and ``cls_heads`` ``[L, H, dh]``, ``attn_out`` and ``mlp_out`` ``[L, D]``, ``embed_term`` ``[D]``,
``mean``/``std`` (ln_post, frozen), ``embedding`` ``[E]``, ``label``, ``index``, and optionally ``spatial``
``[Ls, N, H, dh]`` for chosen layers (see :data:`FIELDS`). Sizes per image are in the README.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cliplens.jsonio import differences as _differences
from cliplens.jsonio import read_json, write_json_atomic

__all__ = ["FIELDS", "FORMAT", "HEADER", "LARGE", "MANIFEST", "PROJECTIONS", "StoreSettings", "chunk_name",
           "differences", "read_json", "write_json_atomic"]

FORMAT = "cliplens.store/1"
HEADER = "store.json"
MANIFEST = "manifest.json"
PROJECTIONS = "projections.safetensors"

#: name -> (shape, meaning); "heads"-like fields are stored in the store's dtype, the rest in float32
FIELDS: dict[str, tuple[str, str]] = {
    "heads": ("[L, H, dh]", "each head's output at the CLS query, in head space (before the out-projection)"),
    "cls_heads": ("[L, H, dh]", "the part of it that comes from the CLS token itself: α(CLS→CLS)·v_CLS"),
    "attn_out": ("[L, D]", "each attention layer's whole output (out-projection bias and layer-scale included)"),
    "mlp_out": ("[L, D]", "each MLP's output (layer-scale included)"),
    "embed_term": ("[D]", "the embedding term x_0 (the ln_pre output)"),
    "mean": ("[]", "ln_post's mean at CLS, frozen (float32)"),
    "std": ("[]", "ln_post's scale sqrt(var + eps) at CLS, frozen (float32)"),
    "embedding": ("[E]", "the image embedding from the same forward (float32)"),
    "label": ("[]", "the class index from the data set (int64; -1: unlabelled)"),
    "index": ("[]", "the image's index in the data set (int64)"),
    "spatial": ("[Ls, N, H, dh]", "optional: per source token and head, α(CLS→m)·v_m for the spatial layers"),
}
#: fields stored in the chosen dtype (the rest: float32 / int64)
LARGE = ("heads", "cls_heads", "attn_out", "mlp_out", "embed_term", "spatial")


@dataclass(frozen=True)
class StoreSettings:
    """The settings that change what is stored (a store is only resumed or reused with the same ones)."""

    dtype: str = "float32"  # or "float16"
    spatial_layers: tuple[int, ...] = ()
    chunk_size: int = 1024
    batch_size: int = 32
    templates: str = "auto"  # the data set's own class prompts if it has them, else "imagenet"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spatial_layers"] = list(self.spatial_layers)
        return d


def chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.safetensors"


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Differences between a store's header and the one a build would write (``key: A (store) vs B (now)``)."""
    return _differences(a, b, prefix, ("store", "now"))
