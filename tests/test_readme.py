"""The README's code is executed, so it cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import cliplens
from tests.conftest import pixels, tiny_open_clip

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_independent_check_snippet_runs_and_holds():
    block = next(b for b in _python_blocks() if "cliplens.wrap(open_clip_model)" in b)
    open_clip_model = tiny_open_clip(layers=3)
    x = pixels(2, 64)
    scope = {"cliplens": cliplens, "torch": torch, "open_clip_model": open_clip_model, "x": x}
    exec(compile(block, "README.md", "exec"), scope)
    attn, mlp = scope["attn"], scope["mlp"]
    v = open_clip_model.visual
    assert attn.shape == (2, 3, 17, v.transformer.resblocks[0].attn.num_heads, v.output_dim)
    assert mlp.shape == (2, 4, v.output_dim)


def test_api_tour_runs(random_toy_weights, tmp_path):
    block = _python_blocks()[0]
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    img = render_scene(sample_scene(0, 0))[0]
    Image.fromarray(img).save(tmp_path / "scene.png")
    code = block.replace('cliplens.load("toy")', f'cliplens.load("toy", pretrained=r"{random_toy_weights}")')
    code = code.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"')
    code = code.replace('dec.save("scene-decomposition.safetensors"', f'dec.save(r"{tmp_path / "dec.safetensors"}"')
    scope = {"cliplens": cliplens, "pil_image": Image.fromarray(img), "torch": torch}
    exec(compile(code, "README.md", "exec"), scope)
    scores = scope["scores"]
    assert scores.total.shape == (2, 2)
    assert scope["both"].batch_size == 2 and scope["tokens"].shape == (2, 65, scope["model"].vision.embed_dim)
    # the plan and gradient snippets run in the tour's scope
    plan_block, grad_block = (next(b for b in _python_blocks() if marker in b)
                              for marker in ('@register_attention("sharpened")', "requires_grad_(True)"))
    exec(compile(plan_block, "README.md", "exec"), scope)
    assert scope["out"]["side.vv.dense"].shape == scope["tokens"].shape
    exec(compile(grad_block, "README.md", "exec"), scope)
    assert scope["grad_pixels"].shape == scope["pixels"].shape and scope["grad_pattern"].abs().sum() > 0


def test_surgery_snippet_runs_and_holds():
    block = next(b for b in _python_blocks() if "Surgery().tokens(model, x)" in b)
    open_clip_model = tiny_open_clip(layers=8)
    x = pixels(2, 64)
    text_embeddings = torch.randn(3, open_clip_model.visual.output_dim, generator=torch.Generator().manual_seed(0))
    scope = {"cliplens": cliplens, "torch": torch, "open_clip_model": open_clip_model, "x": x,
             "text_embeddings": text_embeddings}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["tokens"].shape == (2, 17, open_clip_model.visual.output_dim)
    assert scope["sim"].shape == (2, 3, 4, 4)


def test_maps_snippet_runs(random_toy_weights, tmp_path):
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    img = render_scene(sample_scene(0, 0))[0]
    Image.fromarray(img).save(tmp_path / "scene.png")
    block = next(b for b in _python_blocks() if "Targets.classes(" in b and "surgery_parts" in b)
    code = block.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"')
    model = cliplens.load("toy", pretrained=str(random_toy_weights))
    scope = {"cliplens": cliplens, "model": model, "pil_image": Image.fromarray(img)}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["m"].on_image().shape == (3, 64, 64) and scope["maps"].settings["method"] == "decomposition"
