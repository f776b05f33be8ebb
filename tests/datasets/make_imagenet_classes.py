"""Write ``src/cliplens/data/imagenet_classes.tsv`` (run once; not part of the package or the tests).

Sources: the 1,000 ImageNet-1k WordNet ids in the standard order (sorted), as shipped by ``timm``
(``timm/data/_info/imagenet_synsets.txt``), and OpenAI CLIP's curated class names (the list in
their ``Prompt_Engineering_for_ImageNet.ipynb`` notebook, MIT licence), as shipped by ``open_clip``
(``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``), in the same order.

    python tests/datasets/make_imagenet_classes.py [--check REFERENCE_LABELS_CSV]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "src" / "cliplens" / "data" / "imagenet_classes.tsv"
HEADER = (
    "# ImageNet-1k (ILSVRC 2012) classes in the standard order (sorted WordNet ids): index<TAB>wnid<TAB>name\n"
    "# wnids: ImageNet (as listed in timm's data/_info/imagenet_synsets.txt)\n"
    "# names: OpenAI CLIP's curated class names (notebooks/Prompt_Engineering_for_ImageNet.ipynb in\n"
    "#   github.com/openai/CLIP, MIT licence; as open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES)\n"
)


def build() -> list[tuple[int, str, str]]:
    import timm
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    synsets = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    wnids = [w.strip() for w in synsets.read_text().splitlines() if w.strip()]
    names = list(IMAGENET_CLASSNAMES)
    assert len(wnids) == len(names) == 1000, (len(wnids), len(names))
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000, "wnids are not the sorted standard list"
    assert all("\t" not in n and "\n" not in n for n in names)
    return [(i, w, n) for i, (w, n) in enumerate(zip(wnids, names, strict=True))]


def check(rows: list[tuple[int, str, str]], labels_csv: Path) -> int:
    by_index = {i: w for i, w, _ in rows}
    n = 0
    with open(labels_csv, newline="") as f:
        for r in csv.DictReader(f):
            assert by_index[int(r["class_index"])] == r["wnid"], r
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", type=Path, help="a labels.csv with class_index and wnid columns to check against")
    args = ap.parse_args()
    rows = build()
    if args.check:
        print(f"{check(rows, args.check)} rows of {args.check} agree")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", newline="\n") as f:
        f.write(HEADER)
        for i, w, n in rows:
            f.write(f"{i}\t{w}\t{n}\n")
    print(f"wrote {OUT} ({len(rows)} classes)")


if __name__ == "__main__":
    main()
