"""The one data-set registry: both kinds in one table, one spec syntax, the same describe() keys, and a layout
registered by a user opening by name, by spec and by detection like the built-in ones."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cliplens.datasets as ds
from cliplens.datasets import (
    LAYOUTS,
    REGISTRY,
    SEGMENTATION_SETS,
    FileSegmentationDataset,
    ListDataset,
    Sample,
    dataset_entry,
    dataset_names,
    open_dataset,
    open_segmentation,
    register_dataset,
)
from cliplens.datasets.options import parse_spec
from cliplens.datasets.registry import _ALIASES
from cliplens.errors import InvalidInputError

COMMON = ["kind", "name", "layout", "root", "split", "num_samples", "num_classes", "class_names"]


@pytest.fixture
def registered() -> Iterator[list[tuple[str, str]]]:
    """Names a test registers, removed afterwards (the registry is global)."""
    added: list[tuple[str, str]] = []
    yield added
    for kind, name in added:
        entry = REGISTRY.pop((kind, name))
        for alias in entry.aliases:
            _ALIASES.pop((kind, alias), None)


def test_one_table_holds_both_kinds_with_their_aliases():
    assert dataset_names("classification") == list(LAYOUTS) == ["imagefolder", "images", "csv", "waterbirds",
                                                                 "imagenet", "toy"]
    assert dataset_names("segmentation") == list(SEGMENTATION_SETS)
    assert dataset_names() == list(LAYOUTS) + list(SEGMENTATION_SETS)
    assert dataset_entry("pascal_context", "segmentation").name == "context60"
    assert dataset_entry("TSV", "classification").name == "csv"
    assert dataset_entry("toy", "segmentation").kind == "segmentation"
    assert dataset_entry("toy", "classification").kind == "classification"
    assert dataset_entry("voc21", "classification") is None


def test_one_spec_syntax():
    assert parse_spec("voc21:split=train, reduce_zero_label=false") == ("voc21", {"split": "train",
                                                                               "reduce_zero_label": "false"})
    assert parse_spec("toy:colour,n=5", bare="label") == ("toy", {"label": "colour", "n": "5"})
    with pytest.raises(InvalidInputError, match="is not key=value"):
        parse_spec("voc21:train")
    with pytest.raises(InvalidInputError, match="sets 'n' twice"):
        parse_spec("toy:n=3,n=4")
    # the same syntax opens both kinds
    assert len(open_dataset("toy:n=4,seed=1")) == 4
    assert len(open_segmentation("toy:n=3,seed=1")) == 3


def test_describe_has_the_same_keys_for_every_kind():
    cls = open_dataset("toy:n=4,seed=1").describe()
    seg = open_segmentation("toy:n=3,seed=1").describe()
    for d, kind, n in ((cls, "classification", 4), (seg, "segmentation", 3)):
        assert list(d)[:len(COMMON)] == COMMON and list(d)[-1] == "fingerprint"
        assert d["kind"] == kind and d["num_samples"] == n and d["num_classes"] == len(d["class_names"])
    # subsets record their parent the same way in both kinds
    for whole in (open_dataset("toy:n=4,seed=1"), open_segmentation("toy:n=3,seed=1")):
        sub = whole[1:3].describe()
        assert sub["num_samples"] == 2 and sub["subset"] == {"of_num_samples": len(whole),
                                                             "of_fingerprint": whole.fingerprint(), "indices": [1, 2]}
        assert whole.subset([2, 1]).subset([0]).describe()["subset"]["indices"] == [2]


def test_fingerprints_are_unchanged_by_the_shared_base():
    """Stores and results record fingerprints: the shared base hashes exactly what each kind hashed before."""
    import hashlib

    cls = open_dataset("toy:n=4,seed=1")
    seg = open_segmentation("toy:n=3,seed=1")
    want_cls = hashlib.sha256("".join(f"{s.id}\t{s.label}\n" for s in cls).encode()).hexdigest()
    want_seg = hashlib.sha256("".join(f"{s.id}\n" for s in seg).encode()).hexdigest()
    assert cls.fingerprint() == want_cls and seg.fingerprint() == want_seg


def _photos(root: Path, n: int = 3) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_a_user_classification_layout_opens_like_a_built_in_one(tmp_path: Path, registered):
    def load_numbered(root: str, *, every: int = 1, name: str | None = None) -> ListDataset:
        files = sorted(Path(root).glob("*.png"))[::every]
        samples = [Sample(str(p), i % 2, p.name) for i, p in enumerate(files)]
        return ListDataset(samples, name=name or "t-numbered", layout="t-numbered", class_names=["even", "odd"],
                           info={"root": str(root)})

    register_dataset("t-numbered", kind="classification", loader=load_numbered, aliases=("t-numbers",))
    registered.append(("classification", "t-numbered"))
    _photos(tmp_path)
    d = open_dataset(tmp_path, layout="t-numbers", every="2")  # text options get the loader's types
    assert len(d) == 2 and d.describe()["root"] == str(tmp_path) and "t-numbered" in LAYOUTS
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['evry'\]"):
        open_dataset(tmp_path, layout="t-numbered", evry=2)
    with pytest.raises(InvalidInputError, match="already registered"):
        register_dataset("t-numbers", kind="classification", loader=load_numbered)
    with pytest.raises(InvalidInputError, match="unknown data set kind"):
        register_dataset("x", kind="detection", loader=load_numbered)


def test_a_user_segmentation_set_opens_by_name_spec_and_detection(tmp_path: Path, registered):
    def load_pairs(root: str, *, split: str | None = None) -> FileSegmentationDataset:
        images = sorted((Path(root) / "pics").glob("*.png"))
        entries = [(str(p), str(Path(root) / "labels" / p.name), p.stem) for p in images]

        def decode(path: str) -> np.ndarray:
            return np.asarray(Image.open(path), dtype=np.int64)

        return FileSegmentationDataset(entries, decode, name="pairs", layout="pairs", class_names=["sky", "tree"],
                                       background=None, reduce_zero_label=False, root=root, split=split)

    def probe(path: Path) -> list[str]:
        return ["pairs"] if (path / "pics").is_dir() and (path / "labels").is_dir() else []

    register_dataset("pairs", kind="segmentation", loader=load_pairs, probe=probe)
    registered.append(("segmentation", "pairs"))
    for p in _photos(tmp_path / "pics", 2):
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "labels" / p.name)
    by_name = open_segmentation("pairs", root=tmp_path)
    by_spec = open_segmentation("pairs:split=val", root=tmp_path)
    by_path = open_segmentation(tmp_path)
    assert len(by_name) == len(by_path) == 2 and by_spec.split == "val" and by_path.name == "pairs"
    assert by_name.mask(0).tolist() == np.eye(8, dtype=np.int64).tolist()
    assert ds.find_segmentation_sets(tmp_path.parent, ["pairs"]) == {"pairs": tmp_path}


def test_the_data_set_package_imports_no_module_by_a_string():
    """Every loader is imported by name (the registry's table), none through importlib strings."""
    root = Path(ds.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert "importlib" not in names and "import_module" not in names, path.name
