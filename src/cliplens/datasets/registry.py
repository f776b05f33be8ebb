"""The one registry of data sets, classification and segmentation: names, aliases, loaders, detection, specs.

Every data set cliplens reads is one :class:`DatasetEntry` of :data:`REGISTRY`, keyed by its kind
(``"classification"``: one label per image; ``"segmentation"``: one class mask per image) and its name:

=================  ================================================================================================
classification     ``imagefolder``, ``images``, ``csv``, ``waterbirds``, ``imagenet``, ``toy``
segmentation       ``voc21``, ``voc20``, ``context60``, ``context59``, ``coco-stuff``, ``coco-object``,
                   ``cityscapes``, ``ade20k``, ``imagenet-seg``, ``folder``, ``toy``
=================  ================================================================================================

An entry holds the loader (whose keyword parameters, with their annotations, are the set's options:
:mod:`cliplens.datasets.options`), its aliases (``voc`` → ``voc21``, ``tsv`` → ``csv``), and for segmentation
sets the probe that tells whether a folder holds it. Both kinds are named the same way, by one spec syntax
(``"NAME:key=value,..."``, :func:`cliplens.datasets.options.parse_spec`), and opened by
:func:`open_dataset` (classification) and :func:`open_segmentation` (segmentation). Register your own layout
with :func:`register_dataset`; it then opens by name, in specs and on the command line like the built-in ones.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplens.datasets import ade20k, cityscapes, coco, imagenet_seg, seg_folder, voc
from cliplens.datasets.base import Dataset, is_hidden, is_image_file
from cliplens.datasets.csv import load_csv
from cliplens.datasets.imagefolder import load_image_folder, load_images
from cliplens.datasets.imagenet import SOLUTION, is_imagenet_folder, load_imagenet
from cliplens.datasets.options import NONE_WORDS, convert_options, parse_spec
from cliplens.datasets.segmentation import SegmentationDataset
from cliplens.datasets.toy import load_toy
from cliplens.datasets.toy_segmentation import ToySegmentation
from cliplens.datasets.waterbirds import METADATA, REQUIRED_COLUMNS, load_waterbirds
from cliplens.errors import InvalidInputError

__all__ = ["KINDS", "LAYOUTS", "REGISTRY", "SEGMENTATION_SETS", "DatasetEntry", "dataset_entry", "dataset_names",
           "detect_layout", "detect_segmentation_layout", "find_segmentation_sets", "open_dataset",
           "open_segmentation", "register_dataset", "segmentation_names"]

#: the kinds of data set
KINDS = ("classification", "segmentation")


@dataclass(frozen=True)
class DatasetEntry:
    """One data set (or layout) cliplens can open.

    Attributes:
        name: what users type (``"voc21"``, ``"imagefolder"``).
        kind: one of :data:`KINDS`.
        loader: ``(location, **options) -> data set``; a loader whose first parameter is not ``root`` / ``path``
            / ``spec`` reads no files (the toy worlds).
        aliases: other names for it.
        probe: segmentation sets: ``probe(folder) -> [names]``, the sets a folder holds (one probe may answer for
            several sets: VOC holds ``voc21`` and ``voc20``).
        fallback: detected only when no other layout fits (the generic folder of images and masks).
    """

    name: str
    kind: str
    loader: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    probe: Callable[[Path], list[str]] | None = None
    fallback: bool = False


#: ``(kind, name) -> entry``, in registration order
REGISTRY: dict[tuple[str, str], DatasetEntry] = {}
_ALIASES: dict[tuple[str, str], str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str, *, kind: str, loader: Callable[..., Any], aliases: Sequence[str] = (),
                     probe: Callable[[Path], list[str]] | None = None, fallback: bool = False) -> DatasetEntry:
    """Add a data set (or layout) to the registry; a name or alias already taken in that kind is refused."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown data set kind {kind!r}; kinds are {list(KINDS)}")
    entry = DatasetEntry(_key(name), kind, loader, tuple(_key(a) for a in aliases), probe, fallback)
    for n in (entry.name, *entry.aliases):
        if (kind, n) in REGISTRY or (kind, n) in _ALIASES:
            raise InvalidInputError(f"the {kind} data set name {n!r} is already registered")
    REGISTRY[(kind, entry.name)] = entry
    for a in entry.aliases:
        _ALIASES[(kind, a)] = entry.name
    return entry


def dataset_entry(name: str, kind: str) -> DatasetEntry | None:
    """The entry a name or alias of ``kind`` stands for (``None``: not a registered name)."""
    k = _key(name)
    k = _ALIASES.get((kind, k), k)
    return REGISTRY.get((kind, k))


