"""A Segment Anything model with random weights, built offline once per session (no checkpoint, no download).

It is SAM's real ``vit_b`` (``sam_model_registry["vit_b"](checkpoint=None)``) with its image encoder cut to
its first block: the full encoder takes ~20 s per image on two CPU cores, one block ~2 s. The tests check
plumbing (inputs, shapes, order), not mask quality, and the prompt encoder and mask decoder are whole.
"""

from __future__ import annotations

import functools

import pytest
import torch


@functools.lru_cache(maxsize=1)
def random_sam():
    sa = pytest.importorskip("segment_anything")
    torch.manual_seed(0)
    sam = sa.sam_model_registry["vit_b"](checkpoint=None)
    sam.image_encoder.blocks = sam.image_encoder.blocks[:1]
    return sam.eval()


class RecordPredict:
    """Wraps ``SamPredictor.predict`` (install with ``monkeypatch.setattr(SamPredictor, "predict", rec)``) to
    record its inputs and the image size the predictor was set with."""

    def __init__(self, predict):
        self.predict = predict
        self.calls: list[dict] = []

    def __get__(self, predictor, owner=None):
        def call(*args, **kwargs):
            self.calls.append({"kwargs": kwargs, "original_size": tuple(predictor.original_size)})
            return self.predict(predictor, *args, **kwargs)

        return call
