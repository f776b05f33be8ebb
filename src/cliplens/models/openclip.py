"""The open_clip family: its weights view, adapter, preprocessing and loading (its text side, the tokenizer and
the text tower cut short, in :mod:`cliplens.models.openclip_text`).

ViT image towers built from open_clip's own ``VisionTransformer`` with default residual blocks and
CLS-token pooling decompose exactly, OpenAI's ResNets (``ModifiedResNet``) at their attention pool
(:mod:`cliplens.models.resnet`); anything else (timm towers of a family cliplens does not read,
attentional pooling, average pooling, NormFormer-style custom blocks) raises
:class:`~cliplens.errors.UnsupportedArchitectureError`.

Loading: an architecture name with ``pretrained`` a tag (``"laion2b_s34b_b88k"``), a checkpoint
file, or ``"random"`` (random weights, on request only, drawn from a seed); ``hf-hub:org/repo`` and
``local-dir:/path`` (open_clip's own schemas). open_clip reads every weights file through cliplens's
safe loader (:func:`_safe_reads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cliplens.checkpoints import load_state_dict
from cliplens.core.view import BlockView, LayerNormView, VisionView
from cliplens.errors import (
    AssumedTokenizerWarning,
    CliplensError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    PretrainedRequiredError,
    RandomWeightsWarning,
    UnsupportedArchitectureError,
    install_hint,
)
from cliplens.images.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig, pair
from cliplens.models.base import CLIPAdapter, text_tensors
from cliplens.models.hub import (
    LOCAL_HELP,
    checkpoint_error,
    close_matches,
    fetch_error,
    fmt,
    looks_like_path,
    offline_guard,
    repo_not_found,
    short,
)
from cliplens.models.openclip_text import (
    assumed_tokenizer,
    causal_text_tower,
    default_tokenizer,
    encode_text_prefix,
)

#: the ``pretrained`` value that asks for random weights
RANDOM = "random"


def require_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f"open_clip is not installed. Install it with: {install_hint('open_clip_torch', 'open-clip')}."
        ) from e
    return open_clip


def _ln(module: nn.Module | None) -> LayerNormView | None:
    if module is None or isinstance(module, nn.Identity):
        return None
    if not isinstance(module, nn.LayerNorm):
        raise UnsupportedArchitectureError(
            f"open_clip tower uses a {type(module).__name__} where a LayerNorm was expected; "
            "cliplens decomposes LayerNorm ViTs only."
        )
    fp32 = type(module).__name__ == "LayerNormFp32"
    return LayerNormView(module.weight, module.bias, float(module.eps), compute_fp32=fp32)


def _activation(module: nn.Module) -> str:
    cls = type(module).__name__
    if cls == "QuickGELU":
        return "quick_gelu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise UnsupportedArchitectureError(f"unsupported MLP activation {cls} in open_clip tower")


def _layer_scale(module: nn.Module) -> Tensor | None:
    if isinstance(module, nn.Identity):
        return None
    gamma = getattr(module, "gamma", None)
    if gamma is None:
        raise UnsupportedArchitectureError(f"unknown layer-scale module {type(module).__name__}")
    return gamma


def _block_view(block: nn.Module, index: int) -> BlockView:
    if type(block).__name__ != "ResidualAttentionBlock" or not isinstance(
        getattr(block, "attn", None), nn.MultiheadAttention
    ):
        raise UnsupportedArchitectureError(
            f"block {index} is a {type(block).__name__}; cliplens decomposes open_clip's default "
            "ResidualAttentionBlock (nn.MultiheadAttention) only, not custom/NormFormer blocks."
        )
    attn: nn.MultiheadAttention = block.attn
    if attn.in_proj_weight is None:
        raise UnsupportedArchitectureError("attention with separate q/k/v dims is not supported")
    d = attn.embed_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias
    return BlockView(
        ln_1=_ln(block.ln_1),  # type: ignore[arg-type]
        q_weight=w[:d], k_weight=w[d : 2 * d], v_weight=w[2 * d :],
        q_bias=None if b is None else b[:d],
        k_bias=None if b is None else b[d : 2 * d],
        v_bias=None if b is None else b[2 * d :],
        out_weight=attn.out_proj.weight, out_bias=attn.out_proj.bias,
        ln_2=_ln(block.ln_2),  # type: ignore[arg-type]
        fc1_weight=block.mlp.c_fc.weight, fc1_bias=block.mlp.c_fc.bias,
        fc2_weight=block.mlp.c_proj.weight, fc2_bias=block.mlp.c_proj.bias,
        num_heads=attn.num_heads,
        activation=_activation(block.mlp.gelu),
        ls_1=_layer_scale(block.ls_1), ls_2=_layer_scale(block.ls_2),
        qkv_weight=w, qkv_bias=b,
    )


def vision_view_from_open_clip(model: nn.Module, name: str = "") -> VisionView:
    """Build a :class:`VisionView` over an open_clip model's image tower (no copies)."""
    visual = getattr(model, "visual", model)
    kind = type(visual).__name__
    if kind == "ModifiedResNet":  # OpenAI's ResNets: their own family (cliplens.models.resnet)
        from cliplens.models.resnet import vision_view_from_resnet

        return vision_view_from_resnet(model, name)
    if kind != "VisionTransformer":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} has a {kind} image tower; cliplens decomposes open_clip "
            "VisionTransformer towers (ViT-*) only."
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} pools with attentional pooling (CoCa-style); only CLS-token "
            "pooling decomposes exactly."
        )
    if getattr(visual, "pool_type", "tok") != "tok":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} pools with pool_type={visual.pool_type!r}; only CLS-token "
            "('tok') pooling is supported."
        )
    blocks = tuple(_block_view(b, i) for i, b in enumerate(visual.transformer.resblocks))
    ln_post = _ln(visual.ln_post)
    if ln_post is None:
        raise UnsupportedArchitectureError("open_clip tower without ln_post is not supported")
    conv = visual.conv1
    return VisionView(
        patch_weight=conv.weight,
        patch_bias=conv.bias,
        class_embedding=visual.class_embedding,
        positional_embedding=visual.positional_embedding,
        ln_pre=_ln(visual.ln_pre),
        blocks=blocks,
        ln_post=ln_post,
        proj=visual.proj,
        image_size=tuple(int(s) for s in visual.image_size),  # type: ignore[arg-type]
        source=f"open_clip:{name}",
    )


