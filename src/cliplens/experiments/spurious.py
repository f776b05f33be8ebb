"""The "toy waterbirds": a split where the class co-occurs with a background kind.

The class is the shape of a single object (``class_shapes``, default circle vs square); the
spurious attribute is the background kind (``bg_kinds``, default striped vs dotted). In the biased
*training mix* class ``k`` sits on background ``k`` with probability ``p_major`` (0.95); the *test*
split is balanced over the four (class, background) groups. Group ids: ``2 * class + background``,
so groups 0 and 3 are the majority groups and 1 and 2 the minority ones.

:func:`finetune_spurious` fine-tunes a ToyCLIP on the biased mix with captions that name the
shape but never the background (``"a photo of a circle"``, ``"a small red circle"``, ...), so the
shape words absorb the background that usually comes with them; zero-shot worst-group accuracy
(:func:`group_accuracies`) then falls clearly below the average accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cliplens.experiments.evaluate import encode_scenes, encode_texts
from cliplens.toyworld.captions import PREFIXES, Caption, object_phrase
from cliplens.toyworld.scenes import SceneFactors, sample_scene

__all__ = ["SpuriousSpec", "SpuriousSplit", "make_spurious_split", "spurious_scene", "group_accuracies",
           "spurious_training_batch", "class_prompts", "DEFAULT_SPEC"]


@dataclass(frozen=True)
class SpuriousSpec:
    class_shapes: tuple[str, str] = ("circle", "square")
    bg_kinds: tuple[str, str] = ("striped", "dotted")
    p_major: float = 0.95
    sizes: tuple[str, ...] = ("small",)

    def group(self, label: int, bg: int) -> int:
        return 2 * label + bg

    def group_name(self, g: int) -> str:
        label, bg = divmod(g, 2)
        return f"{self.class_shapes[label]} on {self.bg_kinds[bg]}"


DEFAULT_SPEC = SpuriousSpec()
_STREAM_TRAIN, _STREAM_TEST = 20, 21


@dataclass
class SpuriousSplit:
    spec: SpuriousSpec
    scenes: list[SceneFactors]
    labels: np.ndarray  # class index per scene
    backgrounds: np.ndarray  # background index per scene
    groups: np.ndarray  # group id per scene

    def __len__(self) -> int:
        return len(self.scenes)

    def group_counts(self) -> dict[str, int]:
        return {self.spec.group_name(g): int((self.groups == g).sum()) for g in range(4)}


def spurious_scene(seed: int, index: int, label: int, bg: int, spec: SpuriousSpec = DEFAULT_SPEC,
                   stream: int = _STREAM_TRAIN, image_size: int = 64) -> SceneFactors:
    """One scene: a single object of class ``label`` on background kind ``bg``."""
    return sample_scene(seed, index, stream=stream, count=1, shapes=spec.class_shapes[label],
                        bg_kind=spec.bg_kinds[bg], sizes=spec.sizes, image_size=image_size)


def _draw_groups(seed: int, index: int, p_major: float, stream: int) -> tuple[int, int]:
    rng = np.random.default_rng([seed, stream, index, 7])
    label = int(rng.integers(2))
    bg = label if rng.random() < p_major else 1 - label
    return label, bg


def make_spurious_split(
    n: int,
    seed: int = 0,
    split: str = "train",
    spec: SpuriousSpec = DEFAULT_SPEC,
    image_size: int = 64,
) -> SpuriousSplit:
    """``split="train"``: the biased mix (class = background kind with ``p_major``);
    ``split="test"``: balanced, ``n // 4`` scenes in each of the four groups (held-out stream)."""
    scenes, labels, bgs = [], [], []
    for i in range(n):
        if split == "train":
            label, bg = _draw_groups(seed, i, spec.p_major, _STREAM_TRAIN)
            stream = _STREAM_TRAIN
        elif split == "test":
            label, bg = divmod(i % 4, 2)
            stream = _STREAM_TEST
        else:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        scenes.append(spurious_scene(seed, i, label, bg, spec, stream=stream, image_size=image_size))
        labels.append(label)
        bgs.append(bg)
    lab, bg_arr = np.array(labels), np.array(bgs)
    return SpuriousSplit(spec, scenes, lab, bg_arr, 2 * lab + bg_arr)


