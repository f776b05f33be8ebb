"""``cliplens demo`` on a random-weight ToyCLIP: the numbers mean nothing, the plumbing is tested."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cliplens.cli import main
from cliplens.errors import CliplensError
from cliplens.report.demo import demo_scene, make_demo
from cliplens.report.files import fresh_dir as choose_out_dir
from cliplens.toyworld.scenes import render_scene

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def weights(random_toy_weights):
    return random_toy_weights


@pytest.fixture(scope="module")
def model(random_toy):
    return random_toy


@pytest.fixture(scope="module")
def result(model, tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo") / "out", model=model, seed=3, objects=3)


def _refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_html_references_every_figure(result):
    out = result.out_dir
    assert result.html == out / "index.html" and result.html.is_file()
    page = result.html.read_text()
    refs = _refs(page)
    pngs = sorted(p.name for p in out.glob("*.png"))
    # every figure written is on the page, and everything the page points to exists, next to it
    assert sorted(r for r in refs if r.endswith(".png")) == pngs
    assert {"summary.json", "maps.npz"} <= set(refs)
    for r in refs:
        assert "/" not in r and (out / r).is_file(), r
        if r.endswith(".png"):
            assert (out / r).read_bytes()[:8] == PNG
    # 1 scene + per object a segmentation figure + per phrase (caption, 3 names, background, count) 2 charts
    assert len(pngs) == 1 + 3 + 2 * 6
    assert all(f.is_file() for f in result.files)
    assert result.caption in page or result.caption.replace("'", "&#x27;") in page
    for o in result.objects:
        assert f"{o.iou:.3f}" in page


def test_scene_has_distinct_visible_objects(result):
    sc = result.scene
    assert sc.count == 3
    assert len({o.shape for o in sc.objects}) == 3 and len({o.colour for o in sc.objects}) == 3
    assert [o.text for o in result.objects] == [f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape}"
                                                for o in sc.objects]
    assert demo_scene(3, 3).to_json() == sc.to_json()  # seeded
    assert demo_scene(4, 3).to_json() != sc.to_json()


def test_iou_equals_an_independent_computation_on_the_saved_maps(result):
    saved = np.load(result.out_dir / "maps.npz")
    img, masks = render_scene(result.scene)
    np.testing.assert_array_equal(saved["image"], img)
    summary = json.loads((result.out_dir / "summary.json").read_text())
    for k, obj in enumerate(result.objects):
        mask = saved[f"mask_{k}"]
        np.testing.assert_array_equal(mask, masks["visible"][k])  # the true visible mask
        m = saved[f"map_{k}"]
        # the saved map is the token-grid map upsampled bilinearly to pixels
        up = F.interpolate(torch.from_numpy(saved[f"grid_{k}"])[None, None], size=mask.shape, mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(m, up, rtol=1e-12, atol=1e-15)
        # the stated rule: clip below 0, min-max, foreground = map >= its mean (nowhere if nothing is > 0)
        c = np.clip(m, 0, None)
        if c.max() > 0:
            n = (c - c.min()) / (c.max() - c.min())
            pred = n >= n.mean()
        else:
            pred = np.zeros(m.shape, bool)
        np.testing.assert_array_equal(saved[f"pred_{k}"], pred)
        want = (pred & mask).sum() / (pred | mask).sum()
        assert 0.0 <= obj.iou <= 1.0
        assert obj.iou == pytest.approx(want, abs=1e-12)
        assert summary["segmentation"]["objects"][k]["iou"] == pytest.approx(want, abs=1e-12)


def test_maps_are_the_names_contrast(result, model):
    # the token map of each name minus the mean of the others', from the decomposition's own terms
    img, _ = render_scene(result.scene)
    px = model.preprocess([img])
    dec = model.decompose(px, spatial=True).normalized()
    tokens = dec.head_terms().sum(dim=(1, 3))[0, 1:]  # [gh*gw, E]
    names = [o.text for o in result.objects]
    raw = (tokens @ model.encode_text(names).T).T.reshape(len(names), *dec.grid).double()
    for k, obj in enumerate(result.objects):
        assert obj.contrast == [n for n in names if n != obj.text]
        want = raw[k] - torch.stack([raw[j] for j in range(len(names)) if j != k]).mean(0)
        np.testing.assert_allclose(obj.grid, want.detach().numpy(), rtol=1e-4, atol=1e-7)


def test_phrase_scores_add_up_to_the_similarity(result, model):
    img, _ = render_scene(result.scene)
    z = model.encode_image(model.preprocess([img]), normalize=True)
    texts = [p.text for p in result.phrases]
    assert [p.kind for p in result.phrases] == ["caption", "object", "object", "object", "background", "count"]
    assert texts[0] == result.caption and texts[-1] == "three shapes" and texts[-2].endswith(" background")
    cos = (z @ model.encode_text(texts).T)[0]
    for p, c in zip(result.phrases, cos.tolist(), strict=True):
        assert p.similarity == pytest.approx(c, abs=1e-5)
        assert p.layer_scores.shape == (2 * model.vision.num_layers + 1,) and p.layer_labels[0] == "embed"
        assert p.layer_scores.sum() == pytest.approx(c, abs=1e-5)
        # each layer's heads add up to that layer's attention term
        np.testing.assert_allclose(p.head_scores.sum(1), p.layer_scores[1::2], rtol=1e-4, atol=1e-6)
        best = sorted(p.head_scores.ravel(), reverse=True)[:3]
        assert [c.score for c in p.top_heads] == pytest.approx(best)
        for c in p.top_heads:  # named from 0: L{layer}.H{head}
            assert c.name == f"L{c.layer}.H{c.head}" and p.head_scores[c.layer, c.head] == pytest.approx(c.score)
    assert 0.0 <= result.exactness < 1e-5


def test_existing_folder_is_never_overwritten(tmp_path, model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "index.html").write_text("my page")
    first = make_demo(out, model=model, objects=1, seed=1)
    assert first.html == out / "run-2" / "index.html" and first.note and "run-2" in first.note
    assert choose_out_dir(out)[0] == out / "run-3"  # the next run gets the next number
    # a single object is contrasted with the fixed class set: every other colour-shape name
    (obj,) = first.objects
    assert len(obj.contrast) == 55 and obj.text not in obj.contrast and 0.0 <= obj.iou <= 1.0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "index.html").read_text() == "my page"
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "notes.txt", "run-2", "run-3"]
    # an empty existing folder is used as it is; a file is refused, naming --out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert choose_out_dir(empty) == (empty, "")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CliplensError, match="--out"):
        choose_out_dir(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"


def test_cli(tmp_path, weights):
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--pretrained", str(weights), "--seed", "2",
                                  "--objects", "2"])
    assert r.exit_code == 0, r.output
    html = out / "index.html"
    assert html.is_file() and str(html) in r.output
    scene = json.loads((out / "summary.json").read_text())
    assert scene["caption"] in r.output and "IoU" in r.output and "exactness" in r.output
    assert len(scene["segmentation"]["objects"]) == 2
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--objects", "5"])
    assert r.exit_code == 2 and "--objects" in r.output
    assert "numbered" in CliRunner().invoke(main, ["demo", "--help"]).output