class OpenCLIPAdapter(CLIPAdapter):
    """An open_clip model seen through cliplens. Build with :func:`cliplens.load` or :func:`cliplens.wrap`."""

    family = "open_clip"

    def __init__(self, model: nn.Module, name: str, tokenizer: Any = None, preprocess: Any = None,
                 weights: str = "") -> None:
        super().__init__(model, name, weights=weights)
        open_clip = require_open_clip()
        self._tokenizer_error: str | None = None
        self._tokenizer_note: str | None = None  # said once, at the first text (wrap without a name)
        if tokenizer is None and not name and weights == "wrapped":
            tokenizer, self._tokenizer_error, self._tokenizer_note = assumed_tokenizer(open_clip, model)
        elif tokenizer is None:
            tokenizer, self._tokenizer_error = default_tokenizer(open_clip, name)
        self._tokenizer = tokenizer
        self.source_preprocess = preprocess
        model.eval()
        self.vision  # validate the architecture eagerly  # noqa: B018

    def _build_vision_view(self) -> VisionView:
        from cliplens.models.families import build_view

        return build_view(self.model, self.name, "open_clip")

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer; raises :class:`~cliplens.errors.ModelLoadError` (at text time, never at load
        time) when the model's own tokenizer could not be had (SigLIP's comes from the Hub)."""
        if self._tokenizer is None:
            raise ModelLoadError(self._tokenizer_error or f"{self.name or 'this model'} has no tokenizer.")
        if self._tokenizer_note is not None:
            note, self._tokenizer_note = self._tokenizer_note, None
            warnings.warn(note, AssumedTokenizerWarning, stacklevel=3)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value
        self._tokenizer_error = None
        self._tokenizer_note = None

    def load_tokenizer(self, folder: str | os.PathLike[str]) -> Any:
        """Use the Hugging Face tokenizer saved in ``folder`` (``tokenizer.json``, or a SentencePiece model with its
        config), with the context length and cleaning the model's open_clip config gives its own
        (``HFTokenizer``): for SigLIP names whose Hub tokenizer cannot be fetched here."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InvalidInputError(f"tokenizer folder {str(folder)!r} does not exist: give the folder holding a "
                                    "Hugging Face tokenizer (e.g. a snapshot from `hf download <id>`)")
        open_clip = require_open_clip()
        text_cfg = (open_clip.get_model_config(self.name) or {}).get("text_cfg") or {}
        kw = dict(text_cfg.get("tokenizer_kwargs") or {})
        context = int(getattr(self.model, "context_length", None) or text_cfg.get("context_length") or 77)
        try:
            from open_clip.tokenizer import HFTokenizer

            tok = HFTokenizer(str(path), context_length=context, **kw)
        except Exception as e:  # missing files, unknown tokenizer class, sentencepiece not installed, ...
            raise ModelLoadError(f"could not read a Hugging Face tokenizer from {str(path)!r} ({type(e).__name__}: "
                                 f"{e})") from None
        self.tokenizer = tok
        return tok

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return preprocess_config_from_open_clip(self.model)

    @property
    def context_length(self) -> int:
        n = getattr(self._tokenizer, "context_length", None) or getattr(self.model, "context_length", None)
        return int(n or 77)

    def _tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # SimpleTokenizer
            return [len(tok.encode(t)) + 2 for t in texts]
        inner = getattr(tok, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None:
            return [len(inner(t, truncation=False)["input_ids"]) for t in texts]
        return [0 for _ in texts]

    def _pooled_positions(self, tokens: Tensor) -> Tensor | None:
        """The end-of-text position of each row (``argmax`` of the ids, or the first ``eos`` id, as open_clip
        pools), for text towers that qualify (:func:`causal_text_tower`); ``None`` for the others."""
        tower = causal_text_tower(self.model)
        if tower is None:
            return None
        _, pool, eos = tower
        return tokens.argmax(dim=-1) if pool == "argmax" else (tokens == eos).int().argmax(dim=-1)

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        tower = causal_text_tower(self.model)
        if tower is None or tokens.shape[1] >= tower[0].positional_embedding.shape[0]:
            return self.model.encode_text(tokens)  # the source itself at full length
        return encode_text_prefix(*tower, tokens)

    def _text_parts(self) -> tuple[list[Tensor], Any, str] | None:
        if self._tokenizer is None:  # no text side to fingerprint (text raises the tokenizer's error)
            return None
        m = self.model
        pool = (getattr(m, "text_pool_type", None), getattr(m, "text_eos_id", None))
        modules = " ".join(f"{n}={c!r}" for n, c in m.named_children() if n != "visual")
        return text_tensors(m, skip=("visual.",)), self.tokenizer, f"{type(m).__qualname__} {pool} {modules}"

    @torch.no_grad()
    def source_encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values, normalize=False)


