"""Fixtures for the task tests: a tiny random open_clip model (any English text), COCO-mini paths."""

from __future__ import annotations

import pytest

from tests.conftest import REFERENCE_IMAGES, tiny_open_clip

COCO = REFERENCE_IMAGES / "coco-mini"
COCO_INSTANCES = COCO / "annotations" / "instances_val2017.json"
COCO_IMAGES = COCO / "val2017"


def needs_coco() -> None:
    if not (COCO_INSTANCES.is_file() and COCO_IMAGES.is_dir()):
        pytest.skip(f"COCO-mini reference data not found under {COCO} (shared/reference-data)")


@pytest.fixture(scope="session")
def oc_model():
    """``tiny_open_clip`` (64 px, patch 8: an 8x8 grid; 3 layers; random weights), wrapped with CLIP's BPE tokenizer
    at the model's context length (16)."""
    open_clip = pytest.importorskip("open_clip")
    import cliplens

    return cliplens.wrap(tiny_open_clip(patch=8), tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=16))
