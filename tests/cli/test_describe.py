"""``cliplens describe`` and ``cliplens heads``: lines and JSON on the toy CLIP and a tiny random open_clip ViT, and
one readable error for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from cliplens.analyses.pools import load_pool
from cliplens.analyses.sparse import describe_images
from tests.cli.conftest import one_line, run, save_image


def test_describe_prints_the_image_and_its_top_heads(toy_args, tmp_path):
    img = save_image(tmp_path / "a.png", seed=1)
    res = run("describe", img, *toy_args, "--heads", "2", "--texts", "3")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    image_line = next(x for x in lines if x.strip().startswith("image"))
    assert "texts: " in image_line and "cos " in image_line and " + " in image_line
    head_lines = [x for x in lines if x.strip().startswith("L")]
    assert len(head_lines) == 2 and all("|effect|" in x for x in head_lines)
    # at most 3 texts each, and every text is the toy pool's
    pool = set(load_pool("toy"))
    data = json.loads(run("describe", img, *toy_args, "--heads", "2", "--texts", "3", "--json").stdout)
    row = data["images"][0]
    assert data["pool"] == "toy" and data["model"] == "toy" and row["image"] == img
    assert 1 <= row["count"] <= 3 and {t["text"] for t in row["terms"]} <= pool
    assert [h["head"] for h in row["heads"]] == [x.split()[0] for x in head_lines]
    norms = [h["effect_norm"] for h in row["heads"]]
    assert norms == sorted(norms, reverse=True)


def test_describe_json_matches_the_python_api(toy_args, random_toy, tmp_path):
    img = save_image(tmp_path / "b.png", seed=2)
    data = json.loads(run("describe", img, *toy_args, "--heads", "1", "--json").stdout)
    texts = load_pool("toy")
    px = random_toy.preprocess([img])
    ref = describe_images(random_toy, px, texts, heads=1).to_dicts(8)[0]
    got = data["images"][0]
    assert got["count"] == ref["count"] and got["cosine"] == pytest.approx(ref["cosine"], abs=1e-5)
    assert [t["text"] for t in got["terms"]] == [t["text"] for t in ref["terms"]]
    assert got["heads"][0]["head"] == ref["heads"][0]["head"]
    # the head's norm is its direct effect's, from the decomposition
    dec = random_toy.decompose(px, spatial=False)
    name = ref["heads"][0]["head"]
    layer, head = int(name[1:name.index(".")]), int(name.split(".H")[1])
    assert got["heads"][0]["effect_norm"] == pytest.approx(float(dec.per_head()[0, layer, head].norm()), rel=1e-4)


def test_describe_on_a_random_open_clip_vit(tiny_vit, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("a dog\na cat\ngrass\na car\n# a comment\nthe sky\na tree\n")
    img = save_image(tmp_path / "c.png", seed=3)
    res = run("describe", img, "-m", tiny_vit, "-p", "random", "--pool", pool, "--heads", "1", "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["images"][0]
    assert {t["text"] for t in row["terms"]} <= {"a dog", "a cat", "grass", "a car", "the sky", "a tree"}
    assert row["heads"][0]["head"].startswith("L")


def test_heads_command_lines_and_json(toy_args):
    res = run("heads", *toy_args, "--last", "1", "--directions", "1", "--top", "2")
    assert res.exit_code == 0, res.output
    assert [x.split()[0] for x in res.output.splitlines() if x.startswith("L")] == [f"L5.H{h}" for h in range(4)]
    assert sum(x.strip().startswith(("+v0", "-v0")) for x in res.output.splitlines()) == 8
    data = json.loads(run("heads", *toy_args, "--heads", "L2.H1", "--sparse", "--texts", "2", "--json").stdout)
    (h,) = data["heads"]
    assert h["name"] == "L2.H1" and len(h["directions"]) == 2
    assert h["directions"][0]["sparse_positive"] and len(h["directions"][0]["positive"]) == 3


@pytest.mark.parametrize("args, words", [
    (["describe", "{img}", "--pool", "{missing}"], "text pool file"),
    (["describe", "{missing}"], "missing"),
    (["heads", "--heads", "MLP3"], "--heads takes heads only"),
    (["heads", "--heads", "L9.H0"], "L9.H0 does not exist"),
    (["heads", "--last", "40"], "--last 40"),
    (["heads", "--pool-heads"], "pooling head has no heads"),
])
def test_bad_input_is_one_paragraph(toy_args, tmp_path, args, words):
    img = save_image(tmp_path / "d.png")
    args = [a.format(img=img, missing=tmp_path / "missing.txt") for a in args]
    res = run(*args, *toy_args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and words in one_line(res.output)


def test_describe_images_on_a_resnet_has_pool_heads():
    """A ResNet has no attention layers: its heads are the attention pool's."""
    import cliplens
    from tests.families.models import open_clip_resnet

    try:
        oc = open_clip_resnet("RN50").float()  # float32: the float64 copy takes 4x as long
    except Exception as e:  # pragma: no cover - depends on the installed open_clip
        pytest.skip(f"no RN50: {e}")
    model = cliplens.wrap(oc, name="RN50")
    px = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    T = torch.randn(20, model.vision.embed_dim, generator=torch.Generator().manual_seed(1))
    out = describe_images(model, px, [f"t{i}" for i in range(20)], T, heads=2)
    assert all(n.startswith("pool.H") for n in out.heads[0]) and len(out.heads[0]) == 2
    # data-free: the attention pool's heads, not layer heads (which it has none of)
    from cliplens.analyses.head_descriptions import describe_heads
    from cliplens.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no attention layers"):
        describe_heads(model, [f"t{i}" for i in range(20)], T)
    pool = describe_heads(model, [f"t{i}" for i in range(20)], T, pool_heads=True, directions=1)
    assert [h.name for h in pool][:2] == ["pool.H0", "pool.H1"] and pool[0].directions[0].singular_value > 0


