"""Zero-shot quality and retrieval metrics of a ToyCLIP on held-out scenes.

Held-out scenes come from the ``"eval"`` stream (a different generator key than training), with
the evaluation seed; each factor uses its own sub-seed. Per factor:

* ``colour``, ``shape``, ``size``: single-object scenes (any background, position, size);
* ``count``: scenes with 1-4 objects (balanced);
* ``position``: single objects in the left / right / top / bottom cells (balanced);
* ``background``: scenes with 1-4 objects, background kinds balanced.

Each scene is classified by the argmax of cosine similarity to the factor's prompt set
(:data:`cliplens.toyworld.captions.PROMPT_SETS`). Retrieval: ``n_retrieval`` random scenes and
their canonical full captions; image->text and text->image recall@1/@5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.toyworld.captions import EVAL_POSITIONS, PROMPT_SETS, describe
from cliplens.toyworld.scenes import BG_KINDS, SceneFactors, render_batch, sample_scene

__all__ = ["evaluate", "encode_scenes", "encode_texts", "factor_scenes", "zero_shot", "retrieval",
           "format_table", "TARGETS"]

#: quality targets (fractions) the shipped model is held to
TARGETS = {"colour": 0.95, "shape": 0.85, "count": 0.70, "position": 0.75, "background": 0.85,
           "i2t_r1": 0.40, "t2i_r1": 0.40}
_FACTOR_OFFSET = {"colour": 1, "shape": 2, "count": 3, "position": 4, "background": 5, "size": 6,
                  "retrieval": 7}


@torch.no_grad()
def encode_scenes(model: Any, scenes: Sequence[SceneFactors], batch_size: int = 256) -> Tensor:
    """Normalised image embeddings ``[N, E]`` of scenes (rendered, normalised by ``model.config``)."""
    out = []
    for i in range(0, len(scenes), batch_size):
        imgs = torch.from_numpy(render_batch(list(scenes[i : i + batch_size])))
        out.append(model.encode_image(model.normalize_pixels(imgs), normalize=True))
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 512) -> Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(model.encode_text(tokenizer.encode(list(texts[i : i + batch_size])), normalize=True))
    return torch.cat(out)


def factor_scenes(factor: str, n: int, seed: int, image_size: int = 64) -> tuple[list[SceneFactors], list[str]]:
    """Held-out scenes for one factor and their true class labels."""
    s = seed * 10 + _FACTOR_OFFSET[factor]
    scenes: list[SceneFactors] = []
    labels: list[str] = []
    for i in range(n):
        if factor in ("colour", "shape", "size"):
            sc = sample_scene(s, i, stream="eval", count=1, image_size=image_size)
            o = sc.objects[0]
            lab = {"colour": o.colour, "shape": o.shape, "size": o.size}[factor]
        elif factor == "count":
            sc = sample_scene(s, i, stream="eval", count=i % 4 + 1, image_size=image_size)
            lab = str(sc.count)
        elif factor == "position":
            pos = EVAL_POSITIONS[i % 4]
            sc = sample_scene(s, i, stream="eval", count=1, positions=pos, image_size=image_size)
            lab = pos
        elif factor == "background":
            sc = sample_scene(s, i, stream="eval", bg_kind=BG_KINDS[i % len(BG_KINDS)], image_size=image_size)
            lab = sc.bg_kind
        else:
            raise KeyError(f"unknown factor {factor!r}")
        scenes.append(sc)
        labels.append(lab)
    return scenes, labels


def zero_shot(model: Any, tokenizer: Any, factor: str, n: int = 500, seed: int = 12345) -> dict[str, Any]:
    """Zero-shot accuracy for one factor; also per-class accuracy and the confusion matrix."""
    ps = PROMPT_SETS[factor]
    scenes, labels = factor_scenes(factor, n, seed, model.config.image_size)
    img = encode_scenes(model, scenes)
    txt = encode_texts(model, tokenizer, ps.texts)
    pred = (img @ txt.T).argmax(1).numpy()
    y = np.array([ps.classes.index(lab) for lab in labels])
    k = len(ps.classes)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y, pred), 1)
    per_class = {c: float(conf[i, i] / max(conf[i].sum(), 1)) for i, c in enumerate(ps.classes)}
    return {"accuracy": float((pred == y).mean()), "per_class": per_class, "confusion": conf.tolist(),
            "prompts": list(ps.texts), "n": n}


def retrieval(model: Any, tokenizer: Any, n: int = 1000, seed: int = 12345) -> dict[str, float]:
    """Image<->text recall@1/@5 over ``n`` held-out scenes and their canonical full captions."""
    s = seed * 10 + _FACTOR_OFFSET["retrieval"]
    scenes = [sample_scene(s, i, stream="eval", image_size=model.config.image_size) for i in range(n)]
    img = encode_scenes(model, scenes)
    txt = encode_texts(model, tokenizer, [describe(sc) for sc in scenes])
    sim = img @ txt.T
    gt = torch.arange(n)
    r_i2t = (sim > sim[gt, gt][:, None]).sum(1)  # rank of the true caption per image
    r_t2i = (sim > sim[gt, gt][None, :]).sum(0)
    return {
        "i2t_r1": float((r_i2t < 1).float().mean()), "i2t_r5": float((r_i2t < 5).float().mean()),
        "t2i_r1": float((r_t2i < 1).float().mean()), "t2i_r5": float((r_t2i < 5).float().mean()),
        "n": n,
    }


def evaluate(
    model: Any,
    tokenizer: Any,
    n: int = 1000,
    seed: int = 12345,
    n_retrieval: int = 1000,
    factors: Sequence[str] = ("colour", "shape", "count", "position", "background", "size"),
) -> dict[str, Any]:
    """All metrics: ``{factor: accuracy, ..., "i2t_r1", "t2i_r1", ..., "details": {...}}``."""
    was_training = model.training
    model.eval()
    try:
        out: dict[str, Any] = {"seed": seed, "n": n}
        details: dict[str, Any] = {}
        for f in factors:
            r = zero_shot(model, tokenizer, f, n=n, seed=seed)
            out[f] = r["accuracy"]
            details[f] = r
        if n_retrieval:
            out.update(retrieval(model, tokenizer, n=n_retrieval, seed=seed))
            out["n_retrieval"] = out.pop("n")
            out["n"] = n
        out["details"] = details
        return out
    finally:
        model.train(was_training)


def format_table(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows ``(metric, value, target, prompts)`` for printing."""
    rows = []
    for key in ("colour", "shape", "count", "position", "background", "size", "i2t_r1", "t2i_r1",
                "i2t_r5", "t2i_r5"):
        if key not in metrics:
            continue
        tgt = TARGETS.get(key)
        prompts = ""
        det = metrics.get("details", {}).get(key)
        if det:
            prompts = " | ".join(det["prompts"])
        elif key.startswith(("i2t", "t2i")):
            prompts = f"canonical full captions, {metrics.get('n_retrieval', '?')} held-out scenes"
        rows.append((key, f"{100 * metrics[key]:.1f}%", f">= {100 * tgt:.0f}%" if tgt else "-", prompts))
    return rows
