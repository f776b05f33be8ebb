"""docs/api/entry-points.md's code runs (on a random-weight toy model, toy scenes as the photos and a random-weight
SAM), so the page cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cliplens

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api" / "entry-points.md"
SAM_LINE = 'sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")'


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_every_block_of_the_page_runs(random_toy_weights, tmp_path, monkeypatch):
    pytest.importorskip("segment_anything")
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene
    from tests.tasks.sam_helpers import random_sam

    (tmp_path / "photos").mkdir()
    for i in range(8):
        Image.fromarray(render_scene(sample_scene(i, 0))[0]).save(tmp_path / "photos" / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    code = "\n".join(_blocks())
    assert code.count('cliplens.load("toy")') == 1 and code.count(SAM_LINE) == 1
    code = code.replace('cliplens.load("toy")', f'cliplens.load("toy", pretrained=r"{random_toy_weights}")')
    code = code.replace(SAM_LINE, "sam = random_sam()")
    scope = {"random_sam": random_sam}
    exec(compile(code, str(PAGE), "exec"), scope)
    H = scope["model"].vision.num_heads
    assert len(scope["spans"]) == H and all(len(s.texts) == 3 for s in scope["spans"])
    assert set(scope["quality"]) == {"explained", "cosine", "relative_error"}
    assert 0 < scope["quality"]["explained"] <= 1 + 1e-9 and scope["rebuilt"].shape == (8, scope["heads"].shape[-1])
    assert scope["maps"].labels == ["red circle", "blue star"] and scope["maps"].raw.shape[:2] == (2, 2)
    assert scope["over_image"].shape == (3, 480, 640)
    assert scope["masks"].dtype == torch.bool and scope["masks"].shape[0] == 3 and len(scope["points"]) > 0
    assert scope["scores"].shape == (1, 5, 3) and isinstance(scope["dec"], cliplens.Decomposition)  # feature surgery
