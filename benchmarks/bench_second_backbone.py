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

SAM's automatic masks are not timed: a method that reads SAM's regions (CorrCLIP) gets a fixed set of masks from
a stub generator, the same in every run, so the ratio measures the method's own work beyond its models' plain
forwards (SAM's automatic masks cost the same in the method and in a plain SAM run).

Trident runs CLIP and DINO on its own sliding windows (336-pixel crops, stride 224: 4 crops of a 448 input, 2.25
times the pixels) and SAM's image encoder (a random ``vit_b``, 1024 px) on the whole input; its baseline row is
those plain forwards on the same crops and image:

    plain on trident's inputs   open_clip ``encode_image`` and DINO's forward on the windows, SAM's encoder once

Target (issue 17): <= 1.2x (plain CLIP + the plain second backbone [+ SAM's encoder], on the inputs the method
gives them).
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


def random_sam():
    """segment_anything's ``vit_b`` with random weights (its real shape; no checkpoint)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    return sam_model_registry["vit_b"](checkpoint=None).eval()


def trident_plain(model_name: str, method, adapter, backbone, sam, size: int):
    """Plain CLIP and DINO on Trident's windows of a ``size`` input, and SAM's image encoder once per image."""
    import open_clip
    from segment_anything import SamPredictor

    crop = method.params["slide_crop"]
    wins = method.windows(adapter, size, size)
    clip_crop = open_clip.create_model(model_name, pretrained=None, force_image_size=crop).eval()
    predictor = SamPredictor(sam)
    mean, std = adapter.preprocess_config.mean, adapter.preprocess_config.std

    def run(x):
        crops = torch.stack([x[:, :, t:t + h, s:s + w] for t, s, h, w in wins], 1).flatten(0, 1)
        clip_crop.encode_image(crops)
        backbone.forward(backbone.normalize_from(crops, mean, std))
        for _ in range(len(x)):
            predictor.set_image(np.zeros((size, size, 3), np.uint8))

    return run


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
    baseline = {m: "plain + backbone" for m in methods}
    for m in methods:
        kwargs = {"vfm": backbone}
        if m == "trident":
            kwargs["sam"] = sam = random_sam()
            method = get_map(m, **kwargs)
            fns["plain on trident's inputs"] = trident_plain(args.model, method, adapter, backbone, sam, args.size)
            baseline[m] = "plain on trident's inputs"
        elif "sam" in map_class(m).__init__.__code__.co_varnames:
            kwargs["sam"] = FixedMasks()
            method = get_map(m, **kwargs)
        else:
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
    print(f"{'row':<26} {'seconds':>8} {'x plain':>8}  target")
    for row in dict.fromkeys(baseline.values()):
        print(f"{row:<26} {med[row]:>8.2f} {med[row] / base:>8.2f}")
    for m in methods:
        r = med[m] / med[baseline[m]]
        print(f"{m:<26} {med[m]:>8.2f} {r:>8.2f}  <= 1.2x '{baseline[m]}': {'met' if r <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
