"""Pictures of maps and segmentations: over the original photo where the model saw it, the photo's name
and the settings in the heading, colour bars (0..1 sequential for min–max maps, centred diverging for
raw ones), palette label PNGs, and CLIP Surgery's map split over its heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from cliplens.images import load_image
from cliplens.maps import Targets, get_map, surgery_parts
from cliplens.maps.inputs import fit_images
from cliplens.report.maps import (
    PALETTE,
    SEQUENTIAL,
    describe_settings,
    display_name,
    label_image,
    map_grid_figure,
    map_overlay_figure,
    method_words,
    methods_figure,
    part_shares,
    save_label_png,
    segmentation_figure,
    surgery_parts_figure,
)
from cliplens.report.plotting import DIVERGING, random_weights_mark, save
from cliplens.tasks.segment import Segmentation
from tests.conftest import REFERENCE_IMAGES
from tests.report.test_plotting import _drawn_texts, _inches

COCO = REFERENCE_IMAGES / "coco-mini" / "val2017"
WIDE, TALL = "000000161044.jpg", "000000000802.jpg"  # 640x229 and 424x640
TEXTS = ["a red circle", "a blue square", "a striped background"]


def photo_path(name: str) -> str:
    if not (COCO / name).is_file():
        pytest.skip(f"reference photos not found in {COCO}")
    return str(COCO / name)


@pytest.fixture(scope="module")
def maps(random_toy):
    """Surgery (min–max) and decomposition (raw) maps of the wide photo (whole) and the tall one (crop)."""
    paths = [photo_path(WIDE), photo_path(TALL)]
    out = {}
    for fit in ("whole", "crop"):
        out["surgery", fit] = get_map("surgery")(random_toy, paths, TEXTS, fit=fit)
        out["decomposition", fit] = get_map("decomposition")(random_toy, paths, TEXTS, fit=fit, normalization="raw")
    return paths, out


def _map_images(fig):
    """The maps drawn (not the grey photos under them)."""
    return [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name in (SEQUENTIAL, DIVERGING)]


def _colour_bars(fig):
    return list({id(im.colorbar): im.colorbar for im in _map_images(fig) if im.colorbar is not None}.values())


def _check_layout(fig, tmp_path, name):
    """Nothing drawn outside the figure, the heading over no axes (as every cliplens figure)."""
    save(fig, tmp_path / f"{name}.png")
    texts = _drawn_texts(fig)
    W, H = fig.get_figwidth(), fig.get_figheight()
    for t in texts:
        ext = _inches(fig, t)
        assert -0.02 <= ext.x0 and ext.x1 <= W + 0.02 and -0.02 <= ext.y0 and ext.y1 <= H + 0.02, (name, t)
    head = _inches(fig, fig._suptitle)
    for ax in fig.axes:
        o = _inches(fig, ax)
        assert min(head.x1, o.x1) <= max(head.x0, o.x0) or min(head.y1, o.y1) <= max(head.y0, o.y0), name


def test_overlay_minmax_and_raw(maps, tmp_path):
    paths, m = maps
    s = m["surgery", "whole"]
    fig = map_overlay_figure(load_image(paths[0]), s[0], 1, text=TEXTS[1], settings=s.settings,
                             image_name=WIDE, note="RANDOM WEIGHTS")
    title = fig.get_suptitle().replace("\n", " ")
    assert WIDE in title and repr(TEXTS[1]) in title and "CLIP Surgery" in title and "RANDOM WEIGHTS" in title
    # the settings, normalisation included, in a caption under the map: not in the heading
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert caption == describe_settings(s.settings) and "feature_used" not in caption
    assert "whole image" not in title and "blocks" not in title
    (im,) = _map_images(fig)
    assert im.get_cmap().name == SEQUENTIAL and (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
    np.testing.assert_allclose(im.get_array(), s[0].on_input(1).numpy())
    (cb,) = _colour_bars(fig)
    assert "min–max" in cb.ax.get_ylabel()
    ax = fig.axes[0]
    assert ax.get_images()[0].get_extent() == pytest.approx((0, 640, 229, 0))  # the whole original, in grey
    assert im.get_extent() == pytest.approx((0, 640, 229, 0))
    _check_layout(fig, tmp_path, "overlay")
    saved = Image.open(tmp_path / "overlay.png").text["Title"]  # heading and caption, for whoever reads the file
    assert saved.startswith(fig.get_suptitle()) and saved.endswith(fig._supxlabel.get_text())

    d = m["decomposition", "crop"]
    fig = map_overlay_figure(load_image(paths[1]), d[1], 0, text=TEXTS[0], settings=d.settings, image_name=TALL)
    (im,) = _map_images(fig)
    lim = float(np.abs(d[1].on_input(0).numpy()).max())
    assert im.get_cmap().name == DIVERGING and im.norm.vmin == -im.norm.vmax == pytest.approx(-lim)
    top, left, bottom, right = d[1].box
    assert im.get_extent() == pytest.approx((left, right, bottom, top))  # only where the model looked
    (rect,) = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert rect.get_linestyle() == "--" and "dashed" in fig.axes[0].get_title()
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "raw scores" in caption and "contrast: others" in caption and "decomposition" in fig.get_suptitle()


def test_grid_has_the_photo_and_one_panel_per_text_on_one_scale(maps, tmp_path):
    paths, m = maps
    for key, i in ((("surgery", "crop"), 1), (("decomposition", "whole"), 0)):
        mp = m[key]
        fig = map_grid_figure(load_image(paths[i]), mp[i], TEXTS, settings=mp.settings, image_name=[WIDE, TALL][i])
        ims = _map_images(fig)
        assert len(ims) == len(TEXTS) and len(_colour_bars(fig)) == 1
        assert len({(im.norm.vmin, im.norm.vmax) for im in ims}) == 1  # raw maps compare: one scale
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[0].startswith("the photo") and all(repr(t) in "".join(titles) for t in TEXTS)
        assert [WIDE, TALL][i] in fig.get_suptitle()
        _check_layout(fig, tmp_path, f"grid-{i}")


def _rows(fig) -> dict[int, dict[str, list]]:
    """The methods figure's rows (of its grid): per row, its photo, its maps and its colour bars."""
    rows: dict[int, dict[str, list]] = {}
    for ax in fig.axes:
        r = ax.get_subplotspec().rowspan.start
        label = ax.get_label()
        kind = "photo" if label.startswith("photo ") else "colour bar" if label.startswith("colour bar ") else "maps"
        rows.setdefault(r, {"photo": [], "colour bar": [], "maps": []})[kind].append(ax)
    return rows


