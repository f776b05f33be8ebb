"""Random-weight source models of the new families, built offline (no weights, no tokenizers downloaded).

Each builder returns the *source library's own* model object (open_clip, transformers), in float64 and eval
mode, with real widths and few blocks, and with every 1-D parameter (biases, LayerNorm γ/β, layer scales,
BatchNorm affines, the rest of the 1-D parameters) and the BatchNorm running statistics moved away from their
initial values, so that no term of a decomposition vanishes by accident (the libraries initialise biases to
0, γ to 1, and EVA02's/timm's ``k_bias`` to 0: the latter is a *buffer* and stays 0, as in the source).

Depth: open_clip passes no depth to timm (``TimmModel`` forwards only pool/proj/drop arguments, and
``vision_cfg`` has no depth key for timm towers), and a full-depth B/16 timm trunk takes 5–7 s to initialise
here. :func:`_timm_depth` therefore wraps ``timm.create_model`` for the duration of ``open_clip.create_model``
only, adding ``depth=layers``; everything else is open_clip's own construction (pool, projection, head).
``layers=0`` builds the real depth.

Nothing is cached: each call builds a fresh model, so a test module frees them when its fixtures end.

Text towers are tiny (the image side is what the references decompose): SigLIP's tokenizer cannot be
downloaded here anyway.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: a tiny open_clip text tower, valid for CLIP and CustomTextCLIP (SigLIP's options are ignored by CLIP's)
TINY_TEXT = dict(context_length=16, vocab_size=1000, width=64, heads=2, layers=1)
TINY_CUSTOM_TEXT = dict(TINY_TEXT, no_causal_mask=True, proj_bias=True, pool_type="last")


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every 1-D parameter by N(0, 0.1²) noise and BatchNorm running statistics away from (0, 1)."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype))
                m.running_var.mul_(torch.empty(m.running_var.shape, dtype=m.running_var.dtype).uniform_(0.5, 1.5,
                                                                                                   generator=g))
    return model


def _finish(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    return perturb(model.eval(), seed).double()


class _Quiet:
    """open_clip logs 'No pretrained weights loaded' through the root logger; silence it for the build only."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)


@contextlib.contextmanager
def _timm_depth(layers: int):
    """While open_clip builds its timm tower, create the trunk with ``depth=layers`` (0: the real depth)."""
    import timm

    if not layers:
        yield
        return
    original = timm.create_model
    timm.create_model = functools.partial(original, depth=layers)
    try:
        yield
    finally:
        timm.create_model = original


def open_clip_timm(name: str, *, layers: int = 2, seed: int = 0, layer_scale: bool = False):
    """``open_clip.create_model(name, pretrained=None)`` with a timm vision tower of ``layers`` blocks.

    ``name``: ``ViT-B-16-SigLIP``, ``ViT-B-16-SigLIP2`` (timm ``vit_base_patch16_siglip_224``, MAP pooling),
    ``EVA02-B-16`` (timm ``eva02_base_patch16_clip_224``, CLS pooling, open_clip's ``head`` Linear with bias as
    the projection), ``PE-Core-B-16`` (timm ``vit_pe_core_base_patch16_224``, Eva blocks + MAP + head Linear).
    ``layer_scale`` (Eva trunks only): EVA02-B-16 has none (``init_values=None``); this adds ``gamma_1``/``gamma_2``
    parameters to every block, which ``EvaBlock.forward`` then applies, to test the layer-scale path on the
    source's own forward. A fresh object each call (module-scoped fixtures build each once).
    """
    import open_clip

    torch.manual_seed(seed)
    with _Quiet(), _timm_depth(layers):
        model = open_clip.create_model(name, pretrained=None, text_cfg=copy.deepcopy(TINY_CUSTOM_TEXT))
    trunk = model.visual.trunk
    assert not layers or len(trunk.blocks) == layers
    if layer_scale:
        dim = trunk.embed_dim
        for blk in trunk.blocks:
            assert blk.gamma_1 is None, "this trunk already has layer scale"
            blk.gamma_1 = torch.nn.Parameter(torch.empty(dim).uniform_(0.2, 2.0))
            blk.gamma_2 = torch.nn.Parameter(torch.empty(dim).uniform_(0.2, 2.0))
    return _finish(model, seed)


