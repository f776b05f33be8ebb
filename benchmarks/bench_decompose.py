"""Throughput and peak memory of the decomposition next to the source model's plain forward.

One command, one run, side by side (ViT-B-16, random weights, batch 8, CPU by default):

    python benchmarks/bench_decompose.py            # add --model / --batch / --repeats / --threads
    python benchmarks/bench_decompose.py --model families   # one B/16-shaped model per family, one after another:
                                                            # ViT-B-16, ViT-B-16-SigLIP, EVA02-B-16, PE-Core-B-16, RN50

Methods:
    plain         open_clip ``model.encode_image`` (the source library's own forward)
    dense         ``adapter.encode_dense(x)`` (every token through ln_post and the projection)
    non-spatial   ``adapter.decompose(x, spatial=False)`` (per layer, per head)
    spatial       ``adapter.decompose(x, spatial=True)``  (per layer, per head, per source token)

Throughput: images/s, median of ``--repeats`` timed runs after warm-up, methods interleaved
round-robin so that machine noise hits all of them alike. Peak memory: each method runs once
in a fresh subprocess (glibc's mmap threshold fixed, so freed buffers go back to the OS); after
the model is built and one warm-up call, we reset the kernel's resident-set high-water mark
(``/proc/self/clear_refs``) and report the peak resident memory *added* by one call
(activations and outputs, weights excluded), and also the whole-process peak.

Targets (from the issues): dense output >= 0.9x plain throughput, non-spatial >= 0.9x, spatial >= 0.7x,
spatial peak memory <= 2x plain.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import torch

METHODS = ("plain", "dense", "non-spatial", "spatial")
#: ``--model families``: one model per image-tower family at B/16 shape (ResNet: RN50), random weights
FAMILY_MODELS = ("ViT-B-16", "ViT-B-16-SigLIP", "EVA02-B-16", "PE-Core-B-16", "RN50")


def build(model_name: str):
    import open_clip

    import cliplens

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None).eval()
    adapter = cliplens.wrap(model, name=model_name)
    return model, adapter


def runner(method: str, model, adapter):
    if method == "plain":
        return lambda x: model.encode_image(x)
    if method == "dense":
        return lambda x: adapter.encode_dense(x)
    if method == "non-spatial":
        return lambda x: adapter.decompose(x, spatial=False)
    if method == "spatial":
        return lambda x: adapter.decompose(x, spatial=True)
    raise ValueError(method)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(method: str, model_name: str, batch: int, size: int) -> None:
    model, adapter = build(model_name)
    x = torch.randn(batch, 3, size, size)
    fn = runner(method, model, adapter)
    torch.set_grad_enabled(False)
    fn(x)  # warm-up: one-time kernel and thread-pool set-up is not the method's memory
    base = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    out = fn(x)
    peak = _rss_kib("VmHWM")
    del out
    print(json.dumps({"added_mib": (peak - base) / 1024, "process_mib": peak / 1024}))


def measure_memory(method: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--model", args.model, "--batch", str(args.batch),
           "--size", str(args.size), "--threads", str(args.threads)]
    # a fixed mmap threshold makes glibc return every large buffer to the OS when it is freed, so the
    # resident high-water mark measures live tensors rather than allocator caching
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    return json.loads(out)


def measure_speed(args) -> dict[str, float]:
    model, adapter = build(args.model)
    x = torch.randn(args.batch, 3, args.size, args.size)
    fns = {m: runner(m, model, adapter) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with torch.no_grad():
        # exactness of what we time
        err = adapter.decompose(x, spatial=True).check()
        for m in METHODS:  # warm-up
            fns[m](x)
        for _ in range(args.repeats):
            for m in METHODS:
                t0 = time.perf_counter()
                fns[m](x)
                times[m].append(time.perf_counter() - t0)
    print(f"decomposition exactness (relative): {err:.2e}")
    return {m: args.batch / statistics.median(ts) for m, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["ViT-B-16"],
                    help="open_clip names, or 'families' for one model per image-tower family")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args.child, args.model[0], args.batch, args.size)
        return
    names = [n for m in args.model for n in (FAMILY_MODELS if m == "families" else (m,))]
    summary = []
    for name in names:
        args.model = name
        summary.append((name, *bench_one(args)))
    if len(summary) > 1:
        print("\nsummary (x the source's own encode_image; memory: peak added by one call)")
        print(f"{'model':<18} {'dense':>7} {'non-spatial':>12} {'spatial':>8} {'spatial memory':>15}")
        for name, speed, mem in summary:
            print(f"{name:<18} {speed['dense'] / speed['plain']:>7.2f} {speed['non-spatial'] / speed['plain']:>12.2f} "
                  f"{speed['spatial'] / speed['plain']:>8.2f} "
                  f"{mem['spatial']['added_mib'] / mem['plain']['added_mib']:>15.2f}")


def bench_one(args) -> tuple[dict, dict]:
    print(f"\nmodel {args.model} (random weights), batch {args.batch}, {args.size}px, CPU threads {args.threads}, "
          f"torch {torch.__version__}")
    speed = measure_speed(args)
    mem = {m: measure_memory(m, args) for m in METHODS}
    base_s, base_m = speed["plain"], mem["plain"]
    print(f"{'method':<12} {'img/s':>8} {'x plain':>8} {'added MiB':>10} {'x plain':>8} {'process MiB':>12} {'x plain':>8}")
    for m in METHODS:
        print(f"{m:<12} {speed[m]:>8.2f} {speed[m] / base_s:>8.2f} {mem[m]['added_mib']:>10.1f} "
              f"{mem[m]['added_mib'] / base_m['added_mib']:>8.2f} {mem[m]['process_mib']:>12.1f} "
              f"{mem[m]['process_mib'] / base_m['process_mib']:>8.2f}")
    ok = (speed["dense"] / base_s >= 0.9, speed["non-spatial"] / base_s >= 0.9, speed["spatial"] / base_s >= 0.7,
          mem["spatial"]["added_mib"] / base_m["added_mib"] <= 2.0)
    print("targets: dense >= 0.9x: {}  non-spatial >= 0.9x: {}  spatial >= 0.7x: {}  spatial peak added memory "
          "<= 2x: {}".format(*("met" if o else "MISSED" for o in ok)))
    return speed, mem


if __name__ == "__main__":
    main()
