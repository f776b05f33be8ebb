"""Time of the map methods that add a second backbone, next to plain CLIP + the plain second backbone, in one run.

    python benchmarks/bench_second_backbone.py                    # ViT-B-16 + DINO ViT-B/8, random weights, 448 px
    python benchmarks/bench_second_backbone.py --methods proxyclip --batch 2 --repeats 3

Every model has random weights in its real shape (open_clip ``pretrained=None``; DINO from a transformers
``ViTConfig`` of the named architecture; no download). The rows, methods interleaved round-robin, median of
``--repeats`` after a warm-up:

    plain + backbone   open_clip ``encode_image`` at the input size, then the second backbone's plain forward
                       (:class:`cliplens.models.vfm.VisionBackbone`) on the same pixels
    <method>           ``cliplens.maps.get_map(method, vfm=<that backbone>).raw`` from preprocessed pixels, text
                       embeddings precomputed (``--texts``)

SAM is not timed: a method that reads SAM's regions (CorrCLIP) gets a fixed set of masks from a stub generator,
the same in every run, so the ratio measures the method's own work beyond its models' plain forwards. (SAM's
automatic masks cost the same in the method and in a plain SAM run.)
Target (issue 17): <= 1.2x (plain CLIP + the plain second backbone).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

import cliplens
from cliplens.maps import Targets, get_map, map_names
from cliplens.maps.base import map_class

#: torch.hub name -> (patch size, width, depth, heads) of the transformers ViT that DINO is
DINO_SHAPES = {"dino_vitb8": (8, 768, 12, 12), "dino_vitb16": (16, 768, 12, 12), "dino_vits8": (8, 384, 12, 6),
               "dino_vits16": (16, 384, 12, 6)}


class FixedMasks:
    """A stand-in for SAM's automatic mask generator: the same 12 rectangles for every image."""

    def generate(self, image: np.ndarray) -> list[dict]:
        h, w = image.shape[:2]
        rng = np.random.default_rng(0)
        out = []
        for _ in range(12):
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            m = np.zeros((h, w), dtype=bool)
            m[y0:y0 + h // 3, x0:x0 + w // 3] = True
            out.append({"segmentation": m, "area": int(m.sum())})
        return out


def random_dino(name: str):
    from transformers import ViTConfig, ViTModel

    from cliplens.models.vfm import load_vfm

    patch, width, depth, heads = DINO_SHAPES[name]
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=224, patch_size=patch, hidden_size=width, num_hidden_layers=depth,
                    num_attention_heads=heads, intermediate_size=4 * width, qkv_bias=True)
    return load_vfm(ViTModel(cfg, add_pooling_layer=False).eval())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--backbone", default="dino_vitb8", choices=sorted(DINO_SHAPES))
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--texts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--methods", default="", help="comma-separated (default: every method with a second backbone)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None, force_image_size=args.size).eval()
    adapter = cliplens.wrap(model, name=args.model)
    backbone = random_dino(args.backbone)
    methods = args.methods.split(",") if args.methods else map_names(second_backbone=True)
    texts = Targets.texts([f"a photo of object number {i}" for i in range(args.texts)]).embed(adapter, with_empty=True)
    x = torch.randn(args.batch, 3, args.size, args.size)
    mean, std = adapter.preprocess_config.mean, adapter.preprocess_config.std

    def plain(x):
        model.encode_image(x)
        backbone.forward(backbone.normalize_from(x, mean, std))

    fns = {"plain + backbone": plain}
    for m in methods:
        kwargs = {"vfm": backbone}
        if "sam" in map_class(m).__init__.__code__.co_varnames:
            kwargs["sam"] = FixedMasks()
        method = get_map(m, **kwargs)
        fns[m] = lambda x, method=method: method.raw(adapter, x, texts)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f(x)  # warm-up
        for _ in range(args.repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain + backbone"]
    print(f"model {args.model} + {args.backbone} (random weights), {args.size}px, batch {args.batch}, {args.texts} "
          f"texts, CPU threads {args.threads}, torch {torch.__version__}, median of {args.repeats}")
    print(f"{'row':<18} {'seconds':>8} {'x plain':>8}  target")
    print(f"{'plain + backbone':<18} {base:>8.2f} {1.0:>8.2f}")
    for m in methods:
        r = med[m] / base
        print(f"{m:<18} {med[m]:>8.2f} {r:>8.2f}  <= 1.2x: {'met' if r <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
