"""Time of every map method next to one plain forward at the same input size, side by side in one run.

    python benchmarks/bench_maps.py                 # ViT-B-16, random weights, 448 px, batch 4, CPU
                                                    # (every method of CLIP alone; bench_second_backbone.py
                                                    #  times those that add DINO or SAM)
    python benchmarks/bench_maps.py --sliding       # also: one 2048x1024 image through the evaluation protocol

Each method runs from preprocessed pixels to maps upsampled to the input, text embeddings precomputed, for 1
text and for ``--texts`` texts (gradient methods need one backward pass per text; the others do not care):
    plain          open_clip ``model.encode_image`` at 448 px (the model built for 448 px)
    <method>       ``cliplens.maps.get_map(method).raw`` with its defaults, min-max, bilinear upsampling (the
                   decomposition map also subtracts the mean of the other texts, its default contrast)

Median of ``--repeats`` timed runs after a warm-up, methods interleaved round-robin; the column "min x" is the
ratio of the fastest runs (the least disturbed by other work on the machine, which only ever adds time).
Targets (issue 10): gradient-free methods <= 1.3x plain, gradient methods <= 3x plain (1 text).

The column "flops x" is each method's arithmetic next to the plain forward's, 1 text: the floating-point
operations of matrix products, convolutions and fused attention, counted by torch's ``FlopCounterMode`` on one
more run (the plain forward counted with PyTorch's fused multi-head-attention fast path off, which hides its
products from the counter). It is a floor for the time ratio wherever products dominate: a method whose own
arithmetic is 1.4x the plain forward's cannot run in 1.3x its time without computing something else.
With ``--sliding``: the segmentation protocol (Cityscapes preset: short side 560 -> 1120x560, 224 windows,
stride 112, i.e. 36 windows) on one synthetic 2048x1024 image, 19 classes, per method, with its time
(text embeddings cached by a warm-up run: the time is the image's).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import cliplens
from cliplens.maps import Targets, get_map, map_names, normalize_maps
from cliplens.maps.targets import contrast_others

GRADIENT = ("gradcam", "chefer", "legrad")
SKIP = ("nothing", "uniform", "gaussian")  # baselines that do not look at the image


def _register_cpu_attention_flops() -> None:
    """Teach the counter CPU's fused attention (torch counts the CUDA kernels only): 4·B·H·Nq·Nk·dh."""
    from torch.utils import flop_counter as fc

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in fc.flop_registry:
        @fc.register_flop_formula(op)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn) -> int:
    """Floating-point operations of matrix products, convolutions and fused attention in one call of ``fn()``."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA op is opaque to the counter
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def build(model_name: str, size: int):
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None, force_image_size=size).eval()
    return model, cliplens.wrap(model, name=model_name)


def runners(model, adapter, methods):
    size = adapter.vision.image_size

    def upsample(raw):
        return F.interpolate(normalize_maps(raw, "minmax"), size=size, mode="bilinear", align_corners=False)

    fns = {"plain": lambda x, texts: model.encode_image(x)}
    for m in methods:
        method = get_map(m)
        if m == "decomposition":
            fns[m] = lambda x, texts, method=method: upsample(contrast_others(method.raw(adapter, x, texts), dim=1)
                                                              if texts.directions.shape[0] > 1
                                                              else method.raw(adapter, x, texts))
        else:
            fns[m] = lambda x, texts, method=method: upsample(method.raw(adapter, x, texts))
    return fns


def sliding(adapter, methods, repeats: int) -> None:
    from types import SimpleNamespace

    from cliplens.evaluation.protocol import protocol_for
    from cliplens.evaluation.segeval import evaluate_segmentation

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    names = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
             "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]

    class One:
        name, class_names, background, ignore_index = "cityscapes", names, None, 255

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return SimpleNamespace(image=image, id="synthetic-2048x1024")

        def mask(self, i):
            return np.zeros((1024, 2048), dtype=np.int64)

        def describe(self):
            return {"name": "synthetic 2048x1024"}

    proto = protocol_for("cityscapes")
    print(f"\nsliding-window evaluation of one 2048x1024 image: {proto.to_dict()}")
    print(f"{'method':<16} {'seconds':>8}")
    for m in methods:
        evaluate_segmentation(adapter, m, One(), protocol=proto)  # warm-up; embeds the 19 x 80 prompts once (cached)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            evaluate_segmentation(adapter, m, One(), protocol=proto)
            ts.append(time.perf_counter() - t0)
        print(f"{m:<16} {statistics.median(ts):>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--texts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    ap.add_argument("--sliding", action="store_true", help="also time the sliding-window evaluation of a 2048x1024 image")
    ap.add_argument("--sliding-methods", default="naclip,sclip,surgery,gradcam")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # by default every method of CLIP alone; those with a second backbone (DINO, SAM) have their own benchmark
    # (bench_second_backbone.py: random-weight backbones in their real shapes) and are run here only by name
    methods = [m for m in (args.methods.split(",") if args.methods else map_names())
               if m not in SKIP and (args.methods or not get_map(m).second_backbone)]
    model, adapter = build(args.model, args.size)
    texts = {k: Targets.texts([f"a photo of object number {i}" for i in range(k)]).embed(adapter, with_empty=True)
             for k in sorted({1, args.texts})}
    x = torch.randn(args.batch, 3, args.size, args.size)
    fns = runners(model, adapter, methods)
    order = ["plain", *methods]
    times: dict[tuple[str, int], list[float]] = {(m, k): [] for m in order for k in texts}
    with torch.no_grad():
        for m in order:
            fns[m](x, texts[1])  # warm-up
        for _ in range(args.repeats):
            for m in order:
                for k, t in texts.items():
                    if m == "plain" and k != 1:
                        continue
                    t0 = time.perf_counter()
                    fns[m](x, t)
                    times[(m, k)].append(time.perf_counter() - t0)
        flops = {m: count_flops(lambda m=m: fns[m](x, texts[1])) for m in order}
    med = {key: statistics.median(ts) for key, ts in times.items() if ts}
    fastest = {key: min(ts) for key, ts in times.items() if ts}
    base = med[("plain", 1)]
    print(f"model {args.model} (random weights), {args.size}px, batch {args.batch}, CPU threads {args.threads}, "
          f"torch {torch.__version__}, median of {args.repeats}")
    many_head = f" {f's ({args.texts} texts)':>13} {'x plain':>8}" if args.texts != 1 else ""
    print(f"{'method':<16} {'kind':<13} {'s (1 text)':>10} {'x plain':>8} {'min x':>6} {'flops x':>8}{many_head}  target")
    print(f"{'plain':<16} {'':<13} {base:>10.3f} {1.0:>8.2f} {1.0:>6.2f} {1.0:>8.2f}   ({flops['plain'] / 1e9:.0f} GFLOP)")
    for m in methods:
        kind = "gradient" if m in GRADIENT else "gradient-free"
        r1 = med[(m, 1)] / base
        target = 3.0 if m in GRADIENT else 1.3
        many = f" {med[(m, args.texts)]:>13.3f} {med[(m, args.texts)] / base:>8.2f}" if args.texts != 1 else ""
        r_min = fastest[(m, 1)] / fastest[("plain", 1)]
        print(f"{m:<16} {kind:<13} {med[(m, 1)]:>10.3f} {r1:>8.2f} {r_min:>6.2f} {flops[m] / flops['plain']:>8.2f}{many}  <= {target}x: "
              f"{'met' if r1 <= target else 'MISSED'}")
    if args.sliding:
        sliding(adapter, args.sliding_methods.split(","), max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
