"""Every figure and image cliplens draws for a model with random weights says RANDOM WEIGHTS, in red above its
heading (one helper, :func:`cliplens.report.plotting.mark_random_weights`), and none says it for real weights:
each figure maker, then the commands that draw them (explain, segment-eval's overlays, the atlas)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from cliplens.cli import explain
from cliplens.cli.points import _figure as points_figure
from cliplens.cli.segeval import save_imagenet_overlay
from cliplens.maps import ImageMaps
from cliplens.report.atlas import write_atlas
from cliplens.report.demo import ObjectResult, _segmentation_figure
from cliplens.report.maps import (
    evaluation_figure,
    map_grid_figure,
    map_overlay_figure,
    methods_figure,
    segmentation_figure,
    surgery_parts_figure,
)
from cliplens.report.page import TextResult, save_text_figures
from cliplens.report.plotting import (
    RANDOM_COLOUR,
    RANDOM_WEIGHTS_NOTE,
    ablation_figure,
    bars_figure,
    head_grid_figure,
    image_figure,
    mark_random_weights,
    random_weights_mark,
    save,
    token_map_figure,
)
from cliplens.tasks.points import Points
from cliplens.tasks.segment import Segmentation
from tests.analyses.atlas_setup import atlas_setup
from tests.cli.conftest import _TINY_CONFIG, run, save_image

H, W = 48, 64
RGB = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
TEXTS = ["a red circle", "a blue square"]


def _maps(normalization: str = "minmax") -> ImageMaps:
    raw = torch.randn(len(TEXTS), 4, 4, generator=torch.Generator().manual_seed(0))
    return ImageMaps(raw, (48, 64), (H, W), (0.0, 0.0, float(H), float(W)), "photo.png", normalization)


def _figures(random_weights: bool, tmp: Path):
    """Every figure maker, each once: (name, a Figure, or the PNG it wrote)."""
    rw = {"random_weights": random_weights}
    grid = torch.randn(4, 4)
    yield "token map", token_map_figure(grid, model_input=RGB / 255.0, original=RGB, title="t", **rw)
    yield "image", image_figure(RGB, title="48x64 px", image_name="photo.png", **rw)
    yield "bars", bars_figure(["a", "b"], [0.1, -0.2], total=-0.1, title="t", **rw)
    yield "head grid", head_grid_figure(np.eye(3), title="t", **rw)
    yield "ablation", ablation_figure([1.0, 0.5, 0.1], 1.0, chance=0.25, **rw)
    m = _maps()
    yield "map overlay", map_overlay_figure(RGB, m, 0, text=TEXTS[0], settings={"method": "surgery"}, **rw)
    yield "map grid", map_grid_figure(RGB, m, TEXTS, settings={"method": "surgery"}, **rw)
    yield "methods", methods_figure(RGB, {"surgery": m, "decomposition": _maps("raw")}, TEXTS, **rw)
    labels = torch.zeros(H, W, dtype=torch.int64)
    labels[:20] = 1
    yield "segmentation", segmentation_figure(RGB, Segmentation(labels, ["dog"], "photo.png"), **rw)
    yield "evaluation", evaluation_figure(RGB, labels.numpy(), np.zeros((H, W), np.int64), ["bg", "dog"], **rw)
    parts = torch.randn(3, 4, 4)
    yield "surgery parts", surgery_parts_figure(RGB, m, parts, ["start", "L1.H0", "L1.H1"], text="a dog", **rw)
    mp = np.random.default_rng(1).normal(size=(64, 64))
    obj = ObjectResult("a red circle", ["a blue square"], np.zeros((8, 8)), mp, mp, mp > 0, mp > 0, 0.5, 0.5, 0.5)
    yield "demo segmentation", _segmentation_figure(np.zeros((64, 64, 3), np.uint8), obj, (8, 8), **rw)
    view = {"image": RGB / 255.0, "map": np.random.default_rng(2).random((H, W)), "mask": (RGB[..., 0] > 128) * 1,
            "foreground": RGB[..., 1] > 128, "class": "dog", "mode": "correct"}
    yield "imagenet-seg overlay", save_imagenet_overlay(tmp / "imagenet.png", view, image_name="1", **rw)
    pts = Points([[5, 5], [40, 30]], [1, 0], (8, 8), (4, 4), (H, W), 0.8, raw=grid)
    points_figure(RGB, pts, RGB[..., 0] > 100, tmp / "points.png", "a dog", "photo.png", random_weights)
    yield "points", tmp / "points.png"
    r = TextResult("a dog", 0.2, ["embed", "L0.attn", "L0.mlp"], np.array([0.1, 0.05, 0.05]), (0,),
                   np.array([[0.01, 0.04]]), [], [], [])
    for png in save_text_figures(r, tmp, "page", image_name="photo.png", **rw):
        yield f"report {png.stem}", png


def _title(png: Path) -> str:
    return Image.open(png).text["Title"]


@pytest.mark.parametrize("random_weights", [True, False])
def test_every_figure_maker_says_random_weights_only_for_random_weights(random_weights, tmp_path):
    seen = []
    for name, made in _figures(random_weights, tmp_path):
        seen.append(name)
        png = made if isinstance(made, Path) else save(made, tmp_path / f"{name}.png")
        assert (RANDOM_WEIGHTS_NOTE in _title(png).replace("\n", " ")) == random_weights, name
        if not isinstance(made, Figure):
            continue
        mark = random_weights_mark(made)
        if not random_weights:
            assert mark is None and "RANDOM" not in made.get_suptitle(), name
            continue
        assert mark is not None and mark.get_text().replace("\n", " ") == RANDOM_WEIGHTS_NOTE, name
        assert to_rgb(mark.get_color()) == pytest.approx(to_rgb(RANDOM_COLOUR)) and mark.get_weight() == "bold"
        r = made.canvas.get_renderer()
        box, head = mark.get_window_extent(r), made._suptitle.get_window_extent(r)
        fig_box = made.bbox
        # inside the figure, on the top lines of the heading (kept blank for it), above every axes
        assert fig_box.x0 - 1 <= box.x0 and box.x1 <= fig_box.x1 + 1 and box.y1 <= fig_box.y1 + 1, name
        assert box.y1 == pytest.approx(head.y1, abs=1.5) and box.y0 >= head.y0 - 1, name
        for ax in made.axes:
            assert ax.get_window_extent(r).y1 <= box.y0 + 1, (name, ax.get_label())
    assert len(seen) == 16


def test_the_mark_survives_a_later_heading():
    fig = mark_random_weights(bars_figure(["a"], [0.1]))
    from cliplens.report.plotting import heading

    heading(fig, "a new title", image_name="x.png")
    assert random_weights_mark(fig) is not None and "a new title" in fig.get_suptitle()
    assert mark_random_weights(bars_figure(["a"], [0.1]), False) is not None  # returned unchanged
    assert random_weights_mark(mark_random_weights(bars_figure(["a"], [0.1]), False)) is None


def _red_band(img: Image.Image) -> float:
    """The share of the image's top rows that are the mark's red."""
    top = np.asarray(img.convert("RGB"))[:4].reshape(-1, 3).astype(float)
    return float((np.abs(top - np.array(to_rgb(RANDOM_COLOUR)) * 255).max(1) < 30).mean())


@pytest.mark.parametrize("size", [224, 64, 20])
def test_images_get_a_red_band(size):
    img = Image.fromarray(np.full((size, size, 3), 200, np.uint8))
    marked = mark_random_weights(img)
    assert marked.size == img.size and _red_band(marked) > 0.5 and _red_band(img) == 0.0
    assert np.asarray(marked)[-1].tolist() == np.asarray(img)[-1].tolist()  # the rest untouched
    assert mark_random_weights(img, False) is img


def test_atlas_images_say_random_weights_when_the_store_had_them(tmp_path_factory):
    setup = atlas_setup(tmp_path_factory)
    real = write_atlas(setup.atlas, tmp_path_factory.mktemp("atlas-real") / "a")
    rand = copy.copy(setup.atlas)
    rand.info = {**setup.atlas.info, "model": {**setup.atlas.info["model"], "random_weights": True}}
    marked = write_atlas(rand, tmp_path_factory.mktemp("atlas-random") / "a")
    assert [p.relative_to(marked.folder) for p in marked.images] == [p.relative_to(real.folder) for p in real.images]
    for a, b in zip(real.images, marked.images, strict=True):  # every thumbnail, images and maps
        assert _red_band(Image.open(b)) > 0.5 and _red_band(Image.open(a)) < 0.5, b.name


@pytest.fixture(scope="module")
def deep_tiny_vit(tmp_path_factory) -> str:
    """The command-line tests' tiny open_clip ViT with 6 blocks (every method of ``--method all`` runs)."""
    open_clip = pytest.importorskip("open_clip")
    name = "cliplens-test-report-vit"
    folder = tmp_path_factory.mktemp("oc_config")
    config = {**_TINY_CONFIG, "vision_cfg": {**_TINY_CONFIG["vision_cfg"], "layers": 6}}
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return name