# ---- preprocessing ---------------------------------------------------------------------------


def preprocess_config_from_open_clip(model: Any) -> PreprocessConfig:
    """The inference transform of an open_clip model (``image_transform(..., is_train=False)``).

    Reads ``model.visual.preprocess_cfg`` (open_clip >= 2.24); older versions fall back
    to ``visual.image_size`` / ``image_mean`` / ``image_std``. Mirrors open_clip's
    quirks: for a non-square ``shortest`` size it always resizes bicubic, and only the
    ``longest`` mode pads with ``fill_color`` (the others pad with 0).
    """
    visual = getattr(model, "visual", model)
    cfg: Any = getattr(visual, "preprocess_cfg", None) or {}
    if not isinstance(cfg, dict):  # an open_clip PreprocessCfg dataclass
        cfg = {k: getattr(cfg, k) for k in ("size", "mean", "std", "interpolation", "resize_mode",
                                             "fill_color") if hasattr(cfg, k)}
    size = cfg.get("size") or getattr(visual, "image_size", None) or 224
    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or OPENAI_CLIP_STD
    interpolation = cfg.get("interpolation") or "bicubic"
    # open_clip: 'bilinear' -> BILINEAR, anything else ('bicubic', 'random') -> BICUBIC
    interpolation = {"bilinear": "bilinear", "nearest": "nearest"}.get(interpolation, "bicubic")
    resize_mode = cfg.get("resize_mode") or "shortest"
    fill_color = int(cfg.get("fill_color") or 0)
    h, w = pair(size, "size")
    common = dict(image_size=(h, w), mean=mean, std=std, convert_rgb="last", resize_backend="pil",
                  rescale_arithmetic="div", source="open_clip")
    if resize_mode == "squash":
        return PreprocessConfig(resize_size=(h, w), resize_mode="squash", interpolation=interpolation, crop="none",
                   **common)
    if resize_mode == "longest":
        return PreprocessConfig(resize_size=(h, w), resize_mode="longest", interpolation=interpolation,
                   crop="center_round", fill_color=fill_color, **common)
    if resize_mode != "shortest":
        raise InvalidInputError(f"unknown open_clip resize_mode {resize_mode!r}")
    if h == w:
        return PreprocessConfig(resize_size=h, resize_mode="shortest", interpolation=interpolation,
                   crop="center_round", **common)
    return PreprocessConfig(resize_size=(h, w), resize_mode="shortest", interpolation="bicubic",
               crop="center_round", **common)



