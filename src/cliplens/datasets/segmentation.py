"""Semantic-segmentation data sets: images with per-pixel class masks.

Every loader yields :class:`SegSample` (image, mask, id) and is a :class:`SegmentationDataset`:

* ``class_names[k]`` names class index ``k`` (``"background"`` at 0 where the set has one);
* :meth:`SegmentationDataset.mask` gives int64 ``[H, W]`` class indices at the image's own resolution,
  already converted the way the field evaluates the set (``reduce_zero_label``, id tables), with
  :data:`IGNORE` (255) for pixels that are not scored;
* :meth:`SegmentationDataset.describe` is a JSON-serialisable record of layout, root, split, size and
  options (stored next to every result).

Masks are checked when read: they must have the image's size, and every value must be a class index or
255. An image whose file carries an EXIF orientation is shown upright by :func:`cliplens.images.load_image`;
its mask, annotated on the stored pixels (as every data set here is), is turned the same way, so the two
always line up.

:func:`cliplens.datasets.open_segmentation` opens a set by name (``voc21``, ``voc20``, ``context60``,
``context59``, ``coco-stuff``, ``coco-object``, ``cityscapes``, ``ade20k``, ``imagenet-seg``, ``folder``, ``toy``)
with ``root=``, by a spec (``"toy:n=50,seed=3"``, ``"voc21:split=train"``), or by a path alone, whose layout is
detected when only one set fits (the registry, :mod:`cliplens.datasets.registry`).

Each layout's loader is in its own module (:mod:`cliplens.datasets.voc`, …, the generic folder of images and
masks in :mod:`cliplens.datasets.seg_folder`); this module holds what they share.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from cliplens.datasets.sequence import DataSequence, subset_record
from cliplens.errors import InvalidInputError

__all__ = [
    "IGNORE", "MASK_EXTENSIONS", "FileSegmentationDataset", "MaskRef", "SegSample", "SegmentationDataset",
    "SegmentationSubset", "read_mask_file", "reduce_zero_label",
]

#: the index of pixels that are not scored
IGNORE = 255
#: file endings accepted as masks (lossless formats only: a JPEG would blur class indices)
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm")
_LOSSY = (".jpg", ".jpeg", ".webp")

ImageLike = str | os.PathLike | Image.Image | np.ndarray


# --------------------------------------------------------------------------- samples
class MaskRef:
    """A mask still to be read: calling it returns the data set's converted mask of one sample.

    ``source`` says where the mask comes from (a file path, or e.g. ``"gtsegs_ijcv.mat: gt 3"``).
    """

    __slots__ = ("dataset", "index", "source")

    def __init__(self, dataset: SegmentationDataset, index: int, source: str) -> None:
        self.dataset = dataset
        self.index = index
        self.source = source

    def __call__(self) -> np.ndarray:
        return self.dataset.mask(self.index)

    @property
    def path(self) -> str | None:
        """The mask's file, where it is one (``None`` for masks drawn from annotations or generated)."""
        return self.source if os.path.isfile(self.source) else None

    def __repr__(self) -> str:
        return f"MaskRef({self.source!r}, {self.dataset.layout})"


@dataclass(frozen=True)
class SegSample:
    """One image of a segmentation data set.

    Attributes:
        image: what :func:`cliplens.images.load_image` / :meth:`load` takes: a file path, a PIL image or
            a uint8 ``[H, W, 3]`` array.
        mask: the ground truth: a :class:`MaskRef` (from a data set: converted on reading), an integer
            array of class indices, or a PNG file of class indices.
        id: unique within the data set (e.g. ``"2007_000033"``, ``"frankfurt/frankfurt_000000_000294"``).
    """

    image: ImageLike
    mask: MaskRef | np.ndarray | str | os.PathLike | Callable[[], np.ndarray]
    id: str

    def load(self, mode: str = "RGB") -> Image.Image:
        """The image as a PIL image (files are read with :func:`cliplens.images.load_image`)."""
        if isinstance(self.image, Image.Image):
            return self.image.convert(mode) if mode and self.image.mode != mode else self.image
        if isinstance(self.image, np.ndarray):
            img = Image.fromarray(self.image)
            return img.convert(mode) if mode and img.mode != mode else img
        from cliplens.images import load_image

        return load_image(self.image, mode=mode)

    def load_mask(self) -> np.ndarray:
        """int64 ``[H, W]`` class indices (255 = ignore) at the image's resolution."""
        m = self.mask
        if isinstance(m, np.ndarray):
            out = m
        elif callable(m):
            out = m()
        else:
            out = read_mask_file(m)
            if out.ndim != 2:
                raise InvalidInputError(f"mask {os.fspath(m)!r} is a colour image; give single-channel class indices")
        return np.asarray(out, dtype=np.int64)


