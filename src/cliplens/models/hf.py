"""The Hugging Face ``transformers`` family: its weights view, adapter, preprocessing and loading.

Supported: ``CLIPModel`` (image and text towers), ``CLIPVisionModelWithProjection``
(optionally with a separate text model such as ``CLIPTextModelWithProjection``) and
``CLIPVisionModel`` (no projection: the embedding is ``post_layernorm(CLS)``), plus the
architecturally identical MetaCLIP 2 classes. Their image towers are pre-LayerNorm ViTs
with CLS pooling, so they decompose exactly.

SigLIP / SigLIP 2 (``SiglipModel``, ``SiglipVisionModel``, ``Siglip2Model``, ``Siglip2VisionModel``) load here
too; their image tower is read by :mod:`cliplens.models.siglip` (a MAP pooling head).

Not supported (:class:`~cliplens.errors.UnsupportedArchitectureError`): every other architecture (CLIPSeg,
OWL-ViT, X-CLIP, BLIP, ...).

Everything the view references is the model's own tensors: ``q/k/v_proj`` stay separate
``nn.Linear`` weights (``qkv_weight=None``) and the projection is
``visual_projection.weight.T`` (a view, not a copy).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cliplens.checkpoints import check_pickle
from cliplens.core.view import BlockView, LayerNormView, VisionView
from cliplens.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from cliplens.images.config import (
    PreprocessConfig,
    pair,
)
from cliplens.models.base import CLIPAdapter, text_tensors
from cliplens.models.hf_images import (
    default_image_processor,
    fixed_size_processor,
    is_siglip2,
    naflex_inputs,
    preprocess_config_from_hf,
)
from cliplens.models.hub import (
    LOCAL_HELP,
    chain,
    checkpoint_error,
    fetch_error,
    offline_guard,
    repo_not_found,
    require_transformers,
    short,
)

#: ``config.hidden_act`` -> the activation name :func:`cliplens.core.layers.apply_activation` knows.
HF_ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}

#: ``config.model_type`` values whose image tower has CLIP's layout (embeddings,
#: ``pre_layrnorm``, ``encoder.layers``, ``post_layernorm``, ``visual_projection``).
CLIP_MODEL_TYPES = ("clip", "clip_vision_model", "metaclip_2", "metaclip_2_vision_model")
#: SigLIP / SigLIP 2 (read by :mod:`cliplens.models.siglip`)
SIGLIP_MODEL_TYPES = ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model")
SUPPORTED_MODEL_TYPES = CLIP_MODEL_TYPES + SIGLIP_MODEL_TYPES


def check_hf_model_type(model_type: str | None, name: str = "", class_name: str = "") -> None:
    """Raise :class:`UnsupportedArchitectureError` unless ``model_type`` has a CLIP image tower."""
    what = name or class_name or "this model"
    if model_type in SUPPORTED_MODEL_TYPES:
        return
    if model_type in ("clip_text_model", "metaclip_2_text_model"):
        raise UnsupportedArchitectureError(
            f"{what} is a CLIP text model only (model_type {model_type!r}); cliplens needs the image "
            "tower: load a CLIPModel or CLIPVisionModelWithProjection."
        )
    raise UnsupportedArchitectureError(
        f"{what} has model_type {model_type!r}{f' ({class_name})' if class_name else ''}; cliplens's "
        "transformers adapter supports CLIP ViT models (model_type 'clip' or 'metaclip_2': CLIPModel, "
        "CLIPVisionModelWithProjection, CLIPVisionModel) and SigLIP / SigLIP 2 (SiglipModel, Siglip2Model and "
        "their vision models). For open_clip models use cliplens.load with "
        "an open_clip name."
    )


def _activation(hidden_act: Any, name: str) -> str:
    act = HF_ACTIVATIONS.get(hidden_act) if isinstance(hidden_act, str) else None
    if act is None:
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} uses hidden_act={hidden_act!r} in its image tower; cliplens maps "
            f"{sorted(HF_ACTIVATIONS)} only."
        )
    return act


def _ln(module: nn.Module, where: str) -> LayerNormView:
    if not isinstance(module, nn.LayerNorm):
        raise UnsupportedArchitectureError(
            f"{where} is a {type(module).__name__}, not a LayerNorm; cliplens decomposes LayerNorm ViTs only."
        )
    return LayerNormView(module.weight, module.bias, float(module.eps))


def _linear(module: Any, where: str) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise UnsupportedArchitectureError(f"{where} is a {type(module).__name__}, expected nn.Linear")
    return module


def _towers(model: nn.Module, name: str) -> tuple[nn.Module, nn.Linear | None, Any]:
    """``(vision_model, visual_projection or None, vision_config)`` of a supported model."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    check_hf_model_type(model_type, name, type(model).__name__)
    if model_type not in CLIP_MODEL_TYPES:
        raise UnsupportedArchitectureError(f"{name or type(model).__name__} (model_type {model_type!r}) has no "
                                           "CLIP image tower")
    vision = getattr(model, "vision_model", None)
    if vision is None:
        if hasattr(model, "embeddings") and hasattr(model, "post_layernorm"):
            vision = model  # a bare CLIPVisionTransformer-like module
        else:
            raise UnsupportedArchitectureError(
                f"{name or type(model).__name__} has no image tower (no `vision_model`); cliplens needs "
                "CLIPModel, CLIPVisionModelWithProjection or CLIPVisionModel."
            )
    proj = getattr(model, "visual_projection", None)
    if proj is not None:
        proj = _linear(proj, "visual_projection")
        if proj.bias is not None:
            raise UnsupportedArchitectureError("visual_projection with a bias is not supported")
    vision_config = getattr(config, "vision_config", None) or getattr(vision, "config", None) or config
    return vision, proj, vision_config


