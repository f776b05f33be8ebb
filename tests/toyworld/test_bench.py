"""The ground-truth benchmark's plumbing, on a random-weight ToyCLIP (its numbers mean nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cliplens.cli.toy import toy
from cliplens.maps import MapMethod
from cliplens.toyworld import bench
from cliplens.toyworld.bench import DEFAULT_METHODS, bench_scenes, class_texts, run_bench

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
    assert [r["method"] for r in result["rows"]] == list(DEFAULT_METHODS)
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

    class Oracle(MapMethod):  # called once per scene, in order: returns the true masks
        text_dependent = False

        def raw(self, model, pixels, directions):
            s = next(scenes)
            assert directions.shape[0] == len(s.texts)
            return torch.from_numpy(s.masks.astype(np.float32))[None]

    res = run_bench(model, n=N, seed=SEED, methods={"oracle": Oracle(), "uniform": "uniform",
                                                    "gaussian": "gaussian"})
    row = res["rows"][0]
    assert row["method"] == "oracle"
    assert row["miou"] == 1.0 and row["pixel_acc"] == 1.0 and row["map"] == 1.0 and row["miou_fgbg"] == 1.0
    oracle, uniform, gaussian = res["rows"]
    assert all(oracle[k] > r[k] for r in (uniform, gaussian) for k in ("miou", "map"))


def test_bad_method_output_is_named(model):
    class Broken(MapMethod):
        def raw(self, model, pixels, directions):
            return torch.zeros(1, 8, 8)

    with pytest.raises(ValueError, match="'broken'"):
        run_bench(model, n=1, seed=SEED, methods={"broken": Broken()})
    with pytest.raises(ValueError, match="unknown map method .nope."):
        run_bench(model, n=1, methods=["nope"])



def test_classes_contrast(model):
    res = run_bench(model, n=2, seed=SEED, contrast="classes", methods=["decomposition"])
    assert res["contrast"] == "classes" and res["rows"][0]["n_objects"] == sum(len(s.texts) for s in
                                                                                bench_scenes(2, SEED))
    assert len(class_texts()) == 56 and len(set(class_texts())) == 56
    with pytest.raises(ValueError, match="contrast"):
        run_bench(model, n=1, contrast="everything")







def test_cli_json_and_table(weights):
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--seed", str(SEED), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [row["method"] for row in out["rows"]] == list(DEFAULT_METHODS) and out["n"] == 2
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--method", "uniform",
                                 "--method", "decomposition"])
    assert r.exit_code == 0, r.output
    assert "uniform" in r.output and "decomposition" in r.output and "gaussian" not in r.output
    assert "exactness" in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "1", "--method", "decomposition"])
    assert r.exit_code == 0 and "n/a" in r.output and "NO" not in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "--method", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