# --------------------------------------------------------------------------- reading masks
def read_mask_file(path: str | os.PathLike, *, what: str = "mask", allow_rgb: bool = False) -> np.ndarray:
    """The values of a mask file, without any conversion.

    Palette (``P``) images give their palette indices, greyscale (``L``, ``I``, ``I;16``, ``1``) their
    values; a colour image whose three channels are equal gives one channel. Other colour images are
    returned as ``[H, W, 3]`` with ``allow_rgb`` (the caller maps colours to classes) and refused otherwise.

    Raises:
        InvalidInputError: a missing or unreadable file, a lossy (JPEG) mask, a colour mask where none is allowed.
    """
    name = os.fspath(path)
    if os.path.splitext(name)[1].lower() in _LOSSY:
        raise InvalidInputError(f"{what} {name!r} is a lossy {os.path.splitext(name)[1]} file: JPEG compression "
                                "changes class indices at edges. Masks must be lossless (PNG)")
    if not os.path.isfile(name):
        raise InvalidInputError(f"{what} {name!r} does not exist" if not os.path.exists(name) else
                                f"{what} {name!r} is not a file")
    try:
        with Image.open(name) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what} {name!r} is not an image file PIL can read; masks are PNGs of class "
                                "indices") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidInputError(f"cannot read {what} {name!r}: the file is corrupt or truncated ({e})") from None
    if mode == "P" or mode in ("L", "I", "1") or mode.startswith("I;16"):
        return arr.astype(np.int64) if arr.dtype == bool else arr
    if mode == "LA":
        return arr[..., 0]
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if allow_rgb:
            return rgb
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        raise InvalidInputError(f"{what} {name!r} is a colour ({mode}) image; masks must be single-channel PNGs "
                                "whose values are class indices (mode L, or a palette image P whose indices are "
                                "the classes)")
    raise InvalidInputError(f"{what} {name!r} has the image mode {mode!r}; masks must be single-channel PNGs of "
                            "class indices (mode L or P)")


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """0 -> 255 and k -> k - 1 (255 stays 255): the field's ``reduce_zero_label`` (ADE20K, Context-59, VOC-20)."""
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == IGNORE)] = IGNORE
    return out


def check_raw_values(raw: np.ndarray, allowed_max: int, source: str, what: str, *, ignore: bool = True) -> None:
    """Refuse values outside ``0..allowed_max`` (and 255 when ``ignore``), naming a few of them."""
    bad = (raw < 0) | (raw > allowed_max)
    if ignore:
        bad &= raw != IGNORE
    if bad.any():
        vals = np.unique(raw[bad])
        shown = ", ".join(str(int(v)) for v in vals[:8]) + (", …" if len(vals) > 8 else "")
        raise InvalidInputError(f"mask {source} holds the value(s) {shown}: {what}")


