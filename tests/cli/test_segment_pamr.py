"""PAMR as a step of ``segment`` (Python and command line); the formula itself: tests/maps/test_pamr.py."""

from __future__ import annotations


def test_segment_with_pamr_from_python_and_the_command_line(random_toy, toy_args, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from cliplens.tasks.segment import segment
    from tests.cli.conftest import run, save_image

    image = save_image(tmp_path / "img.png", 64, 80)
    classes = ["red circle", "blue square"]
    plain = segment("maskclip", random_toy, [image], classes, background=["background"])[0]
    refined = segment("maskclip", random_toy, [image], classes, background=["background"], pamr=10,
                      pamr_dilations=(1, 2))[0]
    assert refined.settings["pamr"] == {"iterations": 10, "dilations": [1, 2]} and "pamr" not in plain.settings
    assert not np.array_equal(np.asarray(plain.labels), np.asarray(refined.labels))
    out = tmp_path / "out"
    r = run("segment", image, "--classes", "red circle,blue square", *toy_args, "--method", "maskclip",
            "--pamr", "10", "--pamr-dilations", "1,2", "--out", out)
    assert r.exit_code == 0, r.output
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["pamr"] == {"iterations": 10, "dilations": [1, 2]}
    labels = np.asarray(Image.open(out / "img__labels.png"))
    assert np.array_equal(labels, np.asarray(refined.labels))
