"""Time of the map methods next to one plain forward at the same input size, side by side in one run.

    python benchmarks/bench_maps.py          # ViT-B-16, random weights, 448 px, batch 4, 10 texts, CPU

Methods (each from preprocessed pixels to maps upsampled to the input, text embeddings precomputed):
    plain          open_clip ``model.encode_image`` at 448 px (the model built for 448 px)
    surgery        CLIP Surgery: forward with the v-v side path (6 blocks), feature surgery for the texts,
                   min-max, bilinear upsampling
    decomposition  the decomposition map: spatial decomposition, projection on the texts, contrast with the
                   other texts, min-max, bilinear upsampling

Median of ``--repeats`` timed runs after a warm-up, methods interleaved round-robin.
Targets (issue 8): surgery <= 1.3x plain, decomposition map <= 1.5x plain.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F

import cliplens
from cliplens.maps import Targets, get_map, normalize_maps
from cliplens.maps.targets import contrast_others

METHODS = ("plain", "surgery", "decomposition")


def build(model_name: str, size: int):
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None, force_image_size=size).eval()
    return model, cliplens.wrap(model, name=model_name)


def runners(model, adapter, texts):
    surgery, decomposition = get_map("surgery"), get_map("decomposition")
    size = adapter.vision.image_size

    def upsample(raw):
        return F.interpolate(normalize_maps(raw, "minmax"), size=size, mode="bilinear", align_corners=False)

    return {
        "plain": lambda x: model.encode_image(x),
        "surgery": lambda x: upsample(surgery.raw(adapter, x, texts)),
        "decomposition": lambda x: upsample(contrast_others(decomposition.raw(adapter, x, texts), dim=1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--texts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, adapter = build(args.model, args.size)
    names = [f"a photo of object number {i}" for i in range(args.texts)]
    texts = Targets.texts(names).embed(adapter, with_empty=True)
    x = torch.randn(args.batch, 3, args.size, args.size)
    fns = runners(model, adapter, texts)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with torch.no_grad():
        for m in METHODS:
            fns[m](x)  # warm-up
        for _ in range(args.repeats):
            for m in METHODS:
                t0 = time.perf_counter()
                fns[m](x)
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(ts) for m, ts in times.items()}
    print(f"model {args.model} (random weights), {args.size}px, batch {args.batch}, {args.texts} texts, "
          f"CPU threads {args.threads}, torch {torch.__version__}, median of {args.repeats}")
    print(f"{'method':<14} {'seconds':>8} {'x plain':>8}")
    for m in METHODS:
        print(f"{m:<14} {med[m]:>8.3f} {med[m] / med['plain']:>8.2f}")
    ok = (med["surgery"] / med["plain"] <= 1.3, med["decomposition"] / med["plain"] <= 1.5)
    print("targets: surgery <= 1.3x: {}  decomposition map <= 1.5x: {}".format(*("met" if o else "MISSED" for o in ok)))


if __name__ == "__main__":
    main()
