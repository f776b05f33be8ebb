"""``cliplens demo``: the toy-world report, offline."""

from __future__ import annotations

from pathlib import Path

import click

from cliplens.cli.common import check_device, output_option
from cliplens.report.files import DEMO_DIR as DEFAULT_OUT
from cliplens.report.files import writable_dir


@click.command("demo")
@output_option("--out", "out_dir", kind="folder", default=Path(DEFAULT_OUT), show_default=True,
               help="Folder for the page and figures.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Which scene (0 or more).")
@click.option("--model", "-m", default="toy", show_default=True,
              help="Model (any cliplens can load; the scene is rendered at its input size).")
@click.option("--pretrained", "-p", default=None, help="Weights tag or file (for 'toy': a .safetensors file).")
@click.option("--objects", type=click.IntRange(1, 4), default=3, show_default=True,
              help="Objects in the scene (distinct shapes and colours).")
@click.option("--device", default="cpu", show_default=True)
def demo_cmd(out_dir: Path, seed: int, model: str, pretrained: str | None, objects: int, device: str) -> None:
    """Decompose one toy-world scene and write an HTML report: which layers and heads carry each
    phrase of its caption, and each object's decomposition heatmap against its true mask (IoU).

    Runs offline on the embedded toy CLIP.
    """
    from cliplens.report.demo import run_demo

    writable_dir(out_dir, "--out", create=False)  # before any work
    run_demo(out_dir, model=model, pretrained=pretrained, seed=seed, objects=objects, device=check_device(device))


COMMANDS = [demo_cmd]