def block_views(layers: Any, vcfg: Any, name: str = "") -> tuple[BlockView, ...]:
    """The views of a transformers encoder's layers (CLIP's and SigLIP's: separate q/k/v/out projections,
    ``layer_norm1/2``, ``mlp.fc1/fc2``, ``config.hidden_act``)."""
    act = _activation(getattr(vcfg, "hidden_act", None), name)
    blocks = []
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        q = _linear(attn.q_proj, f"layer {i} q_proj")
        k = _linear(attn.k_proj, f"layer {i} k_proj")
        v = _linear(attn.v_proj, f"layer {i} v_proj")
        o = _linear(attn.out_proj, f"layer {i} out_proj")
        fc1, fc2 = _linear(mlp.fc1, f"layer {i} fc1"), _linear(mlp.fc2, f"layer {i} fc2")
        num_heads = int(getattr(attn, "num_heads", 0) or vcfg.num_attention_heads)
        blocks.append(
            BlockView(
                ln_1=_ln(layer.layer_norm1, f"layer {i} layer_norm1"),
                q_weight=q.weight, k_weight=k.weight, v_weight=v.weight,
                q_bias=q.bias, k_bias=k.bias, v_bias=v.bias,
                out_weight=o.weight, out_bias=o.bias,
                ln_2=_ln(layer.layer_norm2, f"layer {i} layer_norm2"),
                fc1_weight=fc1.weight, fc1_bias=fc1.bias, fc2_weight=fc2.weight, fc2_bias=fc2.bias,
                num_heads=num_heads, activation=act,
            )
        )
    return tuple(blocks)


def vision_view_from_hf(model: nn.Module, name: str = "") -> VisionView:
    """Build a :class:`VisionView` over a transformers CLIP model's image tower (no copies)."""
    vision, proj, vcfg = _towers(model, name)
    emb = vision.embeddings
    conv = emb.patch_embedding
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedArchitectureError(f"patch embedding is a {type(conv).__name__}, expected Conv2d")
    blocks = block_views(vision.encoder.layers, vcfg, name)
    image_size = pair(getattr(vcfg, "image_size", None) or emb.image_size, "image_size")
    return VisionView(
        patch_weight=conv.weight,
        patch_bias=conv.bias,
        class_embedding=emb.class_embedding,
        positional_embedding=emb.position_embedding.weight,
        ln_pre=_ln(vision.pre_layrnorm, "pre_layrnorm"),
        blocks=blocks,
        ln_post=_ln(vision.post_layernorm, "post_layernorm"),
        proj=None if proj is None else proj.weight.T,
        image_size=image_size,
        source=f"transformers:{name}",
    )


