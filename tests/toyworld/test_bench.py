"""The ground-truth benchmark's plumbing, on a random-weight ToyCLIP (its numbers mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import cliplens
from cliplens.toyworld import bench
from cliplens.toyworld.bench import (
    MAP_METHODS,
    average_precision,
    average_precision_np,
    bench_scenes,
    class_texts,
    decomposition_map,
    gaussian_map,
    run_bench,
    score_map,
    uniform_map,
)
from cliplens.toyworld.cli import toy

N, SEED = 5, 7


@pytest.fixture(scope="module")
def weights(random_toy_weights):
    return random_toy_weights


@pytest.fixture(scope="module")
def model(random_toy):
    return random_toy


@pytest.fixture(scope="module")
def result(model):
    return run_bench(model, n=N, seed=SEED, details=True)


def test_scenes_are_held_out_targets(model):
    scenes = bench_scenes(N, SEED, image_size=64)
    again = bench_scenes(N, SEED, image_size=64)
    assert [s.scene.to_json() for s in scenes] == [s.scene.to_json() for s in again]
    assert [s.scene.to_json() for s in bench_scenes(N, SEED + 1)] != [s.scene.to_json() for s in scenes]
    for s in scenes:
        assert len(s.texts) >= 2 and len(set(s.texts)) == len(s.texts)
        assert s.masks.shape == (len(s.texts), 64, 64) and s.masks.any(axis=(1, 2)).all()
        assert s.masks.sum(0).max() == 1  # one target per pixel at most
        # each target is exactly the union of the visible pixels of the objects with that text
        from cliplens.toyworld.scenes import render_scene

        img, m = render_scene(s.scene)
        np.testing.assert_array_equal(img, s.image)
        for t, mask in zip(s.texts, s.masks, strict=True):
            want = np.zeros_like(mask)
            for o, vis in zip(s.scene.objects, m["visible"], strict=True):
                if bench.object_text(o.colour, o.shape) == t:
                    want |= vis
            np.testing.assert_array_equal(mask, want)


def test_rows_exactness_and_ranges(result):
    assert [r["method"] for r in result["rows"]] == list(MAP_METHODS)
    assert {r["method"] for r in result["rows"] if r["baseline"]} == {"uniform", "gaussian"}
    n_obj = sum(len(s.texts) for s in bench_scenes(N, SEED))
    assert result["n"] == N and result["n_objects"] == n_obj == len(result["objects"])
    for r in result["rows"]:
        assert r["n_objects"] == n_obj
        for key in ("miou", "miou_fgbg", "pixel_acc", "map"):
            assert 0.0 <= r[key] <= 1.0, (r["method"], key, r[key])
    assert 0.0 <= result["exactness"] < 1e-5
    assert set(result["beats_baselines"]) == {"decomposition"}
    json.dumps(result)  # JSON-serialisable as returned


def test_uniform_baseline_is_the_mask_fraction(result):
    fracs, pos, total = [], 0, 0
    for s in bench_scenes(N, SEED):
        for m in s.masks:
            fracs.append(m.sum() / m.size)
            pos += int(m.sum())
            total += m.size
    row = next(r for r in result["rows"] if r["method"] == "uniform")
    # a constant map predicts every pixel: IoU = pixel accuracy = AP = |mask| / |image|
    assert row["miou"] == pytest.approx(np.mean(fracs), rel=1e-12)
    assert row["pixel_acc"] == pytest.approx(np.mean(fracs), rel=1e-12)
    assert row["map"] == pytest.approx(np.mean(fracs), rel=1e-12)
    # the original's pooled fg/bg IoU: background is never predicted, so its IoU is 0
    assert row["miou_fgbg"] == pytest.approx(0.5 * pos / total, rel=1e-12)


def test_perfect_method_scores_one_and_beats_baselines(model):
    scenes = iter(bench_scenes(N, SEED))

    def oracle(model, pixels, texts):  # called once per scene, in order: returns the true masks
        s = next(scenes)
        assert list(texts) == s.texts
        return torch.from_numpy(s.masks.astype(np.float32))

    res = run_bench(model, n=N, seed=SEED, methods={"oracle": oracle, "uniform": uniform_map,
                                                    "gaussian": gaussian_map})
    row = res["rows"][0]
    assert row["method"] == "oracle" and not row["baseline"]
    assert row["miou"] == 1.0 and row["pixel_acc"] == 1.0 and row["map"] == 1.0 and row["miou_fgbg"] == 1.0
    assert res["beats_baselines"] == {"oracle": True}


def test_bad_method_output_is_named(model):
    with pytest.raises(ValueError, match="'broken'"):
        run_bench(model, n=1, seed=SEED, methods={"broken": lambda m, p, t: torch.zeros(1, 8, 8)})
    with pytest.raises(ValueError, match="unknown map methods"):
        run_bench(model, n=1, methods=["nope"])


def test_decomposition_map_is_the_contrasted_token_map(model):
    s = bench_scenes(1, SEED)[0]
    px = model.preprocess([s.image])
    texts = s.texts + [next(t for t in class_texts() if t not in s.texts)]
    got = decomposition_map(model, px, texts)
    dec = model.decompose(px, spatial=True).normalized()
    heads = dec.head_terms()  # [1, L, N, H, E], independent of project()/token_map()
    per_token = heads.sum(dim=(1, 3))[0, 1:]  # [gh*gw, E]
    raw = (per_token @ model.encode_text(texts).T).T.reshape(len(texts), *dec.grid)
    for k in range(len(texts)):
        others = torch.stack([raw[j] for j in range(len(texts)) if j != k]).mean(0)
        torch.testing.assert_close(got[k], raw[k] - others, rtol=1e-4, atol=1e-6)


def test_classes_contrast(model):
    res = run_bench(model, n=2, seed=SEED, contrast="classes", methods=["decomposition"])
    assert res["contrast"] == "classes" and res["rows"][0]["n_objects"] == sum(len(s.texts) for s in
                                                                                bench_scenes(2, SEED))
    assert len(class_texts()) == 56 and len(set(class_texts())) == 56
    with pytest.raises(ValueError, match="contrast"):
        run_bench(model, n=1, contrast="everything")


def test_average_precision():
    y = np.array([1, 0, 1, 0], bool)
    assert average_precision_np(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties form one threshold: a constant score has AP = the positive fraction
    assert average_precision_np(y, np.zeros(4)) == pytest.approx(0.5)
    assert average_precision_np(y, np.array([1.0, 0.5, 0.5, 0.0])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    mask = bench_scenes(1, SEED)[0].masks[0]
    assert average_precision_np(mask, mask.astype(float)) == 1.0
    sc = score_map(torch.from_numpy(mask.astype(np.float32)), mask)
    assert sc["iou"] == 1.0 and sc["ap"] == 1.0 and sc["pixel_acc"] == 1.0
    with pytest.raises(ValueError):
        average_precision_np(np.zeros(4, bool), np.arange(4.0))


def test_average_precision_matches_sklearn():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    for trial in range(20):
        y = rng.random(500) < rng.uniform(0.05, 0.5)
        y[0] = True
        s = np.round(rng.random(500) + 0.8 * y, 1 if trial % 2 else 6)  # many ties on odd trials
        assert average_precision_np(y, s) == pytest.approx(average_precision(y, s, use_sklearn=True), abs=1e-12)


def test_average_precision_without_sklearn(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    y = np.array([1, 0, 1, 0], bool)
    assert average_precision(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    with pytest.raises(ImportError):
        average_precision(y, np.zeros(4), use_sklearn=True)
    res = run_bench(model, n=1, seed=SEED, methods=["uniform"])
    assert res["ap_checked_against_sklearn"] == 0
    with pytest.raises(cliplens.MissingDependencyError):
        run_bench(model, n=1, seed=SEED, methods=["uniform"], ap_backend="sklearn")


def test_gaussian_baseline_is_centred():
    for H, W in ((64, 64), (48, 64)):
        g = gaussian_map(None, torch.zeros(1, 3, H, W), ["a", "b"])
        assert g.shape == (2, H, W) and torch.equal(g[0], g[1])
        torch.testing.assert_close(g[0], g[0].flip(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(g[0], g[0].flip(1), rtol=0, atol=1e-12)
        peak = divmod(int(g[0].argmax()), W)
        assert peak in {(H // 2 - 1, W // 2 - 1), (H // 2 - 1, W // 2), (H // 2, W // 2 - 1), (H // 2, W // 2)}
        # decreasing away from the centre along the middle row and column
        assert (g[0, H // 2, W // 2:].diff() < 0).all() and (g[0, H // 2:, W // 2].diff() < 0).all()
        assert g[0, 0, 0] < 0.2 * g.max()


def test_grid_maps_are_upsampled_bilinearly():
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    sc = score_map(grid, mask, clip=False)
    want = F.interpolate(grid[None, None].double(), size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(sc["map"], want.numpy())
    norm = (sc["map"] - sc["map"].min()) / (sc["map"].max() - sc["map"].min())
    np.testing.assert_array_equal(sc["pred"], norm >= norm.mean())
    # edge cases: a constant map predicts everything, a map with nothing above 0 predicts nothing
    assert score_map(torch.full((2, 2), 0.3), mask)["pred"].all()
    neg = score_map(-1.0 - grid, mask)
    assert not neg["pred"].any() and neg["iou"] == 0.0 and neg["pixel_acc"] == 0.5
    assert score_map(-1.0 - grid, mask, clip=False)["pred"].any()


def test_cli_json_and_table(weights):
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--seed", str(SEED), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [row["method"] for row in out["rows"]] == list(MAP_METHODS) and out["n"] == 2
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--method", "uniform",
                                 "--method", "decomposition"])
    assert r.exit_code == 0, r.output
    assert "uniform" in r.output and "decomposition" in r.output and "gaussian" not in r.output
    assert "exactness" in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "1", "--method", "decomposition"])
    assert r.exit_code == 0 and "n/a" in r.output and "NO" not in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "--method", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


def test_optional_dependencies_are_imported_lazily():
    code = ("import sys, cliplens.cli, cliplens.toyworld.bench, cliplens.demo; "
            "print('sklearn' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
