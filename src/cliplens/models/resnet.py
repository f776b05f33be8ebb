"""The OpenAI ResNet CLIP family (``RN50``, ``RN101``, ``RN50x4``, ``RN50x16``, ``RN50x64``), as open_clip's
``ModifiedResNet`` builds it.

What is exact: the attention pool only (:class:`cliplens.core.heads.AttnPoolHead`): the embedding splits per pool
head × token, the ``P`` positions of the trunk's feature map and the mean token (FIRST, index 0, as in the
source's own sequence; :meth:`cliplens.decomposition.Decomposition.pool_terms` ``[B, pool_heads, 1 + P, E]``). The
convolutional trunk before it (the three-convolution stem, layer1–4: BatchNorm, ReLU after each residual add) is
not decomposed: the view runs it as the source does (:class:`cliplens.core.trunk.Trunk`, references to its
modules) and the decomposition's embedding term is its output per token. The view has zero transformer blocks, so
what needs blocks (per-layer terms, the ViT dense methods, TEXTSPAN over layer heads) refuses it.

At the native input size the positional table is the model's own; at other sizes (multiples of 32) its spatial
part is resized (bicubic, the mean token's row kept), where the source itself refuses other sizes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cliplens.core.heads import AttnPoolHead
from cliplens.core.trunk import Trunk
from cliplens.core.view import VisionView
from cliplens.errors import UnsupportedArchitectureError
from cliplens.models.families import TowerFamily, register_family

EXACT = ("pool only: each pool head × (spatial position + the mean token, first) of the AttentionPool2d; the "
         "convolutional trunk is not decomposed")
TRUNK = "OpenAI's convolutional ResNet trunk (BatchNorm, ReLU after each residual add): run, not decomposed"


def _open_clip_resnet(model: Any) -> bool:
    return type(getattr(model, "visual", None)).__name__ == "ModifiedResNet"


def _trunk_forward(visual: Any):
    def run(pixels: Tensor) -> Tensor:
        f = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))  # [B, C, h, w]
        spatial = f.flatten(2).transpose(1, 2)  # [B, h·w, C], row-major as the source flattens
        return torch.cat([spatial.mean(1, keepdim=True), spatial], dim=1)  # the mean token first

    return run


def vision_view_from_resnet(model: Any, name: str = "") -> VisionView:
    """A :class:`VisionView` over an open_clip ``ModifiedResNet`` (references to its weights, no copies)."""
    visual = getattr(model, "visual", model)
    ap = getattr(visual, "attnpool", None)
    if type(ap).__name__ != "AttentionPool2d":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} is a ResNet CLIP whose pooling is a {type(ap).__name__}, not OpenAI's "
            "AttentionPool2d: cliplens decomposes the AttentionPool2d only.")
    trunk_modules = [m for n, m in visual.named_children() if n != "attnpool"]
    tensors = [t for m in trunk_modules for t in list(m.parameters()) + list(m.buffers())]
    C = int(ap.v_proj.weight.shape[1])
    trunk = Trunk(fn=_trunk_forward(visual), stride=32, width=C, prefix=1, tensors=tuple(tensors),
                  description=TRUNK)
    head = AttnPoolHead(q_weight=ap.q_proj.weight, q_bias=ap.q_proj.bias, k_weight=ap.k_proj.weight,
                        k_bias=ap.k_proj.bias, v_weight=ap.v_proj.weight, v_bias=ap.v_proj.bias,
                        out_weight=ap.c_proj.weight, out_bias=ap.c_proj.bias, num_heads=ap.num_heads)
    side = round((int(ap.positional_embedding.shape[0]) - 1) ** 0.5) * 32  # the pool's table fixes the input size
    size = getattr(visual, "image_size", None) or side
    size = (size, size) if isinstance(size, int) else tuple(size)
    return VisionView(
        patch_weight=visual.conv1.weight, patch_bias=None, class_embedding=None,
        positional_embedding=ap.positional_embedding, ln_pre=None, blocks=(), ln_post=None, proj=None,
        image_size=(int(size[0]), int(size[1])), source=f"open_clip:{name} (ResNet; trunk not decomposed)",
        head=head, trunk=trunk)


def _build_open_clip(model: Any, name: str) -> VisionView:
    return vision_view_from_resnet(model, name)


def _open_clip_config(cfg: dict[str, Any]) -> str | None:
    v = cfg.get("vision_cfg", {})
    if not cfg or v.get("timm_model_name") or not isinstance(v.get("layers"), list | tuple):
        return None
    return "ResNet (pool only: per pool head × position + mean token; the convolutional trunk is not decomposed)"


register_family(TowerFamily(name="resnet", summary="OpenAI ResNet CLIP pooled by AttentionPool2d (open_clip "
                            "ModifiedResNet; the trunk is not decomposed)", library="open_clip",
                            matches=_open_clip_resnet, build=_build_open_clip, config=_open_clip_config, exact=EXACT))