def _features(out: Any, key: str) -> Tensor:
    """The embedding from a ``get_*_features`` / ``forward`` result.

    transformers 4.x returns a tensor; 5.x returns a ``BaseModelOutputWithPooling`` whose
    ``pooler_output`` holds the projected embedding; the ``*WithProjection`` models return
    ``image_embeds`` / ``text_embeds``.
    """
    if isinstance(out, Tensor):
        return out
    emb = getattr(out, key, None)
    if emb is None:
        emb = getattr(out, "pooler_output", None)
    if emb is None and isinstance(out, (tuple, list)) and out:
        emb = out[0]
    if not isinstance(emb, Tensor):
        raise TypeError(f"cannot find {key} or pooler_output in {type(out).__name__}")
    return emb


def check_tokenizer(tokenizer: Any, source: str) -> Any:
    """Refuse a tokenizer with no vocabulary beyond its special tokens.

    transformers 5's ``AutoTokenizer.from_pretrained(folder)`` on a folder without tokenizer
    files does not fail: it returns a ``CLIPTokenizer`` whose vocabulary is just the special
    tokens, which would silently encode every text as unknown tokens.
    """
    try:
        size = len(tokenizer)
        special = len(set(getattr(tokenizer, "all_special_tokens", []) or []))
    except TypeError:
        return tokenizer
    if size <= special + 1:
        raise ValueError(
            f"the tokenizer found for {source!r} has an empty vocabulary ({size} tokens, all special): "
            "its tokenizer files (tokenizer.json or vocab.json + merges.txt) are missing"
        )
    return tokenizer


