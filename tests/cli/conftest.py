"""Fixtures for the command-line tests: small images, a tiny open_clip architecture, a CLI runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from cliplens.cli import main

#: a tiny open_clip ViT registered under this name (224 px input, like the real ones, but 16 patches)
TINY_VIT = "cliplens-test-cli-vit"
_TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "patch_size": 56, "layers": 2, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """The name of a tiny open_clip architecture (loads in milliseconds with ``--pretrained random``)."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("oc_config")
    (folder / f"{TINY_VIT}.json").write_text(json.dumps(_TINY_CONFIG))
    open_clip.add_model_config(folder)
    return TINY_VIT


@pytest.fixture(scope="session")
def toy_args(random_toy_weights) -> list[str]:
    """``--model toy --pretrained <small random toy weights>``."""
    return ["-m", "toy", "-p", str(random_toy_weights)]


def save_image(path: Path, height: int = 48, width: int = 64, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture()
def image(tmp_path) -> str:
    return save_image(tmp_path / "img.png")


def run(*args: object) -> Result:
    """``cliplens ARGS`` in-process, on a terminal wide enough that rich does not fold long paths."""
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "250"})


def one_line(text: str) -> str:
    """Output with line breaks undone (for matching the words of a message)."""
    return re.sub(r"\s+", " ", text)
