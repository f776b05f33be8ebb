"""A second image backbone beside CLIP: a vision foundation model (VFM) such as DINO or DINOv2.

Methods such as ProxyCLIP, CASS, Trident and CorrCLIP read a self-supervised ViT next to CLIP: its last
layer's patch features and its last block's queries, keys and values. :class:`VisionBackbone` wraps a
transformers model (``ViTModel`` for DINO, ``Dinov2Model``, ``Dinov2WithRegistersModel``) and gives exactly
that, computed by the model's own forward with forward hooks on the last block's q/k/v projections.

:func:`load_vfm` accepts what users have at hand:

- a transformers id (``"facebook/dinov2-base"``, ``"facebook/dino-vitb8"``, ...);
- the torch.hub name the papers use (``"dino_vitb8"``, ``"dinov2_vitb14_reg"``, ...; :data:`HUB_NAMES`), mapped
  to its transformers id;
- a local folder written by ``save_pretrained``;
- a loaded transformers model, or a :class:`VisionBackbone`.

Loading is lazy (nothing is read until a method first needs it) and cached per name, device and dtype.

**Positional rule** at a grid other than the native one (:data:`VFM_POSITIONAL`): ``"transformers"`` resizes the
table as transformers does (bicubic to the exact size); ``"hub"`` as the torch.hub code the papers load does
(:func:`hub_positional_table`): DINO and DINOv2 use bicubic with ``scale_factor=(n + 0.1) / N``, DINOv2 with
registers bicubic to the size, antialiased. The two differ by a few 1e-3 in the table; at the native grid (and a
square input) both use the table as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
)

#: the optional extra that installs what this module needs
EXTRA = "dino"

#: torch.hub names (facebookresearch/dino, facebookresearch/dinov2) -> their transformers ids
HUB_NAMES: dict[str, str] = {
    "dino_vits8": "facebook/dino-vits8",
    "dino_vits16": "facebook/dino-vits16",
    "dino_vitb8": "facebook/dino-vitb8",
    "dino_vitb16": "facebook/dino-vitb16",
    "dinov2_vits14": "facebook/dinov2-small",
    "dinov2_vitb14": "facebook/dinov2-base",
    "dinov2_vitl14": "facebook/dinov2-large",
    "dinov2_vitg14": "facebook/dinov2-giant",
    "dinov2_vits14_reg": "facebook/dinov2-with-registers-small",
    "dinov2_vitb14_reg": "facebook/dinov2-with-registers-base",
    "dinov2_vitl14_reg": "facebook/dinov2-with-registers-large",
    "dinov2_vitg14_reg": "facebook/dinov2-with-registers-giant",
}

#: transformers ``model_type`` -> the model class that has the backbone (no head)
MODEL_CLASSES: dict[str, str] = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
}

#: ImageNet statistics: the pixel normalisation of DINO and DINOv2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: how the positional table is resized at another grid: as transformers does, or as the torch.hub code does
VFM_POSITIONAL = ("transformers", "hub")

#: the last block's q/k/v projections, by transformers' module names (5.x, then 4.x)
_QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


def require_transformers() -> Any:
    """The transformers module, or one paragraph saying how to install the ``dino`` extra."""
    from cliplens.models.hub import require_transformers as require

    return require("A second vision backbone (DINO, DINOv2)", EXTRA)


@dataclass(frozen=True)
class VFMOutput:
    """What one forward of the backbone gives the map methods.

    Attributes:
        features: ``[B, D, gh, gw]`` the last layer's patch tokens after the final LayerNorm (what DINO's and
            DINOv2's ``get_intermediate_layers`` return), CLS and register tokens left out.
        q, k, v: ``[B, heads, N, head_dim]`` the last block's queries, keys and values over all ``N`` tokens
            (the ``prefix`` CLS and register tokens first, then the patches row by row), before the scale.
        prefix: how many tokens come before the patches (1 + registers).
        grid: ``(gh, gw)`` the patch grid.
    """

    features: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    prefix: int
    grid: tuple[int, int]

    def patches(self, t: Tensor) -> Tensor:
        """``q``, ``k`` or ``v`` restricted to the patch tokens: ``[B, heads, gh * gw, head_dim]``."""
        return t[:, :, self.prefix:]


class VisionBackbone:
    """A transformers DINO / DINOv2 model seen as the second backbone of a map method.

    Gradients are not needed by any method that reads it, so its forward runs without autograd.
    """

    def __init__(self, model: Any, name: str = "") -> None:
        kind = type(model).__name__
        if kind not in MODEL_CLASSES.values():
            raise InvalidInputError(
                f"Cannot use a {kind} as the second vision backbone: it must be a transformers "
                f"{', '.join(sorted(MODEL_CLASSES.values()))} (DINO checkpoints load as ViTModel), or a name such "
                f"as 'dino_vitb8' or 'facebook/dinov2-base'."
            )
        self.model = model.eval()
        self.name = name or getattr(model.config, "_name_or_path", "") or kind
        config = model.config
        p = config.patch_size
        self.patch_size: int = int(p if isinstance(p, int) else p[0])
        self.heads: int = int(config.num_attention_heads)
        self.width: int = int(config.hidden_size)
        self.head_dim: int = self.width // self.heads
        self.prefix: int = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.mean: tuple[float, float, float] = IMAGENET_MEAN
        self.std: tuple[float, float, float] = IMAGENET_STD
        self._qkv = self._last_qkv_modules()

    def __repr__(self) -> str:
        return f"VisionBackbone({self.name!r}, {type(self.model).__name__}, patch {self.patch_size})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _last_qkv_modules(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        blocks = None
        for path in ("encoder.layer", "encoder.layers", "layers"):
            try:
                blocks = self.model.get_submodule(path)
                break
            except AttributeError:
                continue
        if blocks is None or len(blocks) == 0:
            raise InvalidInputError(f"{self.name!r}: cannot find the transformer blocks of {type(self.model).__name__}.")
        last = blocks[-1]
        for attn_path in ("attention", "attention.attention"):
            for names in _QKV_NAMES:
                try:
                    mods = tuple(last.get_submodule(f"{attn_path}.{n}") for n in names)
                except AttributeError:
                    continue
                return mods  # type: ignore[return-value]
        raise InvalidInputError(
            f"{self.name!r}: cannot find the last block's query/key/value projections in this transformers "
            "version's model; please report it with `pip show transformers`."
        )

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid ``(gh, gw)`` of an input of ``height x width`` pixels (the remainder is dropped, as
        the patch convolution drops it)."""
        return height // self.patch_size, width // self.patch_size

    def normalize_from(self, pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
        """Pixels normalised with ``mean``/``std`` (CLIP's, as the map methods receive them) re-normalised with
        this backbone's statistics: ``((x * std + mean) - mean') / std'``."""
        dt = torch.float64 if pixels.dtype == torch.float64 else torch.float32

        def col(values: tuple[float, ...]) -> Tensor:
            return torch.tensor(values, dtype=dt, device=pixels.device).view(1, 3, 1, 1)

        out = (pixels.to(dt) * col(std) + col(mean) - col(self.mean)) / col(self.std)
        return out.to(pixels.dtype)

    @torch.no_grad()
    def forward(self, pixels: Tensor, *, positional: str = "transformers") -> VFMOutput:
        """One forward of ``pixels`` ``[B, 3, H, W]`` (already normalised for this backbone: see
        :meth:`normalize_from`), on the backbone's device and dtype; results on the pixels' device.
        ``positional``: the rule for the positional table at another grid (:data:`VFM_POSITIONAL`)."""
        if positional not in VFM_POSITIONAL:
            raise InvalidInputError(f"the second backbone's positional rule must be one of "
                                    f"{', '.join(VFM_POSITIONAL)}; got {positional!r}")
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InvalidInputError(f"pixels must be [B, 3, H, W]; got {tuple(pixels.shape)}")
        gh, gw = self.grid(*pixels.shape[-2:])
        if gh < 1 or gw < 1:
            raise InvalidInputError(
                f"{tuple(pixels.shape[-2:])} pixels is smaller than one {self.patch_size}-pixel patch of {self.name!r}."
            )
        seen: dict[int, Tensor] = {}

        def keep(i: int):
            def hook(_module: Any, _inputs: Any, output: Tensor) -> None:
                seen[i] = output
            return hook

        handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(self._qkv)]
        kwargs: dict[str, Any] = {}
        if type(self.model).__name__ == "ViTModel":
            kwargs["interpolate_pos_encoding"] = True  # ViTModel refuses other sizes without it
        emb = self.model.embeddings
        if positional == "hub":  # the embeddings call their own interpolate_pos_encoding: this instance's, here
            kind = self.model.config.model_type
            emb.interpolate_pos_encoding = lambda x, height, width: hub_positional_table(
                emb.position_embeddings, (height, width), self.patch_size, kind).to(x.dtype)
        try:
            out = self.model(pixel_values=pixels.to(self.device, self.dtype), **kwargs)
        finally:
            for h in handles:
                h.remove()
            emb.__dict__.pop("interpolate_pos_encoding", None)
        b = pixels.shape[0]
        q, k, v = (seen[i].reshape(b, -1, self.heads, self.head_dim).transpose(1, 2).to(pixels.device)
                   for i in range(3))
        tokens = out.last_hidden_state[:, self.prefix:].to(pixels.device)
        features = tokens.transpose(1, 2).reshape(b, self.width, gh, gw)
        return VFMOutput(features=features, q=q, k=k, v=v, prefix=self.prefix, grid=(gh, gw))

    __call__ = forward


