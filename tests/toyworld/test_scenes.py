import json

import numpy as np
import pytest

from cliplens.toyworld.scenes import (
    BG_COLOURS,
    BG_KINDS,
    COLOUR_RGB,
    COLOURS,
    POSITIONS,
    SHAPES,
    SceneFactors,
    object_mask,
    render_background,
    render_scene,
    sample_scene,
    scene_rng,
)


def test_world_sizes():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8 and len(BG_KINDS) >= 5
    rgb = np.array(list(COLOUR_RGB.values()), dtype=float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert d[~np.eye(len(rgb), dtype=bool)].min() > 60  # well separated


def test_same_seed_same_scene():
    a = sample_scene(7, 3)
    b = sample_scene(7, 3)
    assert a.to_json() == b.to_json()
    ia, ma = render_scene(a)
    ib, mb = render_scene(b)
    assert np.array_equal(ia, ib) and np.array_equal(ma["visible"], mb["visible"])
    assert sample_scene(8, 3).to_json() != a.to_json()


def test_scene_independent_of_order():
    fwd = [sample_scene(1, i).to_json() for i in range(20)]
    bwd = [sample_scene(1, i).to_json() for i in reversed(range(20))][::-1]
    assert fwd == bwd
    # also when drawn from an explicit per-scene generator
    assert sample_scene(scene_rng(1, 5), 5).objects == sample_scene(1, 5).objects


def test_streams_differ():
    assert sample_scene(0, 0, stream="train").to_json() != sample_scene(0, 0, stream="eval").to_json()


@pytest.mark.parametrize("i", range(25))
def test_masks_exact(i):
    sc = sample_scene(3, i, p_shared_cell=0.5)  # plenty of overlaps
    img, m = render_scene(sc)
    vis, full, bg = m["visible"], m["full"], m["background"]
    n = len(sc.objects)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert vis.shape == full.shape == (n, 64, 64) and vis.dtype == bool
    # visible masks + background partition the image
    assert np.array_equal(vis.sum(0) + bg, np.ones((64, 64)))
    assert not (vis & ~full).any()
    for k, o in enumerate(sc.objects):
        assert (img[vis[k]] == np.array(COLOUR_RGB[o.colour], dtype=np.uint8)).all()
        assert full[k].sum() > 20
        # occlusion: pixels of the full mask not visible are covered by a later object
        hidden = full[k] & ~vis[k]
        if hidden.any():
            assert full[k + 1 :].any(0)[hidden].all()
    assert np.array_equal(img[bg], render_background(sc).astype(np.uint8)[bg])


def test_factors_json_round_trip():
    sc = sample_scene(11, 2)
    s = sc.to_json()
    json.loads(s)
    back = SceneFactors.from_json(s)
    assert back == sc
    assert np.array_equal(render_scene(back)[0], render_scene(sc)[0])


def test_constraints():
    for i in range(10):
        sc = sample_scene(0, i, count=1, shapes="star", colours=("red", "blue"), sizes="large",
                          positions="left", bg_kind="striped", bg_colour="white")
        assert sc.count == 1 and sc.bg_kind == "striped" and sc.bg_colour == "white"
        o = sc.objects[0]
        assert o.shape == "star" and o.colour in ("red", "blue") and o.size == "large" and o.position == "left"
        assert o.x < 1 / 3  # centre lies in its cell
    counts = {sample_scene(0, i, count=(2, 3)).count for i in range(20)}
    assert counts == {2, 3}


def test_positions_match_cells():
    for i in range(50):
        sc = sample_scene(2, i)
        for o in sc.objects:
            row, col = divmod(POSITIONS.index(o.position), 3)
            assert col / 3 <= o.x <= (col + 1) / 3 and row / 3 <= o.y <= (row + 1) / 3
            # the mask's centroid is near the stated centre
            m = object_mask(o, 64)
            ys, xs = np.nonzero(m)
            assert abs(xs.mean() / 64 - o.x) < 0.1 and abs(ys.mean() / 64 - o.y) < 0.1


def test_all_shapes_and_backgrounds_render_distinctly():
    masks = []
    for s in SHAPES:
        sc = sample_scene(0, 0, count=1, shapes=s, sizes="large", positions="centre", rotation_jitter=0.0,
                          jitter=0.0)
        masks.append(render_scene(sc)[1]["full"][0])
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (SHAPES[a], SHAPES[b], iou)
    bgs = []
    for k in BG_KINDS:
        sc = sample_scene(0, 0, count=1, bg_kind=k, bg_colour=BG_COLOURS[0])
        bgs.append(render_background(sc))
    for a in range(len(bgs)):
        for b in range(a + 1, len(bgs)):
            assert not np.array_equal(bgs[a], bgs[b])


def test_unknown_shape_raises():
    sc = sample_scene(0, 0, count=1)
    sc.objects[0].shape = "blob"
    with pytest.raises(ValueError, match="unknown shape"):
        render_scene(sc)


@pytest.mark.parametrize("factor", ["shape", "colour", "size", "position", "count", "bg_kind", "bg_colour"])
def test_twin_changes_exactly_one_factor(factor):
    from cliplens.toyworld.scenes import twin_scene

    rng = np.random.default_rng(0)
    for i in range(10):
        sc = sample_scene(6, i, count=(2, 3))
        before = sc.to_json()
        tw = twin_scene(sc, rng, factor)
        assert sc.to_json() == before  # original untouched
        img, m = render_scene(tw)  # renders, masks still partition the image
        assert np.array_equal(m["visible"].sum(0) + m["background"], np.ones((64, 64)))
        if factor in ("bg_kind", "bg_colour"):
            assert tw.objects == sc.objects
            assert (tw.bg_kind != sc.bg_kind) if factor == "bg_kind" else (tw.bg_colour != sc.bg_colour)
        elif factor == "count":
            assert abs(tw.count - sc.count) == 1 and tw.bg_kind == sc.bg_kind
        else:
            assert tw.count == sc.count and tw.bg_kind == sc.bg_kind and tw.bg_colour == sc.bg_colour
            diff = [k for k, (a, b) in enumerate(zip(sc.objects, tw.objects, strict=True)) if a != b]
            assert len(diff) == 1
            a, b = sc.objects[diff[0]], tw.objects[diff[0]]
            attr = {"shape": "shape", "colour": "colour", "size": "size", "position": "position"}[factor]
            assert getattr(a, attr) != getattr(b, attr)
            for other in ("shape", "colour", "size", "position"):
                if other != attr:
                    assert getattr(a, other) == getattr(b, other)


def test_snap_to_patch_grid():
    for i in range(30):
        for o in sample_scene(4, i).objects:
            assert abs(o.x * 8 - round(o.x * 8)) < 1e-9 and abs(o.y * 8 - round(o.y * 8)) < 1e-9
    xs = [o.x for i in range(30) for o in sample_scene(4, i, snap=None).objects]
    assert any(abs(x * 8 - round(x * 8)) > 1e-3 for x in xs)