_TRANSPOSE = {  # EXIF orientation -> what PIL's exif_transpose does to show the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _image_header(path: str) -> tuple[int, int, int]:
    """(stored height, stored width, EXIF orientation) of an image file, reading its header only."""
    if not os.path.isfile(path):
        raise InvalidInputError(f"image {path!r} does not exist")
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # a broken EXIF block: load_image keeps the stored pixels too
                orientation = 1
    except UnidentifiedImageError:
        raise InvalidInputError(f"image {path!r} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidInputError(f"cannot read image {path!r}: {e}") from None
    return h, w, orientation if orientation in _TRANSPOSE else 1


# --------------------------------------------------------------------------- data sets
class SegmentationDataset(DataSequence[SegSample]):
    """A read-only, indexable sequence of :class:`SegSample` with converted masks.

    Subclasses set the attributes and implement ``__len__``, ``_id(i)``, ``_image(i)``,
    ``_mask_source(i)`` (a description of where the mask is) and ``_read_mask(i)`` (class indices,
    converted, at the mask's own resolution); the checks, orientation, sequence behaviour, subsets and
    :meth:`describe` are shared.

    Attributes:
        name: short name (``"voc21"``, ``"ade20k"``, a folder's name, …).
        layout: the loader (``"voc"``, ``"context"``, ``"coco-stuff"``, …).
        class_names: class index -> plain name.
        ignore_index: 255.
        background: index of the background class, or ``None`` where the set has none.
        reduce_zero_label: whether ``0 -> 255, k -> k - 1`` was applied to the stored annotations.
        root: the folder (or file) read; ``split``: the part read, or ``None``.
        options: the loader's other settings (recorded by :meth:`describe`).
        preset: the set whose evaluation protocol applies (``"voc21"``, ``"cityscapes"``, ``"folder"``, …: a
            key of :data:`cliplens.evaluation.protocol.PRESETS`), set by the loader from the layout it read, never
            from a folder's name (a generic folder named ``cityscapes`` is a ``"folder"``); ``None``: no preset.
    """

    kind: ClassVar[str] = "segmentation"
    _noun: ClassVar[str] = "images"
    preset: str | None = None
    ignore_index: int = IGNORE
    background: int | None = None
    reduce_zero_label: bool = False
    options: dict[str, Any]
    #: check that every mask has its image's size (reads the image file's header)
    check_size: bool = True

    # ------------------------------------------------------------------ to implement
    def __len__(self) -> int:
        raise NotImplementedError

    def _id(self, i: int) -> str:
        raise NotImplementedError

    def _image(self, i: int) -> ImageLike:
        raise NotImplementedError

    def _mask_source(self, i: int) -> str:
        raise NotImplementedError

    def _read_mask(self, i: int) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def _sample(self, j: int) -> SegSample:
        return SegSample(self._image(j), MaskRef(self, j, self._mask_source(j)), self._id(j))

    @property
    def ids(self) -> list[str]:
        return [self._id(j) for j in range(len(self))]

    def image(self, i: int) -> ImageLike:
        return self._image(self._index(i))

    def mask(self, i: int) -> np.ndarray:
        """Sample ``i``'s class indices, int64 ``[H, W]`` (255 = ignore), at its image's resolution.

        Raises:
            InvalidInputError: an unreadable mask, a value that is no class index, or a mask whose size is
                not its image's.
        """
        j = self._index(i)
        m = np.asarray(self._read_mask(j))
        if m.ndim != 2:
            raise InvalidInputError(f"{self.name}: mask {self._mask_source(j)} has shape {tuple(m.shape)}; a mask "
                                    "is one class index per pixel, [H, W]")
        m = m.astype(np.int64, copy=False)
        if self.check_size:
            m = self._align(j, m)
        c = len(self.class_names)
        bad = ((m < 0) | (m >= c)) & (m != self.ignore_index)
        if bad.any():
            vals = np.unique(m[bad])
            shown = ", ".join(str(int(v)) for v in vals[:8]) + (", …" if len(vals) > 8 else "")
            raise InvalidInputError(f"{self.name}: mask {self._mask_source(j)} holds the value(s) {shown}, which "
                                    f"are no class index (0..{c - 1}) nor {self.ignore_index} (ignore); check that "
                                    f"the masks belong to this data set's {c} classes")
        return m

    def _image_hw(self, j: int) -> tuple[int, int, int]:
        """(height, width, EXIF orientation) of image ``j`` as stored (subclasses may answer without reading it)."""
        image = self._image(j)
        if isinstance(image, np.ndarray):
            return image.shape[0], image.shape[1], 1
        if isinstance(image, Image.Image):
            return image.height, image.width, 1
        return _image_header(os.fspath(image))

    def _align(self, j: int, m: np.ndarray) -> np.ndarray:
        h, w, orientation = self._image_hw(j)
        if orientation in _TRANSPOSE and m.shape == (h, w):
            # the image is shown turned (load_image applies its EXIF orientation): turn the mask with it
            turned = Image.fromarray(m.astype(np.uint8)).transpose(_TRANSPOSE[orientation])
            return np.asarray(turned).astype(np.int64)
        upright = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        if m.shape != (h, w) and m.shape != upright:
            raise InvalidInputError(
                f"{self.name}: the mask {self._mask_source(j)} is {m.shape[0]}x{m.shape[1]} (height x width) but "
                f"its image {self._describe_image(self._image_source(j))} is {h}x{w}; a mask must have its image's own size (were "
                "the images or the masks resized, or are they from different sets?)")
        return m

    def _image_source(self, j: int) -> Any:
        return self._image(j)

    @staticmethod
    def _describe_image(image: Any) -> str:
        if isinstance(image, str) and not os.path.exists(image):
            return image
        if isinstance(image, (np.ndarray, Image.Image)):
            return "(in memory)"
        return repr(os.fspath(image))

    def _fingerprint_row(self, j: int) -> str:
        return f"{self._id(j)}\n"

    def _describe_kind(self) -> dict[str, Any]:
        return {"ignore_index": self.ignore_index, "background": self.background,
                "reduce_zero_label": self.reduce_zero_label, "options": dict(getattr(self, "options", {}) or {})}

    def _describe(self) -> dict[str, Any]:
        return {}

    def _make_subset(self, indices: list[int]) -> SegmentationSubset:
        return SegmentationSubset(self, indices)

    def subset(self, indices: Iterable[int] | np.ndarray | range | slice) -> SegmentationSubset:
        """The samples at ``indices`` (ints, negative ones from the end, or a boolean mask), in that order."""
        return super().subset(indices)  # type: ignore[return-value]


class SegmentationSubset(SegmentationDataset):
    """Some images of another segmentation data set (see :meth:`SegmentationDataset.subset`)."""

    def __init__(self, parent: SegmentationDataset, indices: list[int]) -> None:
        self.parent = parent
        self.indices = list(indices)
        for attr in ("name", "layout", "preset", "class_names", "ignore_index", "background", "reduce_zero_label",
                     "root", "split", "options", "check_size"):
            setattr(self, attr, getattr(parent, attr))

    def __len__(self) -> int:
        return len(self.indices)

    def _id(self, i: int) -> str:
        return self.parent._id(self.indices[i])

    def _image(self, i: int) -> ImageLike:
        return self.parent._image(self.indices[i])

    def _mask_source(self, i: int) -> str:
        return self.parent._mask_source(self.indices[i])

    def _read_mask(self, i: int) -> np.ndarray:
        return self.parent._read_mask(self.indices[i])

    def _align(self, j: int, m: np.ndarray) -> np.ndarray:
        return self.parent._align(self.indices[j], m)

    def _image_hw(self, j: int) -> tuple[int, int, int]:
        return self.parent._image_hw(self.indices[j])

    def _describe(self) -> dict[str, Any]:
        return {**self.parent._describe(), "subset": subset_record(self.parent, self.indices)}


class FileSegmentationDataset(SegmentationDataset):
    """Images and masks as files: ``entries`` of ``(image path, mask path, id)`` and a ``decode(mask path)``
    that reads one mask and converts it to class indices (the base of the file loaders). ``preset``: the
    protocol preset (default: the layout's name)."""

    def __init__(
        self,
        entries: Sequence[tuple[str, str, str]],
        decode: Callable[[str], np.ndarray],
        *,
        name: str,
        layout: str,
        class_names: Sequence[str],
        background: int | None,
        reduce_zero_label: bool,
        root: str | os.PathLike | None,
        split: str | None,
        options: dict[str, Any] | None = None,
        preset: str | None = None,
    ) -> None:
        self.entries = [(str(a), str(b), str(c)) for a, b, c in entries]
        self.decode = decode
        self.name = name
        self.layout = layout
        self.preset = preset if preset is not None else layout
        self.class_names = list(class_names)
        self.background = background
        self.reduce_zero_label = reduce_zero_label
        self.root = None if root is None else os.fspath(root)
        self.split = split
        self.options = dict(options or {})
        ids = [e[2] for e in self.entries]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidInputError(f"{name}: the id {dup!r} is used by more than one image (ids must be unique)")

    def __len__(self) -> int:
        return len(self.entries)

    def _id(self, i: int) -> str:
        return self.entries[i][2]

    def _image(self, i: int) -> str:
        return self.entries[i][0]

    def _mask_source(self, i: int) -> str:
        return self.entries[i][1]

    def _read_mask(self, i: int) -> np.ndarray:
        return self.decode(self.entries[i][1])

    @property
    def image_paths(self) -> list[str]:
        return [e[0] for e in self.entries]

    @property
    def mask_paths(self) -> list[str]:
        return [e[1] for e in self.entries]