# ---- loading -------------------------------------------------------------------------------------


def installed() -> Any | None:
    """open_clip if installed, else ``None``."""
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip


def from_openai_name(name: str) -> str:
    """open_clip's spelling of an architecture named as OpenAI's ``clip.load`` names it (the name CLIP Surgery,
    SCLIP, ClearCLIP and NACLIP configs use): ``"ViT-B/32"`` -> ``"ViT-B-32"``, ``"ViT-L/14@336px"`` ->
    ``"ViT-L-14-336"``. Any other name comes back with its ``/`` replaced by ``-`` (callers check the result
    against :func:`architecture_names`)."""
    spelled = name.replace("/", "-")
    at = re.fullmatch(r"(.+)@(\d+)px", spelled)  # OpenAI writes the input size as "@336px"
    return f"{at[1]}-{at[2]}" if at else spelled


def architecture_names() -> list[str]:
    """open_clip's architecture names (empty when open_clip is not installed)."""
    oc = installed()
    return list(oc.list_models()) if oc is not None else []


def pretrained_tags(arch: str) -> list[str]:
    oc = installed()
    return list(oc.list_pretrained_tags_by_model(arch)) if oc is not None else []


def support(model_name: str) -> tuple[bool, str]:
    """``(decomposable, note)`` for an open_clip architecture, from its config alone: the first image-tower family
    (:mod:`cliplens.models.families`) that claims the config says what it reads, or why it cannot."""
    from cliplens.models.families import supported_config

    oc = require_open_clip()
    cfg = oc.get_model_config(model_name) or {}
    try:
        found = supported_config(cfg)
    except UnsupportedArchitectureError as e:
        return False, str(e)
    if found is not None:
        return True, found[1]
    v = cfg.get("vision_cfg", {})
    if v.get("timm_model_name"):
        return False, f"timm image tower ({v['timm_model_name']}) of a family cliplens does not read"
    return False, "an image tower of a family cliplens does not read"


def clip_vit_support(cfg: dict[str, Any]) -> str | None:
    """The CLIP ViT family's note for an open_clip config (``None``: not a ViT of open_clip's own); raises for a
    ViT variant the family cannot read."""
    v = cfg.get("vision_cfg", {})
    t = cfg.get("text_cfg", {})
    if not cfg or v.get("timm_model_name") or isinstance(v.get("layers"), (list, tuple)):
        return None
    if v.get("attentional_pool"):
        raise UnsupportedArchitectureError("attentional pooling (CoCa-style): the embedding is not the CLS token")
    if v.get("pool_type", "tok") != "tok":
        raise UnsupportedArchitectureError(f"{v['pool_type']!r} pooling: the embedding is not the CLS token")
    custom = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
    if v.get("block_type") == "custom" or any(v.get(k) for k in custom):
        raise UnsupportedArchitectureError("custom attention blocks (qk-norm / scaled-cosine / NormFormer-style)")
    notes = ["ViT"]
    if v.get("ls_init_value") is not None:
        notes.append("layer-scale")
    if cfg.get("quick_gelu"):
        notes.append("QuickGELU")
    if "multimodal_cfg" in cfg:
        notes.append("CoCa")
    if t.get("hf_model_name"):
        notes.append(f"text tower {t['hf_model_name']} (its config is fetched from the Hub)")
    return ", ".join(notes)


def unsupported(name: str, note: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"{name} cannot be decomposed: {note}. Pick an open_clip ViT with CLS pooling such as ViT-B-16 "
        "(cliplens.list_models() marks which models decompose)."
    )


def pretrained_required(arch: str) -> PretrainedRequiredError:
    tags = pretrained_tags(arch)
    have = (f"its pretrained tags: {fmt(tags, 40)}" if tags
            else f"open_clip has no pretrained weights for {arch}")
    return PretrainedRequiredError(
        f"{arch} needs weights: pass pretrained=<tag> (--pretrained on the command line); {have}. "
        f"pretrained= also takes a local checkpoint file, or {RANDOM!r} for random weights (testing only: "
        "their scores mean nothing)."
    )