class HFCLIPAdapter(CLIPAdapter):
    """A transformers CLIP model seen through cliplens. Build with :func:`cliplens.load` or :func:`cliplens.wrap`.

    Args:
        model: ``CLIPModel``, ``CLIPVisionModelWithProjection`` or ``CLIPVisionModel`` (never copied).
        name: the Hub id or folder it came from (default: ``model.config._name_or_path``).
        tokenizer: the model's tokenizer. If omitted it is loaded from ``name`` with
            ``AutoTokenizer`` the first time text is used; if that is impossible (a model built
            from a config, offline), using text raises :class:`~cliplens.errors.ModelLoadError`.
        processor: the model's ``CLIPImageProcessor`` (default: one built from the config's
            ``image_size`` with CLIP's standard mean and std).
        text_model: a separate text tower (e.g. ``CLIPTextModelWithProjection``) when ``model``
            has none.
    """

    family = "transformers"

    def __init__(
        self,
        model: nn.Module,
        name: str = "",
        tokenizer: Any = None,
        processor: Any = None,
        text_model: nn.Module | None = None,
        weights: str = "",
        naflex: bool | int = False,
    ) -> None:
        name = name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
        super().__init__(model, name, weights=weights or name)
        self._tokenizer = tokenizer
        self._tokenizer_error: str | None = None
        self._processor = processor
        self.text_model = text_model
        self._naflex = 0
        model.eval()
        if text_model is not None:
            text_model.eval()
        self.vision  # validate the architecture eagerly  # noqa: B018
        if naflex:
            self.naflex = naflex

    def _build_vision_view(self) -> VisionView:
        from cliplens.models.families import build_view, family_for

        try:
            family_for(self.model, self.name, "transformers")
        except UnsupportedArchitectureError:  # the transformers-specific message where there is one
            config = getattr(self.model, "config", None)
            check_hf_model_type(getattr(config, "model_type", None), self.name, type(self.model).__name__)
            raise
        return build_view(self.model, self.name, "transformers")

    # ---- preprocessing ------------------------------------------------------
    @property
    def processor(self) -> Any:
        """The source's image processor (built from the config when none was given)."""
        if self._processor is None:
            model_type = getattr(getattr(self.model, "config", None), "model_type", None)
            self._processor = default_image_processor(self.vision.image_size, model_type in SIGLIP_MODEL_TYPES)
        return self._processor

    @property
    def naflex(self) -> int:
        """SigLIP 2 NaFlex variable resolution: each image is resized keeping its aspect ratio to the largest size
        of at most this many patches (the model's own ``Siglip2ImageProcessor`` rule), and runs at its own token
        grid with the positional table resized as ``Siglip2VisionEmbeddings`` does. 0 (the default): every image
        at the fixed native grid (``√num_patches`` patches a side), so that images batch. Set it with
        ``cliplens.load(name, naflex=True)`` (the processor's ``max_num_patches``) or ``naflex=N``, or here."""
        return self._naflex

    @naflex.setter
    def naflex(self, value: bool | int) -> None:
        if isinstance(value, bool):
            value = int(getattr(self.processor, "max_num_patches", None) or 256) if value else 0
        if not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"naflex takes True, False or a number of patches (> 0), got {value!r}")
        if value and not is_siglip2(self.model):
            raise InvalidInputError(
                f"naflex (variable resolution) is SigLIP 2's (transformers Siglip2Model / Siglip2VisionModel); "
                f"{self.name or type(self.model).__name__} is a {type(self.model).__name__}: run it at a fixed "
                "size (any multiple of its patch size works with model.run / decompose)")
        self._naflex = value
        self._preprocessor = None  # the preprocessing and the fingerprint follow the setting
        self._fingerprint = None

    @property
    def preprocess_config(self) -> PreprocessConfig:
        proc = self.processor
        if not is_siglip2(self.model):
            return preprocess_config_from_hf(proc)
        cfg = preprocess_config_from_hf(fixed_size_processor(proc, self.model))
        if not self._naflex:
            return cfg
        return dataclasses.replace(cfg, resize_mode="max_patches", max_patches=self._naflex,
                                   patch=int(getattr(proc, "patch_size", None) or self.vision.patch_size[0]),
                                   crop="none")

    # ---- text ---------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer; loaded from ``name`` on first use when none was given."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        how = (
            "pass one explicitly: cliplens.wrap(model, tokenizer=CLIPTokenizer.from_pretrained(...)) "
            "or cliplens.load(..., tokenizer=...)"
        )
        if self._tokenizer_error is not None:
            raise ModelLoadError(self._tokenizer_error)
        if not self.name:
            self._tokenizer_error = (
                f"{type(self.model).__name__} has no tokenizer: it was not loaded from a Hub id or folder, "
                f"so cliplens cannot find one to encode text; {how}."
            )
            raise ModelLoadError(self._tokenizer_error)
        transformers = require_transformers()
        try:
            with offline_guard(network=not Path(self.name).is_dir()) as why:
                tok = transformers.AutoTokenizer.from_pretrained(self.name, local_files_only=why is not None)
            return check_tokenizer(tok, self.name)
        except Exception as e:  # OSError, ValueError, huggingface_hub errors, ...
            self._tokenizer_error = (
                f"could not load the tokenizer of {self.name!r} ({type(e).__name__}: {e}); the image side "
                f"works without it, but text needs it: {how}."
            )
            raise ModelLoadError(self._tokenizer_error) from e

    def load_tokenizer(self, folder: str | os.PathLike[str]) -> Any:
        """Use the Hugging Face tokenizer saved in ``folder`` (read with ``AutoTokenizer``, no network)."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InvalidInputError(f"tokenizer folder {str(folder)!r} does not exist: give the folder holding a "
                                    "Hugging Face tokenizer (e.g. a snapshot from `hf download <id>`)")
        transformers = require_transformers()
        try:
            tok = check_tokenizer(transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True),
                                  str(path))
        except Exception as e:
            raise ModelLoadError(f"could not read a Hugging Face tokenizer from {str(path)!r} ({type(e).__name__}: "
                                 f"{e})") from None
        self._tokenizer, self._tokenizer_error = tok, None
        return tok

    def set_tokenizer_error(self, message: str) -> None:
        """Record why no tokenizer could be had (raised when text is first used)."""
        self._tokenizer_error = message

    def _text_source(self) -> nn.Module:
        if self.text_model is not None:
            return self.text_model
        if hasattr(self.model, "get_text_features"):
            return self.model
        raise ModelLoadError(
            f"{type(self.model).__name__} has no text tower; pass text_model=CLIPTextModelWithProjection(...) "
            "to cliplens.wrap, or load a CLIPModel."
        )

    @property
    def context_length(self) -> int:
        """The text tower's ``max_position_embeddings`` (77 for CLIP)."""
        for src in (self.text_model, self.model):
            cfg = getattr(src, "config", None)
            text_cfg = getattr(cfg, "text_config", None)
            if text_cfg is None and str(getattr(cfg, "model_type", "")).endswith("text_model"):
                text_cfg = cfg
            n = getattr(text_cfg, "max_position_embeddings", None)
            if n:
                return int(n)
        n = getattr(self._tokenizer, "model_max_length", None)
        return int(n) if n and n < 100_000 else 77

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> HFCLIPAdapter:
        """Move the model (and a separate text model) in place and rebuild the view."""
        if self.text_model is not None:
            self.text_model.to(device=device, dtype=dtype)
        super().to(device=device, dtype=dtype)
        return self

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(
            list(texts), padding="max_length", max_length=self.context_length, truncation=True,
            return_tensors="pt",
        )
        device = next(self._text_source().parameters()).device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def _encode_tokens(self, tokens: dict[str, Tensor]) -> Tensor:
        src = self._text_source()  # takes fewer positions than the context as they are
        if hasattr(src, "get_text_features"):
            return _features(src.get_text_features(**tokens), "text_embeds")
        return _features(src(**tokens), "text_embeds")

    def _pooled_positions(self, tokens: dict[str, Tensor]) -> Tensor | None:
        """The position each row's embedding is read at, as the text model pools (the rule:
        :meth:`CLIPAdapter._pooled_positions`), for the towers of :func:`causal_text_model`; else ``None``."""
        text = causal_text_model(self._text_source())
        if text is None:
            return None
        ids = tokens["input_ids"]
        if text.eos_token_id == 2 and type(text).__name__.startswith("CLIP"):
            return ids.int().argmax(dim=-1)  # CLIP's rule for configs from before transformers PR #24773
        return (ids.int() == text.eos_token_id).int().argmax(dim=-1)  # the first eos

    def _text_parts(self) -> tuple[list[Tensor], Any, str]:
        src = self._text_source()
        tensors = text_tensors(src, skip=("vision_model.", "visual_projection."))
        cfg = getattr(src.config, "text_config", None) or src.config
        modules = " ".join(f"{n}={c!r}" for n, c in src.named_children() if not n.startswith(("vision", "visual")))
        return tensors, self.tokenizer, f"{type(src).__qualname__} {cfg.to_json_string(use_diff=False)} {modules}"

    # ---- the source's own image forward --------------------------------------
    @torch.no_grad()
    def source_encode_image(self, pixel_values: Tensor) -> Tensor:
        if is_siglip2(self.model):  # NaFlex inputs of the whole image (its own positional resize)
            values, mask, shapes = naflex_inputs(pixel_values, self.vision.patch_size[0])
            kw = dict(pixel_values=values, pixel_attention_mask=mask, spatial_shapes=shapes)
            out = self.model.get_image_features(**kw) if hasattr(self.model, "get_image_features") \
                else self.model(**kw)
            return _features(out, "image_embeds")
        interpolate = tuple(pixel_values.shape[-2:]) != tuple(self.vision.image_size)
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
        else:
            out = self.model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
        return _features(out, "image_embeds")


