"""``cliplens report`` on real photos with a random-weight ToyCLIP: the numbers mean nothing, but they
must be the model's, add up, and be what the page and summary.json say."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cliplens.cli import main
from cliplens.errors import ImageLoadError
from cliplens.models.base import RANDOM_WEIGHTS
from cliplens.models.toy import ToyCLIPAdapter
from cliplens.report.page import format_summary, make_report
from tests.conftest import REFERENCE_IMAGES

COCO = REFERENCE_IMAGES / "coco-mini" / "val2017"
PHOTOS = [COCO / "000000161044.jpg", COCO / "000000000802.jpg"]  # 640x229 and 424x640
TEXTS = ["a red circle", "two blue squares on a striped background"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def photos():
    if not all(p.is_file() for p in PHOTOS):
        pytest.skip(f"reference photos not found in {COCO}")
    return [str(p) for p in PHOTOS]


@pytest.fixture(scope="module")
def report(random_toy, photos, tmp_path_factory):
    return make_report(random_toy, photos, TEXTS, tmp_path_factory.mktemp("report") / "out", top=3)


def _refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', html)


def _digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_page_references_every_figure_and_every_figure_exists(report):
    out = report.out_dir
    page = report.html.read_text()
    refs = _refs(page)
    pngs = sorted(p.name for p in out.glob("*.png"))
    # per image: the image, and per text a map, a bar chart and a head grid
    assert len(pngs) == len(PHOTOS) * (1 + 3 * len(TEXTS))
    assert sorted(r for r in refs if r.endswith(".png")) == pngs and "summary.json" in refs
    for r in refs:
        assert "/" not in r and (out / r).is_file(), r
    for p in pngs:
        assert (out / p).read_bytes()[:8] == PNG
    # every figure of an image carries its name (the PNG's title is the figure's heading)
    for im in report.images:
        figs = [im.figure] + [f for t in im.texts for f in t.figures.values()]
        assert len(figs) == 1 + 3 * len(TEXTS)
        for f in figs:
            title = Image.open(out / f).text["Title"]
            assert im.name in title and "RANDOM" not in title
    # what the page explains
    assert "L5.H0" in page and "layer 5, head 0" in page and "start at 0" in page
    assert "direct effect" in page and "add up to the cosine similarity exactly" in page
    assert "RANDOM WEIGHTS" not in page and report.model["weights"] in page


def test_numbers_are_the_models(report, random_toy, photos):
    m = random_toy
    px = m.preprocess(photos)
    cos = m.encode_image(px, normalize=True) @ m.encode_text(TEXTS).T  # [B, T], the model's own forward
    summary = json.loads((report.out_dir / "summary.json").read_text())
    page = report.html.read_text()
    dec = m.decompose(px).normalized()
    tokens = dec.head_terms().sum(dim=(1, 3))[:, 1:]  # [B, gh*gw, E]: each image token through every head
    assert [i.source for i in report.images] == photos and summary["texts"] == TEXTS
    assert 0 <= report.exactness < 1e-5
    for b, (im, js) in enumerate(zip(report.images, summary["images"], strict=True)):
        h, w = np.asarray(Image.open(photos[b])).shape[:2]
        assert im.size == (w, h) and js["size"] == {"width": w, "height": h}
        assert im.box == pytest.approx(m.preprocess_config.input_box(h, w))
        for t, (r, jt) in enumerate(zip(im.texts, js["texts"], strict=True)):
            c = float(cos[b, t])
            assert r.text == TEXTS[t] and r.similarity == pytest.approx(c, abs=1e-5)
            assert jt["similarity"] == r.similarity and f"{r.similarity:+.4f}" in page
            # the bars add up to the similarity; each layer's heads to its attention bar
            assert r.layer_labels[:3] == ["embed", "L0.attn", "L0.mlp"] and len(r.layer_scores) == 2 * 6 + 1
            assert r.layer_scores.sum() == pytest.approx(c, abs=1e-5)
            assert sum(jt["layers"].values()) == pytest.approx(c, abs=1e-5)
            np.testing.assert_allclose(r.head_scores.sum(1), r.layer_scores[1::2], atol=1e-6)
            np.testing.assert_allclose(jt["heads"]["scores"], r.head_scores)
            # top heads are the largest cells of the grid, named from 0
            best = np.sort(r.head_scores.ravel())[::-1][:3]
            assert [c.score for c in r.top_heads] == pytest.approx(best.tolist())
            for head in r.top_heads:
                assert head.name == f"L{head.layer}.H{head.head}"
            # the map: each token's direct effect through all heads, against the unit text embedding
            want = (tokens[b] @ m.encode_text([r.text])[0]).reshape(8, 8).double().numpy()
            np.testing.assert_allclose(r.token_map, want, atol=1e-6)
            np.testing.assert_allclose(jt["token_map"]["grid"], want, atol=1e-6)


def test_never_overwrites_and_layers_limit_the_heads(report, random_toy, photos):
    out = report.out_dir
    before = _digests(out)
    again = make_report(random_toy, photos[:1], TEXTS[:1], out, last=2)
    assert again.out_dir == out / "run-2" and "run-2" in again.note
    assert _digests(out) == {**before, **{f"run-2/{k}": v for k, v in _digests(again.out_dir).items()}}
    # --last 2: heads and maps of the last two layers only; the bars still add up to the similarity
    (r,) = again.images[0].texts
    assert again.head_layers == (4, 5) and r.head_scores.shape == (2, 4)
    assert r.layer_scores.sum() == pytest.approx(report.images[0].texts[0].similarity, abs=1e-5)
    assert "layers 4-5" in Image.open(again.out_dir / r.figures["map"]).text["Title"]
    assert "L4–L5" in again.html.read_text()


def test_random_weights_are_labelled_everywhere(random_toy, photos, tmp_path):
    # the random toy CLIP, labelled as what it is: what `--pretrained random` gives for open_clip names
    model = ToyCLIPAdapter(random_toy.model, random_toy.tokenizer, weights=RANDOM_WEIGHTS)
    assert model.random_weights
    r = make_report(model, photos[1:], ["a red circle"], tmp_path / "rnd")
    assert re.search(r'class="warning">RANDOM WEIGHTS', r.html.read_text())
    assert "RANDOM WEIGHTS" in format_summary(r)
    summary = json.loads((r.out_dir / "summary.json").read_text())
    assert summary["model"]["random_weights"] is True
    (image,) = summary["images"]
    figs = list(image["texts"][0]["figures"].values())
    assert len(figs) == 3
    for f in figs:  # every chart and map says so
        assert "RANDOM WEIGHTS" in Image.open(r.out_dir / f).text["Title"]


def test_cli(tmp_path, random_toy_weights, photos):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "page"
    args = ["report", photos[0], str(bad), "--text", TEXTS[0], "--pretrained", str(random_toy_weights),
            "--out", str(out), "--top", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "broken.jpg" in r.output and "--skip-bad" in r.output
    assert not out.exists()  # every image is read before anything is written
    r = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert str(out / "index.html") in r.output and "cosine similarity" in r.output
    page = (out / "index.html").read_text()
    assert "broken.jpg" in page and "could not be read" in page
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 1
    help_text = " ".join(CliRunner().invoke(main, ["report", "--help"]).output.split())
    assert "--text" in help_text and "nothing there is touched" in help_text


def test_errors_before_writing(random_toy, tmp_path, photos):
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        make_report(random_toy, [photos[0], str(tmp_path / "missing.jpg")], TEXTS, tmp_path / "x")
    assert not (tmp_path / "x").exists()
