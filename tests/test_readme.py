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


def test_every_methods_raw_maps_snippet():
    from cliplens.maps import get_map, map_names

    block = next(b for b in _python_blocks() if "for name in map_names(" in b)
    open_clip_model = tiny_open_clip(layers=8)
    x = pixels(2, 64)
    text_embeddings = torch.randn(3, open_clip_model.visual.output_dim, generator=torch.Generator().manual_seed(1))
    scope = {"cliplens": cliplens, "torch": torch, "model": cliplens.wrap(open_clip_model), "x": x,
             "text_embeddings": text_embeddings}
    exec(compile(block, "README.md", "exec"), scope)
    raw = scope["raw"]
    assert set(map_names(second_backbone=False)) <= set(raw) and "naclip_no_prior" in raw
    for name, r in raw.items():
        if not type(get_map("naclip" if name == "naclip_no_prior" else name)).__module__.startswith("cliplens."):
            continue  # a method another test registered
        grid = {"uniform": (1, 1), "gaussian": (64, 64), "nothing": (1, 1)}.get(name, (4, 4))
        assert r.shape == (2, 3, *grid) and torch.isfinite(r).all(), name
        assert r.grad_fn is None, name


def test_store_snippet(tmp_path):
    from cliplens.datasets import load_toy
    from cliplens.store import StoreSettings, build_store

    block = next(b for b in _python_blocks() if "store.head_terms(images=range(1000)" in b)
    build_store(cliplens.load("toy"), load_toy("toy:label=shape,n=12,seed=1"), tmp_path / "store",
                settings=StoreSettings(chunk_size=5, batch_size=6))
    scope: dict = {}
    code = block.replace('"store/"', f'r"{tmp_path / "store"}"').replace("range(1000)", "range(12)")
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["terms"].shape == (12, 4, 4, 128) and scope["labels"].shape == (12,) and len(scope["values"]) == 12


def test_every_command_and_package_is_in_the_readme():
    import click

    from cliplens.cli import main

    text = README.read_text()
    cli_block = text[text.index("## Command line"):]
    cli_block = cli_block[:cli_block.index("\n## ", 3)]
    commands = []
    for name, cmd in main.all_commands().items():
        if isinstance(cmd, click.Group):
            commands += [f"cliplens {name} {sub}" for sub in cmd.commands]
        else:
            commands.append(f"cliplens {name}")
    for c in commands:
        group, _, sub = c.removeprefix("cliplens ").partition(" ")
        assert f"cliplens {group}" in cli_block, f"{c!r} is not in the README's command line section"
        assert not sub or sub in cli_block, f"{c!r} is not in the README's command line section"
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 3)]
    src = Path(cliplens.__file__).parent
    for pkg in sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file()):
        assert f"  {pkg}/" in layout, f"package {pkg}/ is not in the README's layout"


def test_no_paragraph_stops_mid_sentence():
    """Every paragraph or bullet of prose (outside code, tables and headings) ends with punctuation."""
    lines = README.read_text().split("\n")
    code, cut = False, []
    for i, line in enumerate(lines):
        if line.startswith("```"):
            code = not code
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if code or not line.strip() or following.strip() or line.startswith(("#", "|")):
            continue
        if not line.rstrip().endswith((".", ":", ")", "!", "?", "`", "*")):
            cut.append(f"line {i + 1}: …{line[-50:]}")
    assert not cut, cut


def test_family_snippet_runs_and_holds():
    """The README's SigLIP / EVA02 / RN50 snippet on random-weight models of the real widths (2 blocks)."""
    from tests.families import models

    block = next(b for b in _python_blocks() if "cliplens.wrap(siglip_model)" in b)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scope = {"cliplens": cliplens, "torch": torch, "x": models.pixels(2, 224).float(),
                 "siglip_model": models.open_clip_timm("ViT-B-16-SigLIP", layers=2).float(),
                 "eva02_model": models.open_clip_timm("EVA02-B-16", layers=2).float(),
                 "rn50_model": models.open_clip_resnet("RN50").float()}
        exec(compile(block, "README.md", "exec"), scope)
    finally:
        torch.set_num_threads(before)
    assert scope["pool"].shape == (2, 32, 50, 1024) and scope["heads"].shape == (2, 2, 197, 12, 512)
    assert scope["lumped"].shape == (2, 768) and scope["layers"].shape == (2, 3, 768)