#: transformers text models whose attention is causal and whose embedding is read at the end-of-text token
CAUSAL_TEXT_MODELS = ("CLIPTextModel", "CLIPTextTransformer", "MetaClip2TextModel", "MetaClip2TextTransformer")
#: the classes that hold them and only add a projection (get_text_features / text_embeds)
TEXT_SOURCES = ("CLIPModel", "CLIPTextModel", "CLIPTextModelWithProjection", "MetaClip2Model", "MetaClip2TextModel",
                "MetaClip2TextModelWithProjection")


def causal_text_model(src: nn.Module) -> nn.Module | None:
    """The causal, eos-pooled text model inside ``src`` (transformers' own CLIP / MetaCLIP 2 classes, not a
    subclass: one may change the forward), or ``None`` when the text must keep the full context."""
    def ours(obj: Any) -> bool:
        return (type(obj).__module__ or "").startswith(("transformers.models.clip.", "transformers.models.metaclip_2."))

    if not ours(src) or type(src).__name__ not in TEXT_SOURCES:
        return None
    text = getattr(src, "text_model", src)
    if not ours(text) or type(text).__name__ not in CAUSAL_TEXT_MODELS or getattr(text, "eos_token_id", None) is None:
        return None
    return text

# ---- loading -------------------------------------------------------------------------------------