def open_clip_vit(name: str = "ViT-B-32", *, layers: int = 2, seed: int = 0):
    """An open_clip ``CLIP`` ViT (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14-336``, …) with ``layers`` blocks."""
    import open_clip

    vision = copy.deepcopy(open_clip.get_model_config(name)["vision_cfg"])
    if layers:
        vision["layers"] = layers
    torch.manual_seed(seed)
    with _Quiet():
        model = open_clip.create_model(name, pretrained=None, vision_cfg=vision, text_cfg=dict(TINY_TEXT))
    return _finish(model, seed)


def open_clip_resnet(name: str = "RN50", *, seed: int = 0):
    """An open_clip ``CLIP`` with OpenAI's ModifiedResNet (``RN50``, ``RN101``, ``RN50x4``) at its real depth."""
    import open_clip

    torch.manual_seed(seed)
    with _Quiet():
        model = open_clip.create_model(name, pretrained=None, text_cfg=dict(TINY_TEXT))
    return _finish(model, seed)


#: SigLIP B/16's vision shape in transformers' terms (google/siglip-base-patch16-224)
HF_SIGLIP_B16 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=16,
                     layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
HF_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=1,
                    vocab_size=1000, max_position_embeddings=16, pad_token_id=1, bos_token_id=998, eos_token_id=999)


def hf_siglip(*, layers: int = 2, image_size: int = 224, with_text: bool = True, seed: int = 0):
    """transformers ``SiglipModel`` (``with_text``) or ``SiglipVisionModel`` at B/16 width, ``layers`` blocks."""
    import transformers

    vision = transformers.SiglipVisionConfig(num_hidden_layers=layers, image_size=image_size, **HF_SIGLIP_B16)
    torch.manual_seed(seed)
    if with_text:
        text = transformers.SiglipTextConfig(**HF_TINY_TEXT)
        model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text.to_dict(),
                                                                   vision_config=vision.to_dict()))
    else:
        model = transformers.SiglipVisionModel(vision)
    return _finish(model, seed)


def hf_siglip2(*, layers: int = 2, num_patches: int = 256, with_text: bool = True, seed: int = 0):
    """transformers ``Siglip2Model`` / ``Siglip2VisionModel`` (NaFlex) at B/16 width, ``layers`` blocks.

    Its positional table is ``sqrt(num_patches)²`` (16×16 for the released NaFlex B/16), resized per image to
    ``spatial_shapes``; inputs are patchified pixels, see :func:`naflex_inputs`.
    """
    import transformers

    vision = transformers.Siglip2VisionConfig(num_hidden_layers=layers, num_patches=num_patches, **HF_SIGLIP_B16)
    torch.manual_seed(seed)
    if with_text:
        text = transformers.Siglip2TextConfig(**HF_TINY_TEXT)
        model = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text.to_dict(),
                                                                     vision_config=vision.to_dict()))
    else:
        model = transformers.Siglip2VisionModel(vision)
    return _finish(model, seed)


def naflex_inputs(shapes: list[tuple[int, int]], *, max_patches: int, patch: int = 16, seed: int = 0):
    """NaFlex inputs as ``Siglip2ImageProcessor`` makes them: ``pixel_values`` ``[B, max_patches, 3·p·p]`` (each
    image's patches row-major, then zero padding), ``pixel_attention_mask`` ``[B, max_patches]`` (1 = a real
    patch), ``spatial_shapes`` ``[B, 2]`` (patch rows, patch columns). Random pixels, float64."""
    g = torch.Generator().manual_seed(seed)
    b = len(shapes)
    values = torch.zeros(b, max_patches, 3 * patch * patch, dtype=torch.float64)
    mask = torch.zeros(b, max_patches, dtype=torch.long)
    for i, (h, w) in enumerate(shapes):
        assert h * w <= max_patches
        values[i, : h * w] = torch.randn(h * w, 3 * patch * patch, generator=g, dtype=torch.float64)
        mask[i, : h * w] = 1
    return values, mask, torch.tensor(shapes, dtype=torch.long)


def pixels(batch: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random preprocessed pixels, float64."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g, dtype=torch.float64)