def hub_positional_table(table: Tensor, size: tuple[int, int], patch: int, model_type: str) -> Tensor:
    """The positional table ``[1, 1 + n, D]`` for an input of ``size`` pixels, resized as the torch.hub code of
    ``model_type`` does (facebookresearch/dino ``vision_transformer.py``, facebookresearch/dinov2
    ``models/vision_transformer.py`` and ``hub/backbones.py``): ``"vit"`` (DINO) and ``"dinov2"`` bicubic with
    ``scale_factor=(n + 0.1) / N`` per side, ``"dinov2_with_registers"`` bicubic to the size with antialiasing.
    The table as it is when the grid is the native one and the input square. Computed in float32 (float64 for a
    float64 table)."""
    H, W = size
    g = (H // patch, W // patch)
    n = table.shape[1] - 1
    if g[0] * g[1] == n and H == W:
        return table
    M = int(round(n ** 0.5))
    d = table.shape[-1]
    work = table if table.dtype == torch.float64 else table.float()
    grid = work[:, 1:].reshape(1, M, M, d).permute(0, 3, 1, 2)
    if model_type == "dinov2_with_registers":
        grid = torch.nn.functional.interpolate(grid, size=g, mode="bicubic", antialias=True, align_corners=False)
    else:
        scale = ((g[0] + 0.1) / M, (g[1] + 0.1) / M)
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False,
                                               recompute_scale_factor=False)
    out = torch.cat([work[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)
    return out.to(table.dtype)


def known_names() -> list[str]:
    """The names :func:`load_vfm` knows without a look at the Hub (hub names, then transformers ids)."""
    return sorted(HUB_NAMES) + sorted(set(HUB_NAMES.values()))


def resolve_name(name: str) -> str:
    """The transformers id or folder a name stands for: hub names are mapped, ids and folders kept.

    A name that is neither a hub name, nor an ``org/name`` id, nor an existing folder is refused with close
    matches.
    """
    from cliplens.models.hub import close_matches, looks_like_path

    name = name.strip()
    if name in HUB_NAMES:
        return HUB_NAMES[name]
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if looks_like_path(name):
        raise ModelNotFoundError(
            f"Vision backbone folder {name!r} does not exist. Pass a folder written by transformers' "
            "save_pretrained (config.json + model.safetensors), or a name such as 'dino_vitb8'."
        )
    if name.count("/") == 1 and all(name.split("/")):
        return name
    near = close_matches(name, known_names())
    hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    raise ModelNotFoundError(
        f"Unknown vision backbone {name!r}.{hint} Use a torch.hub name ({', '.join(sorted(HUB_NAMES)[:6])}, …), a "
        "transformers id such as 'facebook/dinov2-base', a local folder written by save_pretrained, or pass a "
        "loaded transformers Dinov2Model / ViTModel."
    )


_CACHE: dict[tuple[str, str, str], VisionBackbone] = {}


def clear_cache() -> None:
    """Forget the backbones loaded by name (they are loaded again on next use)."""
    _CACHE.clear()


def load_vfm(spec: Any, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | None = None) -> VisionBackbone:
    """The second backbone ``spec`` names (see the module's docstring), on ``device`` in ``dtype``.

    A name is loaded once per (name, device, dtype) and reused; a model object is wrapped as it is (it is not
    moved: inputs go to its device). Errors (transformers missing, unknown name, weights neither in the
    local cache nor downloadable) are one :class:`~cliplens.errors.CliplensError` paragraph.
    """
    if isinstance(spec, VisionBackbone):
        return spec
    if not isinstance(spec, str):
        if type(spec).__module__.startswith("transformers"):
            return VisionBackbone(spec)
        raise InvalidInputError(
            f"The second vision backbone must be a name (e.g. 'dino_vitb8', 'facebook/dinov2-base', a folder) or "
            f"a loaded transformers model; got {type(spec).__name__}."
        )
    source = resolve_name(spec)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (source, str(dev), str(dtype))
    if key not in _CACHE:
        _CACHE[key] = VisionBackbone(_load_model(spec, source, cache_dir=cache_dir).to(dev, dtype), name=spec)
    return _CACHE[key]


def _load_model(name: str, source: str, *, cache_dir: str | None) -> Any:
    """The transformers model behind ``source`` (a Hub id or a folder), read from the cache when offline."""
    from cliplens.models.hub import offline_guard, repo_not_found, short

    transformers = require_transformers()
    local = Path(source).is_dir()
    what = f"vision backbone {name!r}" + ("" if source == name else f" ({source})")
    with offline_guard(network=not local) as why:
        hub = dict(cache_dir=cache_dir, local_files_only=local or why is not None)
        try:
            config = transformers.AutoConfig.from_pretrained(source, **hub)
            model_type = getattr(config, "model_type", None)
            if model_type not in MODEL_CLASSES:
                raise ModelLoadError(
                    f"Cannot use {what} as the second vision backbone: it is a {model_type!r} model; supported are "
                    f"{', '.join(sorted(MODEL_CLASSES))} (DINO, DINOv2, DINOv2 with registers)."
                )
            cls = getattr(transformers, MODEL_CLASSES[model_type])
            extra = {"add_pooling_layer": False} if model_type == "vit" else {}
            return cls.from_pretrained(source, config=config, **hub, **extra)
        except ModelLoadError:
            raise
        except (OSError, ValueError, RuntimeError) as e:
            if not local and repo_not_found(e):
                raise ModelNotFoundError(
                    f"Unknown {what}: the Hugging Face Hub has no such repository. Use a torch.hub name such as "
                    "'dino_vitb8' or 'dinov2_vitb14', or a transformers id such as 'facebook/dinov2-base'."
                ) from e
            if local:
                raise ModelLoadError(
                    f"Could not load {what} from its folder: {type(e).__name__}: {short(e, 400)}. The folder must "
                    "be written by transformers' save_pretrained (config.json + model.safetensors)."
                ) from e
            reason = ("HF_HUB_OFFLINE is set" if why == "offline" else
                      "the Hugging Face Hub cannot be reached" if why == "unreachable" else "the download failed")
            raise ModelLoadError(
                f"Could not load {what}: its weights are not in the local Hugging Face cache"
                f"{f' ({cache_dir})' if cache_dir else ''} and {reason}. Download them once where the Hub can be "
                f"reached (transformers.AutoModel.from_pretrained({source!r})), or name a folder written by "
                "save_pretrained instead (vfm=FOLDER; --param vfm=FOLDER on the command line), or pass a loaded "
                "transformers model. Underlying error: "
                f"{type(e).__name__}: {short(e)}"
            ) from e