#: well-known transformers CLIP checkpoints: (id, decomposable, note)
KNOWN_IDS: tuple[tuple[str, bool, str], ...] = (
    ("openai/clip-vit-base-patch32", True, "OpenAI CLIP ViT-B/32"),
    ("openai/clip-vit-base-patch16", True, "OpenAI CLIP ViT-B/16"),
    ("openai/clip-vit-large-patch14", True, "OpenAI CLIP ViT-L/14"),
    ("openai/clip-vit-large-patch14-336", True, "OpenAI CLIP ViT-L/14 at 336 px"),
    ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", True, "OpenCLIP ViT-B/32 trained on LAION-2B"),
    ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", True, "OpenCLIP ViT-L/14 trained on LAION-2B"),
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", True, "OpenCLIP ViT-H/14 trained on LAION-2B"),
    ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", True, "OpenCLIP ViT-bigG/14 trained on LAION-2B"),
    ("facebook/metaclip-b32-400m", True, "MetaCLIP ViT-B/32"),
    ("google/siglip-base-patch16-224", True, "SigLIP B/16 (MAP head: exact per pool head × token, MLP lumped)"),
    ("google/siglip2-base-patch16-224", True, "SigLIP 2 B/16 (SiglipModel layout, MAP head)"),
    ("google/siglip2-base-patch16-naflex", True,
     "SigLIP 2 B/16 NaFlex: its native 16×16 grid (256 px) by default; naflex=True keeps each image's aspect"),
)

_DEFAULT_CLASS = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModelWithProjection",
    "metaclip_2": "MetaClip2Model",
    "metaclip_2_vision_model": "MetaClip2VisionModelWithProjection",
    "siglip": "SiglipModel",
    "siglip_vision_model": "SiglipVisionModel",
    "siglip2": "Siglip2Model",
    "siglip2_vision_model": "Siglip2VisionModel",
}
_CLASSES = frozenset(_DEFAULT_CLASS.values()) | {"CLIPVisionModel", "MetaClip2VisionModel"}


def pickled_weights(folder: Path) -> list[Path]:
    """The pickled weight files transformers would read from a ``save_pretrained`` folder (``pytorch_model*.bin``
    when the folder has no ``.safetensors`` weights, which transformers prefers)."""
    if any(folder.glob("model*.safetensors")):
        return []
    return sorted(folder.glob("pytorch_model*.bin"))


def folder_model_type(path: Path) -> str | None:
    """``model_type`` of a ``save_pretrained`` folder's ``config.json``."""
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"Cannot read {path / 'config.json'}: {e}") from e


