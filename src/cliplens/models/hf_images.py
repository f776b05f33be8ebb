"""The image processors of transformers models, as cliplens preprocessing: the processor a model gets when none
was given, SigLIP 2 NaFlex's inputs and fixed-size processor, and :class:`~cliplens.images.config.PreprocessConfig`
from a processor (both transformers backends)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.errors import InvalidInputError
from cliplens.images.config import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PreprocessConfig,
    interpolation_name,
    pair,
)
from cliplens.models.hub import require_transformers

__all__ = ["default_image_processor", "fixed_size_processor", "is_siglip2", "naflex_inputs",
           "preprocess_config_from_hf"]


def default_image_processor(image_size: tuple[int, int] | int, siglip: bool = False) -> Any:
    """A ``CLIPImageProcessor`` for ``image_size`` with CLIP's standard mean/std (bicubic, centre crop); for
    SigLIP / SigLIP 2 a ``SiglipImageProcessor`` (resized to ``image_size``, no crop, mean = std = 0.5)."""
    transformers = require_transformers()
    h, w = pair(image_size, "image_size")
    if siglip:
        return transformers.SiglipImageProcessor(size={"height": h, "width": w})
    return transformers.CLIPImageProcessor(
        size={"shortest_edge": min(h, w)},
        crop_size={"height": h, "width": w},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


# ---- SigLIP 2 NaFlex inputs (the image tower itself: cliplens.models.siglip) -----------------------------------


def is_siglip2(model: Any) -> bool:
    """Whether ``model`` is a transformers SigLIP 2 (NaFlex: ``Siglip2Model`` / ``Siglip2VisionModel``)."""
    return str(getattr(getattr(model, "config", None), "model_type", "")).startswith("siglip2")


def naflex_inputs(pixel_values: Tensor, patch: int) -> tuple[Tensor, Tensor, Tensor]:
    """``[B, C, H, W]`` -> Siglip2's NaFlex inputs for the whole image: ``pixel_values`` ``[B, P, p·p·C]`` (patches
    row-major, features in (row, column, channel) order as ``Siglip2ImageProcessor`` makes them),
    ``pixel_attention_mask`` ``[B, P]`` (all ones) and ``spatial_shapes`` ``[B, 2]``."""
    b, c, h, w = pixel_values.shape
    gh, gw = h // patch, w // patch
    x = pixel_values.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, -1)
    mask = torch.ones(b, gh * gw, dtype=torch.long, device=x.device)
    shapes = torch.tensor([[gh, gw]] * b, dtype=torch.long, device=x.device)
    return x, mask, shapes


def fixed_size_processor(processor: Any, model: Any) -> Any:
    """The image processor cliplens preprocesses a SigLIP with: the model's own (``SiglipImageProcessor``: resize
    to the native size, no crop); for a NaFlex ``Siglip2ImageProcessor`` (which patchifies to a variable grid) a
    ``SiglipImageProcessor`` resizing to the fixed native size (``√num_patches`` patches per side) with the same
    mean, std, resampling and rescale (for non-square images this squashes where NaFlex keeps the aspect)."""
    if not type(processor).__name__.startswith("Siglip2ImageProcessor"):
        return processor
    transformers = require_transformers()
    vcfg = getattr(model.config, "vision_config", None) or model.config
    side = int(np.sqrt(int(vcfg.num_patches))) * int(processor.patch_size)
    return transformers.SiglipImageProcessor(
        size={"height": side, "width": side}, resample=processor.resample, image_mean=processor.image_mean,
        image_std=processor.image_std, rescale_factor=processor.rescale_factor)


# ---- preprocessing ---------------------------------------------------------------------------


def preprocess_config_from_hf(processor: Any) -> PreprocessConfig:
    """The transform of a Hugging Face ``CLIPImageProcessor`` (or a ``CLIPProcessor``).

    Handles the torchvision backend (transformers 5's ``CLIPImageProcessor``, and the
    ``...Fast`` classes of 4.x) and the PIL/numpy backend (``CLIPImageProcessorPil`` and
    4.x's slow ``CLIPImageProcessor``). Reads ``size`` (``shortest_edge`` or
    ``height``/``width``), ``crop_size``, ``resample``, ``do_resize``, ``do_center_crop``,
    ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``, ``image_std``.
    """
    ip = getattr(processor, "image_processor", None) or processor

    def get(name: str, default: Any = None) -> Any:
        value = getattr(ip, name, None)
        return default if value is None else value

    def size_dict(value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if isinstance(value, (int, np.integer)):
            return {"shortest_edge": int(value)}
        if isinstance(value, (tuple, list)):
            h, w = pair(value, "size")
            return {"height": h, "width": w}
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return {k: getattr(value, k) for k in ("shortest_edge", "longest_edge", "height", "width",
                                                 "max_height", "max_width")
                if getattr(value, k, None) is not None}

    backend = getattr(ip, "backend", None)
    if not isinstance(backend, str):
        backend = "torchvision" if type(ip).__name__.endswith("Fast") else "pil"
    torch_backend = backend != "pil"

    resample = get("resample", 3)
    interpolation = interpolation_name(resample)
    size = size_dict(get("size", {"shortest_edge": 224}))
    do_resize = bool(get("do_resize", True))
    if "shortest_edge" in size and "longest_edge" not in size:
        resize_mode, resize_size = "shortest", int(size["shortest_edge"])
    elif "height" in size and "width" in size:
        resize_mode, resize_size = "squash", (int(size["height"]), int(size["width"]))
    elif do_resize:
        raise InvalidInputError(
            f"unsupported image-processor size {size!r}; cliplens supports 'shortest_edge' or "
            "'height'/'width'"
        )
    else:
        resize_mode, resize_size = "squash", (224, 224)
    # SigLIP's processors have no crop at all (do_center_crop and crop_size are None); CLIP's older ones may lack
    # the attribute, and crop
    do_crop = bool(get("do_center_crop", True)) and not (getattr(ip, "do_center_crop", True) is None
                                                          and getattr(ip, "crop_size", None) is None)
    crop_size = size_dict(get("crop_size", {"height": 224, "width": 224}))
    if do_crop:
        if "height" not in crop_size:
            raise InvalidInputError(f"unsupported crop_size {crop_size!r}; expected height and width")
        image_size = (int(crop_size["height"]), int(crop_size["width"]))
    else:
        image_size = pair(resize_size, "size")
    rescale_factor = float(get("rescale_factor", 1 / 255))
    return PreprocessConfig(
        image_size=image_size,
        resize_size=resize_size,
        resize_mode=resize_mode,
        interpolation=interpolation,
        crop="center_floor" if do_crop else "none",
        pad_align="floor" if torch_backend else "ceil",
        mean=get("image_mean", OPENAI_CLIP_MEAN),
        std=get("image_std", OPENAI_CLIP_STD),
        fill_color=0,
        convert_rgb="first_white" if get("do_convert_rgb", True) else "first",
        resize_backend="torch" if torch_backend else "pil",
        do_resize=do_resize,
        do_rescale=bool(get("do_rescale", True)),
        rescale_factor=rescale_factor,
        do_normalize=bool(get("do_normalize", True)),
        rescale_arithmetic="fused" if torch_backend else "mul_f64",
        source="transformers",
    )