def dataset_names(kind: str | None = None) -> list[str]:
    """The registered names (of one kind, or of every kind), in registration order."""
    return [e.name for (k, _), e in REGISTRY.items() if kind is None or k == kind]


def segmentation_names() -> list[str]:
    return dataset_names("segmentation")


class _Loaders(Mapping[str, Callable[..., Any]]):
    """``{name: loader}`` of one kind: a live view of :data:`REGISTRY`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __getitem__(self, name: str) -> Callable[..., Any]:
        entry = REGISTRY.get((self.kind, name))
        if entry is None:
            raise KeyError(name)
        return entry.loader

    def __iter__(self) -> Iterator[str]:
        return iter(dataset_names(self.kind))

    def __len__(self) -> int:
        return len(dataset_names(self.kind))


#: classification layout name -> loader ``(spec, **options) -> Dataset``
LAYOUTS: Mapping[str, Callable[..., Dataset]] = _Loaders("classification")
#: segmentation set name -> loader ``(root, **options) -> SegmentationDataset``
SEGMENTATION_SETS: Mapping[str, Callable[..., SegmentationDataset]] = _Loaders("segmentation")


def _probes(fallback: bool = False) -> list[Callable[[Path], list[str]]]:
    """The probes of the segmentation sets detected by their layout (or of the fallback ones), each once."""
    seen: list[Callable[[Path], list[str]]] = []
    for (k, _), e in REGISTRY.items():
        if k == "segmentation" and e.probe is not None and e.fallback == fallback and e.probe not in seen:
            seen.append(e.probe)
    return seen


# --------------------------------------------------------------------------- classification
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def _is_toy_spec(spec: Any) -> bool:
    return isinstance(spec, str) and (spec.strip().lower() == "toy" or spec.strip().lower().startswith("toy:"))


def _header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError):
        return []
    for d in (",", "\t", ";", "|"):
        if d in line:
            return [h.strip().strip('"') for h in line.rstrip("\r\n").split(d)]
    return [line.strip()]


def detect_layout(spec: str | os.PathLike) -> str:
    """The layout :func:`open_dataset` would use for ``spec`` (see the module's table).

    Raises:
        InvalidInputError: a path that does not exist, an empty folder, a folder of loose images (no
            classes), or a file that is not a CSV/TSV.
    """
    if _is_toy_spec(spec):
        return "toy"
    raw = os.fspath(spec)
    path = Path(os.path.expanduser(raw))
    if not path.exists():
        raise InvalidInputError(
            f"data set {raw!r} does not exist: give a folder (class sub-folders, Waterbirds, ImageNet), a .csv/.tsv "
            "file listing images, or 'toy' / 'toy:...' for the toy world")
    if path.is_file():
        if path.name == SOLUTION or {"ImageId", "PredictionString"} <= set(_header(path)):
            return "imagenet"
        if path.name == METADATA and set(REQUIRED_COLUMNS) <= set(_header(path)):
            return "waterbirds"
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return "csv"
        if is_image_file(path.name):
            raise InvalidInputError(f"{raw!r} is a single image; a data set is a folder or a .csv/.tsv list of images")
        raise InvalidInputError(f"{raw!r} is not a .csv or .tsv file or a folder; cannot tell its data set layout")
    meta = path / METADATA
    if meta.is_file():
        if set(REQUIRED_COLUMNS) <= set(_header(meta)):
            return "waterbirds"
    if is_imagenet_folder(path):
        return "imagenet"
    entries = [e for e in os.scandir(path) if not is_hidden(e.name)]
    if any(e.is_dir() for e in entries):
        return "imagefolder"
    if not entries:
        raise InvalidInputError(f"data set folder {raw!r} is empty")
    loose = [e.name for e in entries if is_image_file(e.name)]
    tables = sorted(e.name for e in entries if e.name.lower().endswith(_TABLE_SUFFIXES))
    if meta.is_file():
        raise InvalidInputError(f"{meta} does not have the Waterbirds columns {list(REQUIRED_COLUMNS)} (its columns "
                                f"are {_header(meta)}); for another list of images, give the CSV file itself")
    if tables:
        raise InvalidInputError(f"folder {raw!r} has no class sub-folders but holds {tables}: give the file that lists "
                                "the images (and their labels) as the data set")
    if loose:
        raise InvalidInputError(f"folder {raw!r} holds {len(loose)} images but no class sub-folders, so there are no "
                                "labels. Put each class in its own sub-folder, list the images in a CSV, or pass "
                                "layout='images' to read them unlabelled")
    raise InvalidInputError(f"folder {raw!r} holds no images, class sub-folders or image lists")


def open_dataset(spec: str | os.PathLike, *, layout: str | None = None, split: str | int | None = None,
                 **options: Any) -> Dataset:
    """Open a data set, detecting its layout from ``spec`` unless ``layout`` is given.

    Args:
        spec: a folder, a CSV/TSV file, or ``"toy"`` / ``"toy:key=value,..."``.
        layout: one of :data:`LAYOUTS` (``"imagefolder"``, ``"images"``, ``"csv"``, ``"waterbirds"``,
            ``"imagenet"``, ``"toy"``).
        split: which part (``"train"``/``"val"``/``"test"`` for Waterbirds; a sub-folder for folder
            layouts; a value of the ``split`` column for CSVs). The toy world has streams instead.
        **options: passed to the layout's loader (e.g. ``label_column=``, ``classes=`` for CSVs,
            ``label=``, ``n=`` for the toy world). Text values (from ``--option``) become the types the loader
            declares: ``"false"`` a bool, ``"3"`` an int, ``"none"`` None (:mod:`cliplens.datasets.options`).

    Raises:
        InvalidInputError: an unknown layout or option, or whatever the loader finds wrong.
    """
    if layout is None:
        layout = detect_layout(spec)
    entry = dataset_entry(layout, "classification") if isinstance(layout, str) else None
    if entry is None:
        raise InvalidInputError(f"unknown data set layout {layout!r}; layouts are {sorted(LAYOUTS)}")
    key, loader = entry.name, entry.loader
    if key == "toy":  # load_toy converts its options itself
        if split is not None and not (isinstance(split, str) and split.strip().lower() in NONE_WORDS):
            raise InvalidInputError("the toy world has no splits: choose a stream (stream='test', 'eval', …) and seed")
        return loader(spec if _is_toy_spec(spec) else None, **options)
    if split is not None:
        options["split"] = split
    return loader(spec, **convert_options(loader, options, f"the {key!r} layout"))


# --------------------------------------------------------------------------- segmentation
def find_segmentation_sets(root: str | os.PathLike, names: Sequence[str], depth: int = 2) -> dict[str, Path]:
    """Where under ``root`` each of the sets ``names`` is (``{name: folder}``; the sets not found are left out):
    ``root`` itself and its sub-folders down to ``depth`` levels (hidden ones skipped), the first folder whose
    layout holds a set (:func:`detect_segmentation_layout`'s probes) being that set's."""
    base = Path(os.path.expanduser(os.fspath(root)))
    if not base.is_dir():
        raise InvalidInputError(f"{os.fspath(root)!r} is not a folder: give the folder that holds the data sets")
    found: dict[str, Path] = {}
    level = [base]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            for probe in _probes():
                for name in probe(folder):
                    if name in names and name not in found:
                        found[name] = folder
            if d < depth:
                nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        level = nxt
    return found


def detect_segmentation_layout(path: str | os.PathLike) -> str:
    """The data set :func:`open_segmentation` would read at ``path`` when no name is given.

    Raises:
        InvalidInputError: a missing path, no known layout, or several that fit (VOC holds both ``voc21`` and
            ``voc20``; Context both ``context60`` and ``context59``): the message lists the names to choose from.
    """
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not p.exists():
        raise InvalidInputError(f"segmentation data {os.fspath(path)!r} does not exist: check the path, or give a "
                                f"name ({', '.join(SEGMENTATION_SETS)})")
    fits = [name for probe in _probes() for name in probe(p)]
    if not fits:  # the generic folder only when no named layout fits
        fits = [name for probe in _probes(fallback=True) for name in probe(p)]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise InvalidInputError(f"{os.fspath(path)!r} holds data for several segmentation sets: {fits}; name one, "
                                f"e.g. open_segmentation({fits[0]!r}, root={os.fspath(path)!r})")
    raise InvalidInputError(
        f"cannot tell which segmentation set {os.fspath(path)!r} holds; name it: open_segmentation(NAME, root=...) "
        f"with NAME one of {list(SEGMENTATION_SETS)}. Expected layouts: VOCdevkit/VOC2012/{{JPEGImages,"
        "SegmentationClass,ImageSets/Segmentation}; VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,"
        "ImageSets/SegmentationContext}; COCO images/val2017 + annotations/val2017, or val2017/ + "
        "stuffthingmaps_trainval2017/val2017/ or annotations/instances_val2017.json; Cityscapes "
        "{leftImg8bit,gtFine}/val/<city>/; ADEChallengeData2016/{images,annotations}/validation; "
        "gtsegs_ijcv.mat; or images/ + masks/ + classes.txt")


def open_segmentation(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None,
                      **options: Any) -> SegmentationDataset:
    """Open a segmentation data set by name (with ``root=``), by spec, or by path.

    Args:
        name_or_path: a name of :data:`SEGMENTATION_SETS` (``"voc21"``, ``"ade20k"``, …), a spec with
            options (``"toy:n=50,seed=3"``, ``"voc21:split=train"``), or a path whose layout is detected.
        root: the data's folder (or file) when a name is given.
        **options: the loader's options (``split=``, ``classes=``, ``crowd=``, …); text values (from a spec or
            ``--option``) become the types the loader declares (``"none"`` None, ``"false"`` a bool, …; see
            :mod:`cliplens.datasets.options`), and an unknown or ill-typed option is refused with the list.

    Raises:
        InvalidInputError: an unknown name or option, a missing root, or whatever the loader finds wrong.
    """
    key: str | None = None
    spec_opts: dict[str, Any] = {}
    if isinstance(name_or_path, str):
        entry = dataset_entry(name_or_path.partition(":")[0], "segmentation")
        if entry is not None:  # a name, maybe with options ("voc21:split=train"); else a path
            key, spec_opts = entry.name, dict(parse_spec(name_or_path)[1])
    if key is None:
        if root is not None:
            raise InvalidInputError(f"unknown segmentation set {os.fspath(name_or_path)!r}; names are "
                                    f"{list(SEGMENTATION_SETS)} (give a name with root=, or a path alone)")
        looks_like_path = (not isinstance(name_or_path, str) or os.sep in name_or_path or "/" in name_or_path
                           or os.path.exists(os.path.expanduser(name_or_path)))
        if not looks_like_path:
            raise InvalidInputError(f"unknown segmentation set {name_or_path!r}; names are {list(SEGMENTATION_SETS)}, "
                                    "or give the path of the data")
        key = detect_segmentation_layout(name_or_path)
        root = name_or_path
    both = sorted(set(spec_opts) & set(options))
    if both:
        raise InvalidInputError(f"{both} given both in the spec {name_or_path!r} and as options; give each once")
    loader = REGISTRY[("segmentation", key)].loader
    opts = convert_options(loader, {**spec_opts, **options}, f"the {key!r} segmentation set")
    takes_root = "root" in inspect.signature(loader).parameters
    if not takes_root:
        if root is not None:
            raise InvalidInputError(f"the {key!r} segmentation set is generated, it reads no files: drop root=")
        return loader(**opts)
    if root is None:
        raise InvalidInputError(f"the {key!r} segmentation set needs root=: the folder (or file) holding its data")
    return loader(root, **opts)


# --------------------------------------------------------------------------- the built-in data sets
register_dataset("imagefolder", kind="classification", loader=load_image_folder, aliases=("folder", "image-folder"))
register_dataset("images", kind="classification", loader=load_images)
register_dataset("csv", kind="classification", loader=load_csv, aliases=("tsv",))
register_dataset("waterbirds", kind="classification", loader=load_waterbirds)
register_dataset("imagenet", kind="classification", loader=load_imagenet, aliases=("imagenet-val",))
register_dataset("toy", kind="classification", loader=load_toy)

register_dataset("voc21", kind="segmentation", loader=voc.load_voc21, probe=voc.probe,
                 aliases=("voc", "voc2012", "pascal-voc", "voc-21"))
register_dataset("voc20", kind="segmentation", loader=voc.load_voc20, probe=voc.probe, aliases=("voc-20",))
register_dataset("context60", kind="segmentation", loader=voc.load_context60, probe=voc.probe,
                 aliases=("pascal-context", "context", "pc60", "context-60"))
register_dataset("context59", kind="segmentation", loader=voc.load_context59, probe=voc.probe,
                 aliases=("pc59", "context-59"))
register_dataset("coco-stuff", kind="segmentation", loader=coco.load_coco_stuff, probe=coco.probe,
                 aliases=("coco-stuff164k", "cocostuff"))
register_dataset("coco-object", kind="segmentation", loader=coco.load_coco_object, probe=coco.probe,
                 aliases=("coco-obj",))
register_dataset("cityscapes", kind="segmentation", loader=cityscapes.load_cityscapes, probe=cityscapes.probe)
register_dataset("ade20k", kind="segmentation", loader=ade20k.load_ade20k, probe=ade20k.probe,
                 aliases=("ade", "ade-20k", "ade150"))
register_dataset("imagenet-seg", kind="segmentation", loader=imagenet_seg.load_imagenet_seg,
                 probe=imagenet_seg.probe, aliases=("imagenet-s",))
register_dataset("folder", kind="segmentation", loader=seg_folder.load_segmentation_folder, probe=seg_folder.probe,
                 fallback=True, aliases=("generic",))
register_dataset("toy", kind="segmentation", loader=ToySegmentation, aliases=("toy-seg",))
