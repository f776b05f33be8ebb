"""docs/analyses/neurons.md: its Python blocks run, in order, in one scope (paths moved to a temporary folder), so the
page cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "analyses" / "neurons.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_pages_python_blocks_run(tmp_path):
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    Image.fromarray(render_scene(sample_scene(0, 0))[0]).save(tmp_path / "scene.png")
    blocks = _blocks()
    assert len(blocks) == 3
    scope: dict = {}
    for block in blocks:
        code = block
        for name in ("scene.png", "neuron-store", "neuron-effects"):
            code = code.replace(f'"{name}"', f'r"{tmp_path / name}"')
        exec(compile(code, str(PAGE), "exec"), scope)
    n = scope["model"].vision.blocks[0].fc2_weight.shape[1]
    assert scope["e"].effects.shape == (1, n, scope["model"].vision.embed_dim)
    assert scope["per_token"].shape[:3] == (1, 2, 65)
    assert torch.allclose(scope["scaled"], 100 * scope["e"].effects / scope["e"].norms[:, None, None])
    assert scope["res"].source == "store" and scope["comp"].pcs.shape == (n, scope["model"].vision.embed_dim)
    assert set(scope["accuracy"]) >= {"baseline", "mean_ablated", "texts"}
    assert scope["maps"].shape == (1, 8, 8) and scope["classes"].shape == (1,)
