"""Toy-world scenes as a segmentation set, with exact masks.

Scene ``i`` is ``sample_scene(seed, i, stream=stream, count=count, image_size=image_size)``; its image
and masks come from :func:`~cliplens.toyworld.scenes.render_scene`: every pixel belongs to the object
visible there or to the background (no anti-aliasing, so no ignore pixels).

Classes (``classes=``):

* ``"colour-shape"`` (default): the toy bench's vocabulary (:mod:`cliplens.experiments.bench`): 0 is
  background and ``1 + c * len(SHAPES) + s`` the object of colour ``COLOURS[c]`` and shape ``SHAPES[s]``
  (colours outer, shapes inner: the order of :func:`~cliplens.toyworld.captions.class_texts`, 56 classes).
  The plain name is ``"red circle"``; the bench's text for it is ``"a red circle"``;
* ``"shape"``: background + the 7 shapes; ``"colour"``: background + the 8 colours.

Defaults follow the classification toy set (:mod:`cliplens.datasets.toy`): the held-out ``"test"``
stream, seed 0, 1-4 objects, 64 px. The bench itself uses seed 2024, 2-4 objects and skips scenes with
fewer than two distinct visible objects. As a spec: ``"toy"``, ``"toy:n=50,seed=3"``,
``"toy:classes=shape,count=2|3"``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from cliplens.datasets.segmentation import SegmentationDataset
from cliplens.datasets.toy import check_scene_settings
from cliplens.errors import InvalidInputError
from cliplens.toyworld.scenes import COLOURS, MAX_OBJECTS, SHAPES, render_scene, sample_scene

__all__ = ["CLASS_SETS", "ToySegmentation", "load_toy_segmentation", "toy_class_names"]

CLASS_SETS = ("colour-shape", "shape", "colour")
_CLASS_ALIASES = {"colour_shape": "colour-shape", "color-shape": "colour-shape", "objects": "colour-shape",
                  "shapes": "shape", "colours": "colour", "color": "colour", "colors": "colour"}


def toy_class_names(classes: str = "colour-shape") -> list[str]:
    """``["background", ...]`` for one of :data:`CLASS_SETS`."""

    if classes == "colour-shape":
        return ["background", *(f"{c} {s}" for c in COLOURS for s in SHAPES)]
    if classes == "shape":
        return ["background", *SHAPES]
    return ["background", *COLOURS]


class ToySegmentation(SegmentationDataset):
    """``n`` toy-world scenes with exact class masks (see the module's documentation)."""

    def __init__(
        self,
        n: int = 100,
        *,
        seed: int = 0,
        stream: str | int = "test",
        count: int | Sequence[int] | None = None,
        image_size: int = 64,
        classes: str = "colour-shape",
        name: str | None = None,
    ) -> None:

        check_scene_settings("toy segmentation", n=n, seed=seed, stream=stream, image_size=image_size)
        key = _CLASS_ALIASES.get(str(classes).lower(), str(classes).lower())
        if key not in CLASS_SETS:
            raise InvalidInputError(f"toy segmentation: classes={classes!r}; choose one of {list(CLASS_SETS)}")
        if count is not None:
            counts = (count,) if isinstance(count, (int, np.integer)) else tuple(count)
            if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                                 or not 1 <= c <= MAX_OBJECTS for c in counts):
                raise InvalidInputError(f"toy segmentation: count={count!r}; scenes hold 1 to {MAX_OBJECTS} objects")
            count = int(counts[0]) if len(counts) == 1 else tuple(int(c) for c in counts)
        self.n = int(n)
        self.seed = int(seed)
        self.stream = stream
        self.count = count
        self.image_size = int(image_size)
        self.classes = key
        self.name = name or "toy"
        self.layout = "toy"
        self.preset = "toy"
        self.class_names = toy_class_names(key)
        self.background = 0
        self.reduce_zero_label = False
        self.root = None
        self.split = None
        self.options = {"n": self.n, "seed": self.seed, "stream": stream, "image_size": self.image_size,
                        "count": list(count) if isinstance(count, tuple) else count, "classes": key}
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def _label(self, obj: Any) -> int:

        if self.classes == "colour-shape":
            return 1 + COLOURS.index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)
        if self.classes == "shape":
            return 1 + SHAPES.index(obj.shape)
        return 1 + COLOURS.index(obj.colour)

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Any:
        """The :class:`~cliplens.toyworld.scenes.SceneFactors` of scene ``i``."""

        j = self._index(i)
        return sample_scene(self.seed, j, stream=self.stream, image_size=self.image_size, count=self.count)

    def _render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit

        sc = self.scene(i)
        img, masks = render_scene(sc)
        label = np.zeros(masks["background"].shape, dtype=np.int64)
        for obj, vis in zip(sc.objects, masks["visible"], strict=True):
            label[vis] = self._label(obj)
        self._cache[i] = (img, label)
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return img, label

    def _id(self, i: int) -> str:
        return f"{self.stream}/{self.seed}/{i}"

    def _image(self, i: int) -> np.ndarray:
        return self._render(i)[0]

    def _mask_source(self, i: int) -> str:
        return f"toy scene {self._id(i)}"

    def _read_mask(self, i: int) -> np.ndarray:
        return self._render(i)[1].copy()


def load_toy_segmentation(**options: Any) -> ToySegmentation:
    """A :class:`ToySegmentation` from keyword options (``n``, ``seed``, ``stream``, ``count``, ``image_size``,
    ``classes``, ``name``; text values typed as :mod:`cliplens.datasets.options` says)."""
    from cliplens.datasets.options import convert_options

    return ToySegmentation(**convert_options(ToySegmentation, options, "toy segmentation"))
