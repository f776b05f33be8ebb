"""A tiny stand-in data set for store and analysis tests: single-object toy scenes labelled by shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cliplens.toyworld.scenes import SHAPES, render_scene, sample_scene


@dataclass(frozen=True)
class Sample:
    image: object
    label: int
    id: str
    attributes: dict = field(default_factory=dict)


class Scenes:
    """A tiny stand-in data set: single-object toy scenes labelled by shape; ``bad`` indices are unreadable files."""

    name = "scenes"
    class_names = list(SHAPES)
    attribute_names = ["shape", "colour"]

    def __init__(self, n: int, bad: tuple[int, ...] = (), tmp: Path | None = None) -> None:
        self.n, self.bad, self.tmp = n, bad, tmp

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        sc = sample_scene(11, i, stream="test", count=1, image_size=64)
        o = sc.objects[0]
        image = render_scene(sc)[0]
        if i in self.bad:
            path = self.tmp / f"broken-{i}.png"
            path.write_bytes(b"not a png")
            image = str(path)
        return Sample(image, SHAPES.index(o.shape), f"scene-{i}", {"shape": o.shape, "colour": o.colour})

    def describe(self) -> dict:
        return {"layout": "test-scenes", "n": self.n, "bad": list(self.bad)}
