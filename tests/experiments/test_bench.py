"""The ground-truth benchmark's plumbing, on a random-weight ToyCLIP (its numbers mean nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cliplens.cli.toy import toy
from cliplens.experiments import bench
from cliplens.experiments.bench import DEFAULT_ROWS, background_texts, bench_scenes, class_texts, run_bench
from cliplens.maps import MapMethod

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
    assert [r["method"] for r in result["rows"]] == list(DEFAULT_ROWS)
    assert {r["method"] for r in result["rows"] if r["baseline"]} == {"uniform", "gaussian", "nothing"}
    n_obj = sum(len(s.texts) for s in bench_scenes(N, SEED))
    assert result["n"] == N and result["n_objects"] == n_obj == len(result["objects"])
    for r in result["rows"]:
        assert r["n_objects"] == n_obj
        for key in ("miou", "miou_fgbg", "pixel_acc", "map"):
            assert 0.0 <= r[key] <= 1.0, (r["method"], key, r[key])
        assert r["settings"]["method"] and not r["oracle"]
    assert 0.0 <= result["exactness"] < 1e-5
    assert set(result["beats_baselines"]) == {r for r in DEFAULT_ROWS if r not in ("uniform", "gaussian", "nothing")}
    nothing = next(r for r in result["rows"] if r["method"] == "nothing")
    assert nothing["miou"] == 0.0 and nothing["seg_miou"] is not None
    assert all(r["seg_miou"] is None for r in result["rows"] if r["method"] in ("uniform", "gaussian"))
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


def _true_maps(texts, scenes, H, W):
    """Per scene, each text's map: 1 on its objects' visible pixels; background texts 0.5 everywhere."""
    out = torch.zeros(len(scenes), len(texts), H, W)
    for b, s in enumerate(scenes):
        for t, text in enumerate(texts):
            if text in s.texts:
                out[b, t] = torch.from_numpy(s.masks[s.texts.index(text)].astype(np.float32))
            elif text in background_texts():
                out[b, t] = 0.5
    return out


def test_perfect_method_scores_one_and_beats_baselines(model):
    scenes = bench_scenes(N, SEED)

    class Oracle(MapMethod):  # the true masks, whatever the pixels
        def raw(self, model, pixels, texts):
            assert pixels.shape[0] == len(scenes)
            return _true_maps(texts.labels, scenes, *pixels.shape[-2:])

    res = run_bench(model, n=N, seed=SEED, methods={"oracle": Oracle(), "uniform": "uniform", "gaussian": "gaussian",
                                                    "nothing": "nothing"})
    oracle, uniform, gaussian, nothing = res["rows"]
    assert oracle["method"] == "oracle" and not oracle["baseline"]
    assert oracle["miou"] == 1.0 and oracle["pixel_acc"] == 1.0 and oracle["map"] == 1.0 and oracle["miou_fgbg"] == 1.0
    assert oracle["seg_miou"] == 1.0 and oracle["seg_pixel_acc"] == 1.0  # open-vocabulary segmentation, exact
    assert nothing["seg_pixel_acc"] < 1.0 and 0 < nothing["seg_miou"] < oracle["seg_miou"]
    assert res["beats_baselines"] == {"oracle": True}


def test_bad_method_output_is_named(model):
    class Broken(MapMethod):
        def raw(self, model, pixels, texts):
            return torch.zeros(1, 8, 8)

    with pytest.raises(ValueError, match="'broken'"):
        run_bench(model, n=1, seed=SEED, methods={"broken": Broken()})
    with pytest.raises(ValueError, match="unknown map method .nope."):
        run_bench(model, n=1, methods=["nope"])



def test_scene_contrast_is_an_oracle_and_differs(model):
    both = {c: run_bench(model, n=3, seed=SEED, contrast=c, methods=["decomposition"]) for c in ("classes", "scene")}
    assert [r["oracle"] for r in both["scene"]["rows"]] == [True] and not both["classes"]["rows"][0]["oracle"]
    assert both["scene"]["rows"][0]["n_objects"] == sum(len(s.texts) for s in bench_scenes(3, SEED))
    assert both["scene"]["rows"][0]["miou"] != both["classes"]["rows"][0]["miou"]
    assert len(class_texts()) == 56 and len(set(class_texts())) == 56 and len(background_texts()) == 6
    with pytest.raises(ValueError, match="contrast"):
        run_bench(model, n=1, contrast="everything")



def test_cli_json_and_table(weights):
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--seed", str(SEED), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [row["method"] for row in out["rows"]] == list(DEFAULT_ROWS) and out["n"] == 2
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "2", "--method", "uniform",
                                 "--method", "decomposition"])
    assert r.exit_code == 0, r.output
    assert "uniform" in r.output and "decomposition" in r.output and "gaussian" not in r.output
    assert "exactness" in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "-n", "1", "--method", "decomposition"])
    assert r.exit_code == 0 and "n/a" in r.output and "NO" not in r.output
    r = CliRunner().invoke(toy, ["bench", "--pretrained", str(weights), "--method", "nope"])
    assert r.exit_code == 2 and "nope" in r.output




def test_rows_that_cannot_run_on_a_model_are_left_out_saying_why(random_toy_weights):
    """On a tower without a CLS token (SigLIP's attention pooling) the rows of Chefer et al. and SFP, which read the
    CLS token, are left out with their reason; every other default row runs. Asked for by name, such a row is
    refused with the reason (not a crash inside the method)."""
    from cliplens.errors import InvalidInputError
    from cliplens.experiments.bench import DEFAULT_ROWS
    from tests.pooled_towers import pooled_toy

    tower = pooled_toy(random_toy_weights, "map")
    res = run_bench(tower, n=1, seed=SEED)
    assert set(res["left_out"]) == {"Chefer et al.", "SFP"}
    assert all("no CLS token" in why for why in res["left_out"].values())
    assert {r["method"] for r in res["rows"]} == set(DEFAULT_ROWS) - set(res["left_out"])
    with pytest.raises(InvalidInputError, match="'SFP' cannot run on this model: .*no CLS token"):
        run_bench(tower, n=1, seed=SEED, methods=["SFP", "NACLIP"])
