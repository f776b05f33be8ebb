"""The CLIP ViT family: CLS pooling through ``ln_post`` and the projection (OpenAI CLIP, OpenCLIP, MetaCLIP, DFN,
…), as open_clip's ``VisionTransformer`` and as transformers' ``CLIPModel`` / ``CLIPVisionModel*`` build it.

Decomposition: exact (the CLS head, :class:`cliplens.core.heads.ClsHead`): embedding term, every MLP, every
head at every source token, through ``ln_post`` with the CLS token's statistics frozen.
"""

from __future__ import annotations

from typing import Any

from cliplens.models.families import TowerFamily, register_family

EXACT = "exact: embedding term, each MLP, each head × source token (CLS pooling, ln_post frozen at CLS)"


def _open_clip_vit(model: Any) -> bool:
    visual = getattr(model, "visual", None)
    return type(visual).__name__ == "VisionTransformer"


def _build_open_clip(model: Any, name: str) -> Any:
    from cliplens.models.openclip import vision_view_from_open_clip

    return vision_view_from_open_clip(model, name)


def _open_clip_config(cfg: dict[str, Any]) -> str | None:
    from cliplens.models.openclip import clip_vit_support

    return clip_vit_support(cfg)


def _hf_clip(model: Any) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in ("clip", "clip_vision_model", "metaclip_2",
                                                   "metaclip_2_vision_model")


def _build_hf(model: Any, name: str) -> Any:
    from cliplens.models.hf import vision_view_from_hf

    return vision_view_from_hf(model, name)


register_family(TowerFamily(name="clip-vit", summary="CLIP ViT pooled at the CLS token (open_clip VisionTransformer)",
                            library="open_clip", matches=_open_clip_vit, build=_build_open_clip,
                            config=_open_clip_config, exact=EXACT))
register_family(TowerFamily(name="clip-vit", summary="CLIP ViT pooled at the CLS token (CLIPModel, MetaCLIP 2)",
                            library="transformers", matches=_hf_clip, build=_build_hf, exact=EXACT))