def load_architecture(arch: str, pretrained: str | None, *, trust_checkpoint: bool = False, seed: int = 0,
                      **kw: Any) -> CLIPAdapter:
    """An open_clip built-in architecture with a tag, a checkpoint file, or ``"random"`` weights (drawn from
    ``seed``: the same seed gives the same weights)."""
    oc = require_open_clip()
    names = list(oc.list_models())
    if arch not in names:
        if from_openai_name(arch) in names:
            arch = from_openai_name(arch)
        else:
            close = close_matches(arch, names)
            did = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"Unknown open_clip architecture {arch!r}.{did} open_clip.list_models() (or "
                f"cliplens.list_models()) lists them. {LOCAL_HELP}"
            )
    ok, note = support(arch)
    if not ok:
        raise unsupported(arch, note)
    quick_gelu = False
    if pretrained is None:
        raise pretrained_required(arch)
    if pretrained == RANDOM:
        warnings.warn(f"{arch} is built with RANDOM weights (pretrained={RANDOM!r}, seed {seed}): its embeddings and "
                      "every score computed from them mean nothing.", RandomWeightsWarning, stacklevel=3)
        return create(arch, None, quick_gelu=False, weights=RANDOM, seed=seed, **kw)
    ckpt = Path(pretrained).expanduser()
    if ckpt.is_file():
        return create(arch, str(ckpt), weights=str(ckpt), trust_checkpoint=trust_checkpoint, **kw)
    if ckpt.is_dir():
        raise ModelLoadError(
            f"pretrained={pretrained!r} is a folder; pretrained= takes a checkpoint file. For a folder "
            f"saved by open_clip or transformers call cliplens.load({pretrained!r})."
        )
    if looks_like_path(pretrained):
        raise ModelLoadError(f"Checkpoint file not found: {pretrained!r} (for {arch}). {LOCAL_HELP}")
    cfg = oc.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = oc.list_pretrained_tags_by_model(arch)
        close = close_matches(pretrained, tags, cutoff=0.4)
        did = f" Did you mean: {', '.join(close)}?" if close else ""
        have = (f" Tags for {arch}: {fmt(tags, 30)}." if tags else f" open_clip has no pretrained weights for {arch}.")
        raise ModelNotFoundError(
            f"{arch} has no pretrained tag {pretrained!r}.{did}{have} pretrained= also takes a local "
            f"checkpoint file, or {RANDOM!r} for random weights."
        )
    quick_gelu = bool(cfg.get("quick_gelu")) and not oc.get_model_config(arch).get("quick_gelu")
    return create(arch, pretrained, quick_gelu=quick_gelu, weights=pretrained, **kw)