def _class_caption(scene: SceneFactors, rng: np.random.Generator, shape: str | None = None) -> Caption:
    o = scene.objects[0]
    shape = shape or o.shape
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    colour = o.colour if rng.random() < 0.3 else None
    size = o.size if rng.random() < 0.2 else None
    text = prefix + object_phrase(colour, shape, size)
    return Caption(text, frozenset({("obj", colour, shape, size, None)}))


def spurious_training_batch(
    seed: int, step: int, batch_size: int, p_major: float = 0.95,
    class_shapes: tuple[str, str] | list[str] = DEFAULT_SPEC.class_shapes,
    bg_kinds: tuple[str, str] | list[str] = DEFAULT_SPEC.bg_kinds,
    sizes: tuple[str, ...] | list[str] = DEFAULT_SPEC.sizes,
    caption_by: str = "context",
    return_fact_scenes: bool = False,
) -> Any:
    """A batch of the biased mix with captions naming a shape only (never the background).

    Returns ``(scenes, captions)`` (and the caption-view scenes with ``return_fact_scenes``).

    ``caption_by="shape"``: the caption names the object's true shape. ``"context"`` (default):
    the caption names the shape that usually goes with the background (like web captions written
    from context), so the minority images are captioned with the majority class of their
    background; the shape words then carry the background, as in Waterbirds.
    """
    spec = SpuriousSpec(tuple(class_shapes), tuple(bg_kinds), p_major, tuple(sizes))
    scenes, caps = [], []
    rng = np.random.default_rng([seed, 102, step])
    for j in range(batch_size):
        i = step * batch_size + j
        label, bg = _draw_groups(seed, i, p_major, _STREAM_TRAIN)
        sc = spurious_scene(seed, i, label, bg, spec)
        scenes.append(sc)
        named = spec.class_shapes[bg] if caption_by == "context" else None
        caps.append(_class_caption(sc, rng, named))
    if return_fact_scenes:
        # the scenes as the captions see them (object shape = the shape the caption names), used
        # for the label-aware targets
        import copy

        fact_scenes = []
        for sc, c in zip(scenes, caps, strict=True):
            f = copy.deepcopy(sc)
            f.objects[0].shape = next(x[2] for x in c.facts)
            fact_scenes.append(f)
        return scenes, caps, fact_scenes
    return scenes, caps


def class_prompts(spec: SpuriousSpec = DEFAULT_SPEC) -> list[str]:
    """Zero-shot class prompts: ``"a photo of a {shape}"``."""
    return ["a photo of " + object_phrase(shape=s) for s in spec.class_shapes]


def group_accuracies(
    model: Any,
    tokenizer: Any,
    split: SpuriousSplit | None = None,
    n: int = 800,
    seed: int = 4321,
    spec: SpuriousSpec = DEFAULT_SPEC,
) -> dict[str, Any]:
    """Zero-shot accuracy per group on the balanced test split.

    Returns ``{"groups": {name: acc}, "average": mean over groups, "worst": min over groups,
    "worst_group": name, "gap": average - worst, "prompts": [...]}``.
    """
    if split is None:
        split = make_spurious_split(n, seed=seed, split="test", spec=spec, image_size=model.config.image_size)
    was = model.training
    model.eval()
    try:
        img = encode_scenes(model, split.scenes)
        prompts = class_prompts(split.spec)
        txt = encode_texts(model, tokenizer, prompts)
    finally:
        model.train(was)
    pred = (img @ txt.T).argmax(1).numpy()
    correct = pred == split.labels
    groups = {split.spec.group_name(g): float(correct[split.groups == g].mean()) for g in range(4)}
    worst_name = min(groups, key=groups.get)
    avg = float(np.mean(list(groups.values())))
    return {"groups": groups, "average": avg, "worst": groups[worst_name], "worst_group": worst_name,
            "gap": avg - groups[worst_name], "prompts": prompts, "n": len(split)}
