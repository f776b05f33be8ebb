"""Store benchmarks, each side by side in one run:

    python benchmarks/bench_store.py build      # store build vs the plain forward: toy and ViT-B-16 (random), fp16
    python benchmarks/bench_store.py ablate     # one ablation over a 50,000-image ViT-B-16-shaped store (synthetic)
    python benchmarks/bench_store.py memory     # resident memory reading 1k..20k-image toy stores (flat?)
    python benchmarks/bench_store.py sizes      # bytes per image for each mode
    python benchmarks/bench_store.py verify     # checks of a 50,000-image ViT-B-16-shaped store: open, --verify

build: images/s of ``build_store`` (non-spatial, float16, preprocessing and writing included) next to the plain
forward over the same images (preprocessing included), methods interleaved, median of ``--repeats``. Target
(issue 9): >= 0.85x. ablate: the store is written with random values of the right shapes and dtypes (no model
run); the time of ``evaluate`` for the attention of layers 0..5 and for 10 heads, the dataset means computed
once before (target <= 2 s). memory: a full ablation pass, in a fresh process per size: peak resident memory, the process's own memory
(RssAnon; flat means reading is memory-mapped) and the mapped store pages (RssFile). verify: the same synthetic
store; the time of ``Store(path)`` (the checks on every open: sizes, headers, offsets; median of ``--repeats``)
and of ``verify_store`` (every checksum, as ``store info --verify`` and a resumed build do), page cache warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cliplens
from cliplens.analyses.ablation import Ablation, evaluate
from cliplens.datasets import ListDataset, Sample, load_toy
from cliplens.store import Store, StoreSettings, build_store
from cliplens.store.integrity import save_checked, verify_store
from cliplens.store.schema import FORMAT, HEADER, PROJECTIONS, chunk_name, write_json_atomic
from cliplens.store.schema import StoreSettings as _S
from cliplens.store.writer import write_manifest


def vitb16():
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    return cliplens.wrap(open_clip.create_model("ViT-B-16", pretrained=None).eval(), name="ViT-B-16")


def random_images(n: int, size: int = 224) -> ListDataset:
    g = np.random.default_rng(0)
    samples = [Sample(g.integers(0, 255, (size, size, 3), dtype=np.uint8), i % 10, f"img-{i}", {}) for i in range(n)]
    return ListDataset(samples, class_names=[f"class {i}" for i in range(10)], name="random", layout="arrays")


def bench_build(args) -> None:
    cases = [("toy", cliplens.load("toy"), load_toy(n=args.toy_images, count=1)),
             ("ViT-B-16", vitb16(), random_images(args.vit_images))]
    def plain(model, data):
        for s in range(0, len(data), 32):
            model.encode_image(model.preprocess([data[i].image for i in range(s, min(s + 32, len(data)))]))

    def store(model, data):
        out = Path(tempfile.mkdtemp())
        shutil.rmtree(out)
        build_store(model, data, out, settings=StoreSettings(dtype="float16", chunk_size=256, batch_size=32,
                                                             templates="none"))
        shutil.rmtree(out)

    for name, model, data in cases:
        times = {"plain": [], "store": []}
        plain(model, data), store(model, data)  # warm-up
        for _ in range(args.repeats):
            for k, fn in (("plain", plain), ("store", store)):
                t0 = time.perf_counter()
                fn(model, data)
                times[k].append(time.perf_counter() - t0)
        ips = {k: len(data) / statistics.median(v) for k, v in times.items()}
        print(f"{name}: {len(data)} images, plain forward {ips['plain']:.1f} img/s, store build (fp16) "
              f"{ips['store']:.1f} img/s, ratio {ips['store'] / ips['plain']:.2f} "
              f"({'met' if ips['store'] / ips['plain'] >= 0.85 else 'MISSED'} >= 0.85)")


def synthetic_store(out: Path, n: int, chunk: int = 2048, L: int = 12, H: int = 12, dh: int = 64, E: int = 512,
                    C: int = 1000) -> None:
    """A ViT-B-16-shaped float16 store with random contents (the layout of cliplens.store, no model run)."""
    D = H * dh
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    proj = {"out_weight": torch.randn(L, D, D, generator=g) * D ** -0.5, "out_bias": torch.randn(L, D, generator=g) * 0.1,
            "ln_gamma": 1 + 0.1 * torch.randn(D, generator=g), "ln_beta": 0.1 * torch.randn(D, generator=g),
            "readout_out": torch.randn(1, D, E, generator=g) * D ** -0.5, "head_bias": torch.zeros(E),
            "classifier": torch.nn.functional.normalize(torch.randn(C, E, generator=g), dim=-1)}
    save_checked(out / PROJECTIONS, proj, {})
    settings = _S(dtype="float16", chunk_size=chunk, templates="none")
    header = {"format": FORMAT, "model": {"name": "synthetic ViT-B-16", "weights": "random",
                                         "fingerprint": "synthetic", "random_weights": True},
              "preprocess": {}, "settings": settings.to_dict(), "dataset": {"layout": "synthetic", "n": n},
              "class_names": [f"class {i}" for i in range(C)], "attribute_names": [], "images": n,
              "shape": {"layers": L, "heads": H, "head_dim": dh, "width": D, "embed_dim": E, "tokens": 197,
                        "readouts": 1, "prefix_tokens": 1},
              "pooling": {"kind": "cls", "readouts": 1, "affine": True}}
    write_json_atomic(out / HEADER, header)
    for c in range((n + chunk - 1) // chunk):
        k = min(chunk, n - c * chunk)
        t = {"heads": torch.randn(k, 1, L, H, dh, generator=g).half(),
             "cls_heads": torch.randn(k, 1, L, H, dh, generator=g).half(),
             "attn_out": torch.randn(k, 1, L, D, generator=g).half(), "mlp_out": torch.randn(k, 1, L, D, generator=g).half(),
             "embed_term": torch.randn(k, 1, D, generator=g).half(), "mean": torch.randn(k, 1, generator=g) * 0.1,
             "scale": 1 / (1 + torch.rand(k, 1, generator=g)), "wsum": torch.ones(k, 1),
             "embedding": torch.randn(k, E, generator=g),
             "label": torch.randint(0, C, (k,), generator=g), "index": torch.arange(c * chunk, c * chunk + k)}
        save_checked(out / chunk_name(c), t, {"chunk": str(c), "rank": "0", "ids": json.dumps([""] * k),
                                              "attributes": json.dumps([{}] * k), "skipped": "[]"})
    write_manifest(out, n, chunk)


def bench_ablate(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store"
        t0 = time.perf_counter()
        synthetic_store(out, args.images)
        print(f"synthetic store: {args.images} images, {sum(p.stat().st_size for p in out.iterdir()) / 2**30:.2f} GiB, "
              f"written in {time.perf_counter() - t0:.0f} s")
        st = Store(out)
        t0 = time.perf_counter()
        evaluate(st)  # computes and caches the data set's means (one pass)
        print(f"means (once per store): {time.perf_counter() - t0:.1f} s")
        for a in (Ablation(attention=tuple(range(6))), Ablation(heads=tuple((11, h) for h in range(10))),
                  Ablation(mlps=tuple(range(12)), embed=True)):
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                r = evaluate(st, a)
                ts.append(time.perf_counter() - t0)
            med = statistics.median(ts)
            print(f"  {a.describe()}: {med:.2f} s (median of {args.repeats}; accuracy {r.accuracy:.3f}) "
                  f"{'met' if med <= 2 else 'MISSED'} <= 2 s")


def bench_verify(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store"
        t0 = time.perf_counter()
        synthetic_store(out, args.images)
        files = list(out.iterdir())
        print(f"synthetic store: {args.images} images, {sum(p.stat().st_size for p in files) / 2**30:.2f} GiB in "
              f"{len(files)} files, written in {time.perf_counter() - t0:.0f} s")
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            Store(out)
            ts.append(time.perf_counter() - t0)
        print(f"  open (sizes, headers, offsets checked; no data read): {1000 * statistics.median(ts):.0f} ms "
              f"(median of {args.repeats})")
        t0 = time.perf_counter()
        v = verify_store(out)
        dt = time.perf_counter() - t0
        print(f"  every checksum (store info --verify; a resumed build checks the same): {dt:.1f} s, "
              f"{v.bytes / 2**20 / dt:.0f} MiB/s, {len(v.checked)} files, ok={v.ok}")


def _memory_child(path: str) -> None:
    st = Store(path)
    evaluate(st, Ablation(attention=tuple(range(6))))
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    print(" ".join(str(int(status[k].split()[0]) // 1024) for k in ("VmHWM", "RssAnon", "RssFile")))


def bench_memory(args) -> None:
    """Memory while reading stores of growing size: the peak resident set (VmHWM) and, after an ablation pass,
    the process's own memory (RssAnon) apart from the store's pages the kernel maps in (RssFile, reclaimable)."""
    model = cliplens.load("toy")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            out = Path(tmp) / f"s{n}"
            build_store(model, load_toy(n=n, count=1), out, settings=StoreSettings(chunk_size=1024, batch_size=128,
                                                                                  templates="none"))
            peak, anon, file = subprocess.run([sys.executable, __file__, "memory-child", str(out)], capture_output=True,
                                              text=True, check=True).stdout.split()[-3:]
            size = sum(p.stat().st_size for p in out.glob("chunk-*")) / 2**20
            print(f"  {n} toy images ({size:.0f} MiB of chunks): ablation pass: peak resident {peak} MiB, own memory "
                  f"(RssAnon) {anon} MiB, mapped store pages (RssFile) {file} MiB")


def bench_sizes(args) -> None:
    cases = [("toy", cliplens.load("toy"), load_toy(n=64, count=1)), ("ViT-B-16", vitb16(), random_images(16))]
    for name, model, data in cases:
        for dtype in ("float32", "float16"):
            for spatial in ((), (-1,)):
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "s"
                    build_store(model, data, out, settings=StoreSettings(dtype=dtype, spatial_layers=spatial,
                                                                         chunk_size=64, templates="none"))
                    size = sum(p.stat().st_size for p in out.glob("chunk-*"))
                    print(f"  {name} {dtype} {'spatial last layer' if spatial else 'non-spatial'}: "
                          f"{size / len(data) / 1024:.1f} KiB per image")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["build", "ablate", "memory", "sizes", "verify", "memory-child"])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--toy-images", type=int, default=2048)
    ap.add_argument("--vit-images", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.what == "memory-child":
        _memory_child(args.path)
        return
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    {"build": bench_build, "ablate": bench_ablate, "memory": bench_memory, "sizes": bench_sizes,
     "verify": bench_verify}[args.what](args)


if __name__ == "__main__":
    main()