def load(
    source: str,
    *,
    local: bool,
    device: Any,
    dtype: torch.dtype | None,
    cache_dir: str | None,
    tokenizer: Any,
    trust_checkpoint: bool = False,
    naflex: bool | int = False,
) -> CLIPAdapter:
    """A transformers CLIP from a Hub id or a ``save_pretrained`` folder, wrapped in an adapter (``naflex``: see
    :attr:`HFCLIPAdapter.naflex`).

    Pickled weights (``pytorch_model.bin``) load with ``weights_only=True`` (transformers' own default; a
    folder's files are also checked by :func:`cliplens.checkpoints.check_pickle` first, for a readable
    refusal) unless ``trust_checkpoint``. An unreachable Hub is noticed once, up front, and the load then
    uses the local cache only.
    """
    transformers = require_transformers()
    if local:
        check_hf_model_type(folder_model_type(Path(source)), source)
    what = f"{source!r} (Hugging Face transformers)"
    if local:
        for f in pickled_weights(Path(source)):
            check_pickle(f, what=what, trust=trust_checkpoint)
    with offline_guard(network=not local) as why:
        files_only = local or why is not None
        hub = dict(cache_dir=cache_dir, local_files_only=files_only)
        try:
            config = transformers.AutoConfig.from_pretrained(source, **hub)
        except (OSError, ValueError) as e:
            if local:
                raise ModelLoadError(f"Could not read the config of {what}: {short(e, 600)}") from e
            if repo_not_found(e):
                raise ModelNotFoundError(
                    f"Unknown model {source!r}: the Hugging Face Hub has no such repository. {LOCAL_HELP}"
                ) from e
            raise fetch_error(what, e, why=why, cache_dir=cache_dir) from e
        model_type = getattr(config, "model_type", None)
        check_hf_model_type(model_type, source)
        archs = [a for a in (getattr(config, "architectures", None) or []) if a in _CLASSES]
        cls = getattr(transformers, archs[0] if archs else _DEFAULT_CLASS[model_type])
        major = int(transformers.__version__.split(".")[0])
        dtype_kw = {"dtype" if major >= 5 else "torch_dtype": dtype or torch.float32}
        trust_kw = {"weights_only": False} if trust_checkpoint else {}  # the default is True
        try:
            model = cls.from_pretrained(source, config=config, **hub, **dtype_kw, **trust_kw)
        except Exception as e:  # OSError, ValueError, RuntimeError, SafetensorError, UnpicklingError, ...
            if "Weights only load failed" in " ".join(str(x) for x in chain(e)):
                raise checkpoint_error(what, source, e) from None
            if local:
                raise ModelLoadError(
                    f"Could not load the weights of {what}: {type(e).__name__}: {short(e, 600)}. Check the "
                    "folder's weight files (model.safetensors or pytorch_model.bin), or save the model again."
                ) from e
            if not isinstance(e, (OSError, ValueError, RuntimeError)):
                raise
            raise fetch_error(what, e, why=why, cache_dir=cache_dir) from e
        model.to(device)

        tok_error = None
        if tokenizer is None:
            try:
                tokenizer = check_tokenizer(transformers.AutoTokenizer.from_pretrained(source, **hub), source)
            except Exception as e:  # missing files, offline, unknown tokenizer class, ...
                tok_error = (
                    f"{what} has no loadable tokenizer ({type(e).__name__}: {short(e)}); images work "
                    "without it, text needs it: pass tokenizer=... to cliplens.load or cliplens.wrap."
                )
        processor = None
        try:
            if model_type in SIGLIP_MODEL_TYPES:  # SigLIP 2 NaFlex's own processor is kept (see naflex)
                processor = transformers.AutoImageProcessor.from_pretrained(source, **hub)
            else:
                processor = transformers.CLIPImageProcessor.from_pretrained(source, **hub)
        except Exception:  # no preprocessor_config.json: the family's standard preprocessing
            processor = None
        adapter = HFCLIPAdapter(model, source, tokenizer=tokenizer, processor=processor, weights=source,
                                naflex=naflex)
        if tok_error is not None:
            adapter.set_tokenizer_error(tok_error)
        return adapter


def is_model(obj: Any) -> bool:
    """Whether ``obj`` comes from transformers (:func:`cliplens.wrap` then checks its type)."""
    return (type(obj).__module__ or "").startswith("transformers")
