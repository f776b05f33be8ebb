"""The methods that need SAM (CorrCLIP, Trident) on the command line: without SAM's weights they refuse in one
paragraph that says how to give them. (That ``--method all`` leaves them out is asserted by
``tests/cli/test_explain_segment.py::test_method_all_runs_every_text_dependent_method``.)"""

from __future__ import annotations

import pytest

from tests.cli.conftest import one_line, run, save_image


@pytest.mark.parametrize("method", ["corrclip", "trident"])
def test_command_line_refuses_without_sam_in_one_paragraph(method, random_toy_weights, tmp_path):
    image = save_image(tmp_path / "img.png")
    args = ("explain", image, "-t", "a dog", "-m", "toy", "-p", random_toy_weights, "--method", method)
    r = run(*args, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "needs SAM's weights" in one_line(r.output) and "--param sam_checkpoint=PATH" in one_line(r.output)
    r = run(*args, "--param", "sam=vit_b", "--param", "sam_checkpoint=/nonexistent/sam.pth", "--out", tmp_path / "b")
    assert r.exit_code == 2 and "SAM checkpoint '/nonexistent/sam.pth' does not exist" in one_line(r.output)