def test_explain_and_segment_eval_figures_of_a_random_model_say_so(deep_tiny_vit, random_toy_weights, tmp_path,
                                                                  monkeypatch):
    image = save_image(tmp_path / "img.png")
    toy_args = ["-m", "toy", "-p", str(random_toy_weights)]  # trained-looking weights: not "random"
    monkeypatch.setattr(explain, "text_methods", lambda: ["surgery", "maskclip"])  # "all": two, for speed
    for args, random_weights in ((["-m", deep_tiny_vit, "-p", "random"], True), (toy_args, False)):
        out = tmp_path / f"explain-{random_weights}"
        r = run("explain", image, *args, "-t", "a dog", "--method", "all", "--out", out)
        assert r.exit_code == 0, r.output
        pngs = sorted(out.glob("*.png"))
        assert any(p.name.endswith("__methods.png") for p in pngs)
        assert all((RANDOM_WEIGHTS_NOTE in _title(p).replace("\n", " ")) == random_weights for p in pngs)
        out = tmp_path / f"segeval-{random_weights}"
        r = run("segment-eval", "toy:n=2,seed=3", *args, "--method", "maskclip", "--out", out, "--overlays", 1,
                "--json")
        assert r.exit_code == 0, r.output
        (png,) = (out / "maskclip" / "overlays").glob("*.png")
        assert (RANDOM_WEIGHTS_NOTE in _title(png).replace("\n", " ")) == random_weights


def test_ablation_plot_of_a_random_weight_store_says_so(deep_tiny_vit, tmp_path):
    for args, random_weights in ((["-m", deep_tiny_vit, "-p", "random"], True), (["-m", "toy"], False)):
        store = tmp_path / f"store-{random_weights}"
        r = run("store", "build", "toy:label=shape,n=6,seed=1", *args, "--out", store)
        assert r.exit_code == 0, r.output
        plot = tmp_path / f"curve-{random_weights}.png"
        r = run("ablate", store, "--plot", plot)
        assert r.exit_code == 0, r.output
        title = _title(plot).replace("\n", " ")
        squeezed = "".join(title.split())  # a long path may be folded anywhere
        assert (RANDOM_WEIGHTS_NOTE in title) == random_weights and "".join(str(store).split()) in squeezed
