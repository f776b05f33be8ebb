"""User mistakes and edge cases on the command line (toy model: 64 px input, 8 px patches): one class in
``tags``, images too wide for one forward (``tags``, ``points``), ``segment --threshold`` over one text,
images smaller than one patch, and warnings shown once."""

from __future__ import annotations

import json
import re

from tests.cli.conftest import one_line, run, save_image

ONE_CLASS = "one class has nothing to share with"


def test_tags_one_class_falls_back_to_the_empty_prompt(toy_args, tmp_path):
    images = [save_image(tmp_path / f"{k}.png", seed=k) for k in range(3)]
    r = run("tags", *images, "--classes", "red circle", "--batch-size", "1", *toy_args)
    assert r.exit_code == 0, r.output
    assert one_line(r.stderr).count(ONE_CLASS) == 1  # three batches, one warning
    assert "empty prompt" in one_line(r.stdout) and all(img in r.stdout for img in images)
    r = run("tags", images[0], "--classes", "red circle", "--json", *toy_args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["feature"] == "redundancy" and out["feature_used"] == "empty" and "empty prompt" in out["score"]
    assert any(ONE_CLASS in w for w in out["warnings"]) and len(out["results"][0]["ranked"]) == 1


def test_tags_refuses_an_image_too_wide_for_one_forward(toy_args, tmp_path):
    wide = save_image(tmp_path / "verywide.png", height=8, width=2000)  # fitted: 64 x 16000 px, 16000 tokens
    r = run("tags", wide, "--classes", "red circle,blue square", *toy_args)
    assert r.exit_code == 2, r.output
    out = one_line(r.output)
    assert "verywide.png" in out and "16000 tokens for one forward (over 8192)" in out
    assert "--fit crop" in out and "--fit squash" in out and "--window" not in out and "Traceback" not in out
    r = run("tags", wide, "--classes", "red circle,blue square", "--fit", "crop", *toy_args)
    assert r.exit_code == 0, r.output


def test_points_refuses_a_very_wide_image_with_its_own_advice(toy_args, tmp_path):
    wide = save_image(tmp_path / "verywide.png", height=8, width=2000)
    r = run("points", wide, "--text", "red circle", *toy_args)
    assert r.exit_code == 2, r.output
    out = one_line(r.output)
    assert "16000 tokens for one forward" in out and "no sliding window" in out and "--window" not in out
    assert "--fit squash" in out
    size = re.search(r"--size (\d+) on the command line: (\d+)x(\d+) pixels", out)
    assert size is not None and int(size[3]) >= 32  # a map of 2x2 cells or more
    assert int(size[2]) // 8 * int(size[3]) // 8 <= 8192  # fits (not run: ~8000 tokens is slow on a CPU)
    r = run("points", wide, "--text", "red circle", "--fit", "squash", *toy_args)  # the other way out
    assert r.exit_code == 0, r.output
    assert "positive points" in r.stdout


def test_segment_refuses_a_threshold_over_one_text(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    out = tmp_path / "out"
    r = run("segment", image, "--classes", "red circle", "--background", "", "--threshold", "0.5", *toy_args,
            "--out", out)
    assert r.exit_code == 2, r.output
    msg = one_line(r.output)
    assert "--threshold 0.5 needs two or more texts" in msg and "always 1" in msg and "--background" in msg
    assert not out.exists()  # refused before any work
    r = run("segment", image, "--classes", "red circle", "--background", "blue square", "--threshold", "0.5",
            *toy_args, "--out", out)
    assert r.exit_code == 0, r.output


def test_a_tiny_image_gets_one_note_with_its_upscale_factor(toy_args, tmp_path):
    tiny = save_image(tmp_path / "tiny.png", height=3, width=5)
    r = run("points", tiny, "--text", "red circle", *toy_args)
    assert r.exit_code == 0, r.output
    err = one_line(r.stderr)
    assert err.count("smaller than one 8x8 patch") == 1 and "is 5x3 pixels" in err and "upscaled ×21.3" in err
    r = run("tags", tiny, tiny, "--classes", "red circle,blue square", "--batch-size", "1", *toy_args)
    assert r.exit_code == 0, r.output
    assert one_line(r.stderr).count("smaller than one 8x8 patch") == 1
    r = run("segment", tiny, "--classes", "red circle", *toy_args, "--out", tmp_path / "seg")
    assert r.exit_code == 0, r.output
    assert one_line(r.stderr).count("upscaled ×21.3") == 1
    settings = json.loads((tmp_path / "seg" / "settings.json").read_text())
    assert any("upscaled ×21.3" in w for w in settings["warnings"])


def test_points_shows_the_vocabulary_warning_once(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    for text, warned in (("red circle", 0), ("a red zebra", 1)):  # the toy's own prompt form: only typed words
        r = run("points", image, "--text", text, *toy_args)
        assert r.exit_code == 0, r.output
        assert one_line(r.stderr).count("vocabulary") == warned, r.stderr
    r = run("points", image, "--text", "red circle", "--templates", "surgery", *toy_args)
    assert one_line(r.stderr).count("vocabulary") == 1, r.stderr  # the prompts and the empty prompt share words
    r = run("points", image, "--text", "a red zebra", "--json", *toy_args)
    out = json.loads(r.stdout)
    assert len(out["warnings"]) == 1 and "'zebra'" in out["warnings"][0]