SETTING_KEYS = ("feature_used", "=", "normalization", "architecture", "temperature", "positional", "blocks")


@pytest.mark.parametrize("photo, methods, texts", [
    (WIDE, 1, 1), (WIDE, 3, 4), (WIDE, 12, 2), (TALL, 1, 4), (TALL, 3, 1), (TALL, 12, 1)])
def test_methods_figure_rows_of_photo_maps_and_one_bar(random_toy, maps, tmp_path, photo, methods, texts):
    """Each row: the photo, then a map per method (titled with the method's name only), then one colour bar as
    tall as the row's maps; the settings in a caption, never in a title."""
    paths, m = maps
    i = [WIDE, TALL].index(photo)
    labels = [*TEXTS, "three shapes"][:texts]
    s = m["surgery", "whole"] if texts <= len(TEXTS) else get_map("surgery")(random_toy, paths, labels)
    names = ["surgery", "decomposition", *(f"method-{k}" for k in range(methods - 2))][:methods]
    per = {n: s[i] for n in names}  # (the layout does not depend on which maps they are)
    settings = {n: {**s.settings, "method": n} for n in names}
    fig = methods_figure(load_image(paths[i]), per, labels, settings=settings, image_name=photo)
    _check_layout(fig, tmp_path, "methods")  # (drawn: the axes are where they are saved)
    rows = _rows(fig)
    per_row = max(len(row["maps"]) for row in rows.values())
    assert len(rows) == texts * -(-methods // per_row) and per_row <= 7
    assert sum(len(row["maps"]) for row in rows.values()) == methods * texts
    shown = np.asarray(load_image(paths[i]))
    for r, row in rows.items():
        (photo_ax,) = row["photo"]
        (im,) = photo_ax.get_images()  # the photo itself, in colour (no map over it)
        assert im.get_array().ndim == 3 and im.get_array().shape[2] == 3
        assert np.abs(np.asarray(im.get_array(), float).mean() - shown.mean()) < 2
        assert repr(labels[r // (len(rows) // texts)]) in photo_ax.get_title().replace("\n", " ")
        (bar,) = row["colour bar"]
        b, ph = _inches(fig, bar), _inches(fig, photo_ax)
        for ax in row["maps"]:  # photo, maps and bar share the row's height
            a = _inches(fig, ax)
            assert a.height == pytest.approx(ph.height, abs=0.01) and a.y0 == pytest.approx(ph.y0, abs=0.01)
        assert b.height == pytest.approx(ph.height, abs=0.01) and b.y0 == pytest.approx(ph.y0, abs=0.01)
        assert [t.get_text() for t in bar.get_yticklabels()] == ["0 low", "0.5", "1 high"]
    for ax in fig.axes:
        title = ax.get_title()
        assert title.count("\n") <= 1 and not any(k in title for k in SETTING_KEYS), title
    titles = {ax.get_title() for row in rows.values() for ax in row["maps"]}
    assert titles == {display_name(n) for n in names} and display_name("surgery") == "CLIP Surgery"
    head = fig.get_suptitle()
    assert photo in head and not any(k in head for k in SETTING_KEYS) and head.count("\n") <= 2
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "whole image, short side" in caption and "min–max" in caption and "feature_used" not in caption
    assert random_weights_mark(fig) is None


def test_methods_figure_raw_maps_each_on_its_scale(maps, tmp_path):
    """Raw maps of several methods: each drawn on its own ±max|score| (written under its name), one diverging
    bar per row reading −max .. +max; the settings that differ are in the caption with their methods."""
    paths, m = maps
    d, s = m["decomposition", "crop"], m["surgery", "crop"]
    per = {"decomposition": d[1]}
    fig = methods_figure(load_image(paths[1]), per, TEXTS, settings={"decomposition": d.settings}, image_name=TALL)
    rows = _rows(fig)
    for r, row in rows.items():
        (ax,) = row["maps"]
        (im,) = [x for x in ax.get_images() if x.get_cmap().name == DIVERGING]
        lim = float(np.abs(d[1].on_input(r).numpy()).max())
        assert im.norm.vmax == -im.norm.vmin == pytest.approx(lim)
        assert ax.get_title() == f"decomposition\n±{lim:.3g}"
        (bar,) = row["colour bar"]
        assert [t.get_text() for t in bar.get_yticklabels()] == ["−max", "0", "+max"]
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "dashed" in caption and "own scale" in caption  # the crop, and how to read the colours
    both = {"surgery": s[1], "decomposition": d[1]}  # min–max and raw
    fig = methods_figure(load_image(paths[1]), both, TEXTS[:1], image_name=TALL,
                         settings={"surgery": s.settings, "decomposition": d.settings})
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "contrast: none (CLIP Surgery), others (decomposition)" in caption
    (row,) = _rows(fig).values()
    assert len(row["colour bar"]) == 2  # min–max and raw maps cannot share a bar: one each
    _check_layout(fig, tmp_path, "methods-raw")


def test_label_png_is_a_palette_image_of_the_labels(tmp_path):
    labels = np.zeros((37, 53), dtype=np.int64)
    labels[5:10, 5:20] = 1
    labels[20:, :] = 3
    labels[:, 50:] = 255
    p = save_label_png(torch.from_numpy(labels), tmp_path / "l.png")
    img = Image.open(p)
    assert img.mode == "P" and img.size == (53, 37)
    np.testing.assert_array_equal(np.asarray(img), labels)
    pal = np.asarray(img.getpalette()[:768]).reshape(256, 3)
    assert tuple(pal[0]) == (0, 0, 0) and [tuple(c) for c in pal] == PALETTE
    assert len(set(PALETTE[:255])) == 255  # every label its own colour
    assert min(max(c) for c in PALETTE[1:255]) >= 60  # no class is near black (background)
    with pytest.raises(ValueError):
        label_image(np.full((2, 2), 300))


def test_segmentation_figure_names_the_classes_present(tmp_path):
    path = photo_path(TALL)
    img = load_image(path)
    labels = torch.zeros(img.height, img.width, dtype=torch.int64)
    labels[:300] = 2
    labels[300:320] = 1
    labels[:, :10] = 255
    seg = Segmentation(labels, ["dog", "sky", "grass"], path, {"background": ["wall"], "threshold": None})
    fig = segmentation_figure(img, seg, image_name=TALL, settings={"method": "surgery", "background": ["wall"]})
    legend = fig.axes[1].get_legend()
    names = [t.get_text() for t in legend.get_texts()]
    assert names[0].startswith("sky") and names[1].startswith("dog")  # by area; no grass
    assert "wall" in names[2] and "background" in names[2] and names[3].startswith("not seen by the model")
    assert len(names) == 4
    seen = img.height * (img.width - 10)
    assert f"{100 * 300 * (img.width - 10) / seen:.1f} %" in names[0]
    colours = [tuple(np.round(np.asarray(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles[:2]]
    assert colours == [PALETTE[2], PALETTE[1]]
    assert TALL in fig.get_suptitle() and "2 of 3 classes" in fig.get_suptitle()
    _check_layout(fig, tmp_path, "segmentation")


def test_surgery_parts_figure(random_toy, maps, tmp_path):
    paths, m = maps
    s = m["surgery", "whole"]
    fitted, _ = fit_images(random_toy, paths[:1])
    sp = surgery_parts(random_toy, fitted[0].pixels[None], Targets.texts(TEXTS).embed(random_toy, with_empty=True))
    parts = sp.parts[0, 0]
    torch.testing.assert_close(parts.sum(0), s[0].raw[0], atol=1e-5, rtol=1e-4)
    shares = part_shares(parts)
    assert shares.sum() == pytest.approx(1.0)
    fig = surgery_parts_figure(load_image(paths[0]), s[0], parts, sp.labels, text=TEXTS[0], top=3, bars=8,
                               settings=s.settings, image_name=WIDE)
    head = fig.get_suptitle().replace("\n", " ")
    assert WIDE in head and "sum" in head and f"{len(sp.labels)} parts" in head
    bars = next(ax for ax in fig.axes if ax.get_label() == "bars")
    ticks = [t.get_text() for t in bars.get_yticklabels()]
    order = np.argsort(-np.abs(shares))
    assert len(ticks) == 8 + 2 and ticks[-1].startswith("all parts") and "other" in ticks[-2]
    assert [t.split(" ")[0] for t in ticks[:8]] == [sp.labels[i] for i in order[:8]]
    widths = [p.get_width() for p in bars.patches]
    assert sum(widths[:-1]) == pytest.approx(100.0) and widths[-1] == 100.0
    maps_drawn = _map_images(fig)
    assert len(maps_drawn) == 4 and len(_colour_bars(fig)) == 4  # the map and the top 3, each its own scale
    assert all(im.get_cmap().name == DIVERGING and im.norm.vmin == -im.norm.vmax for im in maps_drawn)
    np.testing.assert_allclose(maps_drawn[1].get_array().mean(), 0, atol=1e-6)  # minus its mean: the pattern
    _check_layout(fig, tmp_path, "parts")


def test_method_words_say_a_fallback_once_and_no_internal_keys():
    words = method_words({"method": "surgery", "blocks": 6, "feature": "redundancy", "feature_used": "empty"})
    assert words == "surgery (blocks 6, feature redundancy (used: empty))"
    same = method_words({"method": "surgery", "feature": "redundancy", "feature_used": "redundancy"})
    assert same == "surgery (feature redundancy)" and "feature_used" not in same