class _RootLogCapture(logging.Handler):
    """Collect what open_clip logs (it uses the root logger) while a model is created."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # pragma: no cover - a malformed record must not break loading
            pass

    def __enter__(self) -> _RootLogCapture:
        root = logging.getLogger()
        self._level = root.level
        if root.getEffectiveLevel() > logging.WARNING:  # a quiet root logger would drop the record
            root.setLevel(logging.WARNING)
        root.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


_READ_LOCK = threading.Lock()


@contextlib.contextmanager
def _safe_reads(what: str, trust: bool) -> Iterator[None]:
    """While a model is created, open_clip reads every checkpoint through cliplens's safe loader.

    open_clip reads each weights file (a tag's download, a checkpoint file, a ``local-dir:`` or ``hf-hub:``
    model's weights, a tower's weights) with ``open_clip.factory.load_state_dict``; inside this block that
    function is :func:`cliplens.checkpoints.load_state_dict` (``torch.load(weights_only=True)`` unless the
    user trusts the file, one-paragraph errors), so open_clip never unpickles a file itself. The lock keeps
    two threads from swapping it at once.
    """
    try:
        from open_clip import factory
    except ImportError:  # pragma: no cover - require_open_clip ran first
        yield
        return
    if not callable(getattr(factory, "load_state_dict", None)):  # another layout: open_clip's weights_only stays
        yield
        return

    def read(checkpoint_path: str, device: Any = "cpu", weights_only: bool = True, **_: Any) -> dict[str, Any]:
        return load_state_dict(checkpoint_path, what=what, trust=trust, map_location=device)

    with _READ_LOCK:
        original = factory.load_state_dict
        factory.load_state_dict = read
        try:
            yield
        finally:
            factory.load_state_dict = original


def _needs_hub(oc: Any, model_name: str, pretrained: str | None) -> bool:
    """Whether creating the model may fetch from the Hugging Face Hub: an ``hf-hub:`` model, a pretrained tag,
    a text tower from transformers (its config comes from the Hub), or a tokenizer from the Hub (SigLIP's)."""
    if model_name.startswith("hf-hub:") or (pretrained is not None and not os.path.isfile(pretrained)):
        return True
    try:
        cfg = oc.get_model_config(model_name) or {}
    except Exception:  # an unreadable local-dir config: open_clip says so when it creates the model
        return False
    text = cfg.get("text_cfg") or {}
    return bool(text.get("hf_model_name") or text.get("hf_tokenizer_name"))


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw a model's random initialisation from ``seed`` (on the CPU, where open_clip builds it), leaving the
    caller's random state as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def create(
    model_name: str,
    pretrained: str | None,
    *,
    device: Any,
    dtype: torch.dtype | None,
    cache_dir: str | None,
    tokenizer: Any,
    quick_gelu: bool = False,
    weights: str = "",
    trust_checkpoint: bool = False,
    seed: int | None = None,
) -> CLIPAdapter:
    """``open_clip.create_model_and_transforms`` with readable errors, wrapped in an adapter.

    Every weights file is read through the safe loader (:func:`_safe_reads`); an unreachable Hub is noticed
    once, up front, and the load then uses the local cache only (:func:`offline_guard`). ``seed`` fixes
    the random initialisation (for random weights).
    """
    oc = require_open_clip()
    what = f"{model_name!r}" + (f" with pretrained={pretrained!r}" if pretrained else "") + " (open_clip)"
    expect_weights = pretrained is not None or model_name.startswith(("hf-hub:", "local-dir:"))
    with offline_guard(network=_needs_hub(oc, model_name, pretrained)) as why, _RootLogCapture() as logs:
        try:
            with _safe_reads(what, trust_checkpoint), _seeded(seed):
                model, _, preprocess = oc.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=device, cache_dir=cache_dir,
                    pretrained_text=False, force_quick_gelu=quick_gelu, weights_only=not trust_checkpoint,
                )
        except CliplensError:
            raise
        except Exception as e:  # corrupt files, Hub errors, shape mismatches, ...
            if pretrained and os.path.isfile(pretrained):
                raise checkpoint_error(what, pretrained, e) from e
            if model_name.startswith("local-dir:"):
                raise ModelLoadError(f"Could not load {what}: {type(e).__name__}: {short(e, 400)}") from e
            if repo_not_found(e):
                raise ModelNotFoundError(
                    f"Unknown model {model_name!r}: the Hugging Face Hub has no such repository. {LOCAL_HELP}"
                ) from e
            if not isinstance(e, (RuntimeError, OSError, ValueError)):
                raise
            raise fetch_error(what, e, why=why, cache_dir=cache_dir) from e
        if expect_weights and any("No pretrained weights loaded" in m for m in logs.messages):
            # open_clip falls back to random weights when an 'hf-hub:'/'local-dir:' model has a config but
            # its weights cannot be found or fetched; it only logs that.
            detail = " ".join(m for m in logs.messages if "weights" in m.lower())
            if model_name.startswith("local-dir:"):
                raise ModelLoadError(
                    f"Could not load {what}: the folder has open_clip_config.json but no weights file "
                    f"(open_clip_model.safetensors, open_clip_pytorch_model.bin, ...). open_clip said: {detail}"
                )
            raise fetch_error(what, RuntimeError(detail), why=why, cache_dir=cache_dir)
        if dtype is not None:
            model.to(dtype=dtype)
        adapter = OpenCLIPAdapter(model, model_name, tokenizer=tokenizer, preprocess=preprocess,
                                  weights=weights or model_name)
        adapter.seed = seed if adapter.random_weights else None
        return adapter


def weight_files(folder: Path) -> list[Path]:
    """open_clip weight files in a ``local-dir`` folder."""
    return sorted(p for p in folder.glob("open_clip*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is an open_clip model object :func:`cliplens.wrap` accepts."""
    if not (type(obj).__module__ or "").startswith("open_clip"):
        return False
    oc = require_open_clip()
    classes = tuple(c for c in (getattr(oc, "CLIP", None), getattr(oc, "CustomTextCLIP", None),
                                getattr(oc, "CoCa", None)) if isinstance(c, type))
    return isinstance(obj, classes)
