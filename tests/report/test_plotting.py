"""Figures a person can read: no text clipped or drawn over another, signed maps centred on zero with
a colour bar, maps over the original image exactly where the model's input lies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from cliplens.images import load_image
from cliplens.report.demo import ObjectResult, _segmentation_figure
from cliplens.report.plotting import (
    DIVERGING,
    DPI,
    MAX_SHOWN,
    NEGATIVE,
    PAD,
    POSITIVE,
    ablation_figure,
    bars_figure,
    head_grid_figure,
    image_figure,
    save,
    token_map_figure,
    unnormalize,
)
from tests.conftest import REFERENCE_IMAGES

COCO = REFERENCE_IMAGES / "coco-mini" / "val2017"
WIDE, TALL = "000000161044.jpg", "000000000802.jpg"  # 640x229 and 424x640
LONG = ("'a photograph of a very small red bicycle leaning against a long blue wall next to an old wooden door "
        "on a rainy afternoon in the harbour town': direct effect of each image region through every head")
NAME = "a-rather-long-file-name-for-a-holiday-photo-taken-somewhere-far-away.jpg"
NOTE = "RANDOM WEIGHTS: these scores mean nothing"


def photo(name: str) -> np.ndarray:
    if not (COCO / name).is_file():
        pytest.skip(f"reference photos not found in {COCO}")
    return np.asarray(load_image(COCO / name))


def model_input(model, original: np.ndarray) -> np.ndarray:
    cfg = model.preprocess_config
    return unnormalize(model.preprocess([Image.fromarray(original)])[0], cfg.mean, cfg.std)


def grid(seed: int = 0, shape=(8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.01 + 0.003


def _inches(fig, artist) -> Bbox:
    return artist.get_window_extent(fig.canvas.get_renderer()).transformed(fig.dpi_scale_trans.inverted())


def _drawn_texts(fig) -> list[Text]:
    """Every text drawn: the heading, and per axes its title, labels, tick labels and annotations."""
    texts = [t for t in fig.findobj(Text) if t.figure is fig and t.get_text() == fig.get_suptitle()]
    for ax in fig.axes:
        texts += [ax.title, *ax.texts]
        if ax.axison:
            (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
            texts += [ax.xaxis.label, ax.yaxis.label]  # tick labels only of ticks in view (others are not drawn)
            texts += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
            texts += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _figures(model):
    orig = photo(WIDE)
    tall = photo(TALL)
    box = model.preprocess_config.input_box(*orig.shape[:2])
    yield "map wide", token_map_figure(grid(), model_input=model_input(model, orig), original=orig, box=box,
                                       title=LONG, image_name=NAME, note=NOTE)
    yield "map tall", token_map_figure(grid(1), model_input=model_input(model, tall), original=tall,
                                       box=model.preprocess_config.input_box(*tall.shape[:2]), title=LONG,
                                       image_name=NAME, note=NOTE)
    yield "bars", bars_figure(["embed"] + [f"L{i}.{p}" for i in range(12) for p in ("attn", "mlp")],
                              np.linspace(-0.05, 0.08, 25), total=0.03, title=LONG, image_name=NAME, note=NOTE)
    yield "heads", head_grid_figure(np.random.default_rng(0).normal(size=(6, 4)), title=LONG, image_name=NAME,
                                    note=NOTE)
    yield "image", image_figure(tall, title="424x640 px", image_name=NAME, box=box, note=NOTE)


def test_no_text_is_clipped_or_overlaps_the_heading(random_toy, tmp_path):
    for what, fig in _figures(random_toy):
        png = save(fig, tmp_path / f"{what}.png")
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        W, Hh = fig.get_figwidth(), fig.get_figheight()
        # the saved PNG is the tight box of everything drawn, plus the margin (constrained layout may move
        # things by a pixel or three between two draws: less than half the margin)
        tight = fig.get_tightbbox(r)
        w_px, h_px = Image.open(png).size
        slack = PAD * DPI / 2
        assert abs(w_px - (tight.width + 2 * PAD) * DPI) <= slack and abs(h_px - (tight.height + 2 * PAD) * DPI) <= slack
        texts = _drawn_texts(fig)
        heading = [t for t in texts if t.get_text() == fig.get_suptitle()]
        assert len(heading) == 1, what
        assert NAME in heading[0].get_text().replace("\n", "") and NOTE.split(":")[0] in heading[0].get_text()
        for t in texts:
            ext = _inches(fig, t)
            # every text lies inside the figure itself (wrapped to its width), hence inside the saved PNG
            assert -0.02 <= ext.x0 and ext.x1 <= W + 0.02 and -0.02 <= ext.y0 and ext.y1 <= Hh + 0.02, (what, t)
            assert tight.x0 - 1e-6 <= ext.x0 and ext.x1 <= tight.x1 + 1e-6, (what, t)
        # the heading is drawn over nothing: no axes, no axes title
        head = _inches(fig, heading[0])
        for ax in fig.axes:
            for other in (ax, ax.title):
                if other is ax or other.get_text():
                    o = _inches(fig, other)
                    assert min(head.x1, o.x1) <= max(head.x0, o.x0) or min(head.y1, o.y1) <= max(head.y0, o.y0), \
                        (what, other)
        # the saved PNG's title is the heading
        assert Image.open(png).text["Title"] == fig.get_suptitle()


def _signed_images(fig) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == DIVERGING]


def _check_centred(fig, values: np.ndarray):
    ims = _signed_images(fig)
    assert ims
    lim = float(np.abs(values).max())
    for im in ims:  # one scale, symmetric about zero: white is 0
        assert im.norm.vmin == -im.norm.vmax and im.norm.vmax == pytest.approx(lim, rel=1e-6)
    bars = [im.colorbar for im in ims if im.colorbar is not None]
    assert len(bars) == 1 and "cosine similarity" in bars[0].ax.get_ylabel()
    return ims


def test_signed_maps_are_centred_on_zero_with_a_colour_bar(random_toy):
    orig = photo(TALL)
    g = grid(2)  # mostly positive: a colour map fitted to the data would not be centred
    fig = token_map_figure(g, model_input=model_input(random_toy, orig), original=orig,
                           box=random_toy.preprocess_config.input_box(*orig.shape[:2]))
    up = torch.nn.functional.interpolate(g[None, None].double(), size=(64, 64), mode="bilinear")[0, 0].numpy()
    assert len(_check_centred(fig, up)) == 2  # both panels
    v = np.array([[0.01, 0.02], [0.05, -0.01]])
    _check_centred(head_grid_figure(v), v)
    m = np.full((64, 64), 0.2)
    m[:8, :8] = -0.1
    obj = ObjectResult("a red circle", ["a blue square"], np.zeros((8, 8)), m, m, m > 0, m > 0, 0.5, 0.5, 0.5)
    _check_centred(_segmentation_figure(np.zeros((64, 64, 3), np.uint8), obj, (8, 8)), m)


def test_bars_use_the_maps_colours():
    fig = bars_figure(["a", "b"], [0.2, -0.1], total=0.1)
    colours = [p.get_facecolor()[:3] for p in fig.axes[0].patches]
    assert colours[0] == pytest.approx(to_rgb(POSITIVE)) and colours[1] == pytest.approx(to_rgb(NEGATIVE))
    cmap = _signed_images(head_grid_figure(np.eye(2)))[0].get_cmap()
    assert cmap(1.0)[0] > cmap(1.0)[2] and cmap(0.0)[2] > cmap(0.0)[0]  # red for +, blue for -, as the bars


@pytest.mark.parametrize("name, scale", [(WIDE, 1), (TALL, 4)])
def test_original_panel_map_lies_on_the_model_input_box(random_toy, name, scale):
    orig = photo(name)
    if scale > 1:  # a large photo, given as a PIL image: drawn from a smaller copy, at its own coordinates
        orig = np.asarray(Image.fromarray(orig).resize((orig.shape[1] * scale, orig.shape[0] * scale)))
    oh, ow = orig.shape[:2]
    box = random_toy.preprocess_config.input_box(oh, ow)
    top, left, bottom, right = box
    shown = model_input(random_toy, orig)
    fig = token_map_figure(grid(), model_input=shown, original=Image.fromarray(orig) if scale > 1 else orig, box=box)
    ax = next(a for a in fig.axes if a.get_label() == "original")
    photo_im, map_im = ax.get_images()
    assert photo_im.get_extent() == pytest.approx((0, ow, oh, 0))  # the whole, uncropped image
    assert max(photo_im.get_array().shape[:2]) <= MAX_SHOWN
    assert map_im.get_cmap().name == DIVERGING and map_im.get_extent() == pytest.approx((left, right, bottom, top))
    (rect,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == pytest.approx(
        (left, top, right - left, bottom - top))
    assert ax.get_xlim() == pytest.approx((0, ow)) and ax.get_ylim() == pytest.approx((oh, 0))
    # the box is where the model's input comes from: the original cut there and resized looks like it
    crop = Image.fromarray(orig).crop((left, top, right, bottom)).resize(shown.shape[1::-1], Image.BICUBIC)
    assert np.abs(np.asarray(crop) / 255.0 - shown).mean() < 0.03
    shifted = Image.fromarray(orig).crop((0, 0, right - left, bottom - top)).resize(shown.shape[1::-1])
    assert np.abs(np.asarray(shifted) / 255.0 - shown).mean() > 0.03  # (a wrong box would not)


@pytest.mark.parametrize("curve, baseline, chance", [
    ([1.0, 1.0, 0.972, 0.897, 0.6, 0.005], 1.0, 1 / 7),  # the toy world's curve: lines at 100 % and near 0 %
    ([0.0, 0.0, 0.0], 0.0, 0.5),
    ([0.31, 0.35, 0.2, 0.12, 0.4, 0.9, 0.02, 0.5], 0.62, 0.001),
])
def test_ablation_plot_shows_every_line_and_its_legend_covers_nothing(curve, baseline, chance, tmp_path):
    extra = {"all MLPs + embedding term": 1.0, "CLS→CLS terms of every layer": curve[-1]}
    fig = ablation_figure(curve, baseline, extra=extra, chance=chance, title="store: 9 images")
    save(fig, tmp_path / "ablation.png")
    r = fig.canvas.get_renderer()
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    frame = ax.get_window_extent(r)
    refs = [line for line in ax.get_lines() if line.get_gid() == "reference"]
    assert [line.get_label().split(":")[0] for line in refs] == ["nothing ablated (the model as it is)", *extra,
                                                                  "chance"]
    for line, value in zip(refs, [baseline, *extra.values(), chance], strict=True):
        y = line.get_ydata()[0]
        assert y == pytest.approx(100 * value) and lo < y < hi
        y_px = ax.transData.transform((0, y))[1]
        assert frame.y0 + 5 < y_px < frame.y1 - 5  # drawn inside, clear of the frame (at 110 dpi)
        assert f"{100 * value:.1f} %" in line.get_label()  # the legend gives each line's value
    (curve_line,) = [line for line in ax.get_lines() if line.get_gid() == "curve"]
    points = ax.transData.transform(np.c_[curve_line.get_xdata(), curve_line.get_ydata()])
    assert all(frame.y0 < y < frame.y1 and frame.x0 < x < frame.x1 for x, y in points)
    (legend,) = fig.legends
    box = legend.get_window_extent(r)
    assert not any(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in points)
    assert box.y1 <= frame.y0  # under the axes: it covers no line at all
    assert sorted(t.get_text().split(":")[0] for t in legend.get_texts()) == sorted(
        line.get_label().split(":")[0] for line in ax.get_lines())
    texts = [t for t in _drawn_texts(fig) if t is not fig._suptitle] + list(legend.get_texts())
    for t in texts:  # nothing clipped
        ext = _inches(fig, t)
        assert -0.02 <= ext.x0 and ext.x1 <= fig.get_figwidth() + 0.02 and -0.02 <= ext.y0, t
