"""Fixtures for the data-set tests: real ImageNet photos from the shared reference data (skipped if absent)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_IMAGES

IMAGENET_SAMPLES = REFERENCE_IMAGES / "imagenet-samples"
LABELS_CSV = IMAGENET_SAMPLES / "labels.csv"


@pytest.fixture(scope="session")
def reference_rows() -> list[dict[str, str]]:
    """The rows of ``imagenet-samples/labels.csv`` (file, class_index, wnid, name)."""
    if not LABELS_CSV.is_file():
        pytest.skip(f"reference data not found: {LABELS_CSV} (the shared reference images are not on this machine)")
    with open(LABELS_CSV, newline="") as f:
        return list(csv.DictReader(f))


def link(src: Path, dst: Path) -> Path:
    """``dst`` -> ``src`` as a symbolic link (a copy where links are not allowed)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst

# segmentation samples (tests/datasets/test_segmentation_*.py)
VOC_CROPS = REFERENCE_IMAGES / "voc-crops"
ADE_SAMPLES = REFERENCE_IMAGES / "ade-samples"
COCO_MINI = REFERENCE_IMAGES / "coco-mini"


def need(path: Path) -> Path:
    """``path``, or skip the test when the shared reference data is not on this machine."""
    if not path.exists():
        pytest.skip(f"reference data not found: {path}")
    return path