def test_report_page_shows_the_sparse_description(toy_args, random_toy, tmp_path):
    """``cliplens report --pool toy``: each image's section has its embedding as texts, as 'describe' gives it."""
    img = save_image(tmp_path / "e.png", seed=4)
    out = tmp_path / "rep"
    res = run("report", img, *toy_args, "-t", "a red circle", "--pool", "toy", "--out", out)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    desc = summary["images"][0]["description"]
    ref = describe_images(random_toy, random_toy.preprocess([img]), load_pool("toy")).to_dicts(8)[0]
    assert desc["pool"] == "toy" and desc["count"] == ref["count"]
    assert [t["text"] for t in desc["terms"]] == [t["text"] for t in ref["terms"]]
    page = (out / "index.html").read_text()
    assert "In texts of the pool" in page and f"{desc['count']} texts" in page
    first = desc["terms"][0]["text"].replace("'", "&#x27;")
    assert first in page
    plain = tmp_path / "rep2"
    assert run("report", img, *toy_args, "-t", "a red circle", "--out", plain).exit_code == 0
    assert "In texts of the pool" not in (plain / "index.html").read_text()
    bad = run("report", img, *toy_args, "-t", "x", "--pool", tmp_path / "nope.txt", "--out", tmp_path / "rep3")
    assert bad.exit_code == 2 and "text pool file" in one_line(bad.output) and not (tmp_path / "rep3").exists()


def test_heads_factors_table_on_the_toy_world(toy_args, random_toy):
    """``heads --factors``: each head's OV text is describe_heads's nearest text (either sign) to its top
    direction; its factor is the toy pool's; the agreement rates are the shares of heads whose factors match."""
    from cliplens.analyses.head_descriptions import describe_heads
    from cliplens.analyses.pools import toy_pool_factors

    res = run("heads", *toy_args, "--factors", "--scenes", "40", "--scene-seed", "7", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rows = data["heads"]
    assert len(rows) == 24 and data["settings"]["scenes"] == 40 and data["settings"]["seed"] == 7
    ref = {d.name: d.directions[0] for d in describe_heads(random_toy, load_pool("toy"), last=None, directions=1)}
    factor_of = toy_pool_factors()
    for r in rows:
        d = ref[r["name"]]
        cos = max(d.positive[0][1], d.negative[0][1])
        assert r["ov_text"] == (d.positive[0][0] if d.positive[0][1] >= d.negative[0][1] else d.negative[0][0])
        assert r["ov_cosine"] == pytest.approx(cos) and r["ov_factor"] == factor_of[r["ov_text"]][0]
    for key, a, b in (("ov_measured", "ov_factor", "measured_factor"),
                      ("textspan_measured", "textspan_factor", "measured_factor")):
        assert data["agreement"][key] == pytest.approx(sum(r[a] == r[b] for r in rows) / len(rows))
    lines = run("heads", *toy_args, "--factors", "--scenes", "40", "--scene-seed", "7").output
    assert "more than once" not in lines  # --scene-seed, not a second --seed next to the model's
    assert "OV vs measured" in lines and "L5.H3" in lines


def test_heads_factors_needs_a_toy_model(tiny_vit):
    res = run("heads", "-m", tiny_vit, "-p", "random", "--factors")
    assert res.exit_code == 2 and "needs a toy-world model" in one_line(res.output)


def test_describe_images_on_an_attention_pooled_tower(random_toy_weights):
    """SigLIP's MAP head (on the toy's blocks): the layer heads' direct effects, exact through the pooling."""
    from tests.pooled_towers import pooled_toy

    m = pooled_toy(random_toy_weights, "map", dtype=torch.float64)
    px = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    texts = load_pool("toy")
    out = describe_images(m, px, texts, heads=3)
    dec = m.decompose(px, spatial=False, dtype=torch.float64)
    norms = dec.per_head().norm(dim=-1).flatten(1)  # [B, L·H]
    best = norms.topk(3, dim=-1)
    H = m.vision.num_heads
    for b in range(2):
        assert out.heads[b] == [f"L{int(j) // H}.H{int(j) % H}" for j in best.indices[b]]
        assert out.head_norms[b] == pytest.approx(best.values[b].tolist(), rel=1e-5)
    assert len(out.head_texts) == 6 and (out.head_texts.count >= 1).all()
