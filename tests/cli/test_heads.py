"""``cliplens retrieve`` and ``cliplens debias`` end to end on small stores of the shipped toy models."""

from __future__ import annotations

import json

import pytest
import torch

import cliplens
from cliplens.analyses.textspan import textspan
from cliplens.datasets import load_toy
from cliplens.store import Store, StoreSettings, build_store
from tests.cli.conftest import one_line, run

SPEC = "toy:label=shape,shapes=circle|square,bg_kind=striped|dotted,sizes=small,n=120,seed=3"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-heads") / "s"
    build_store(cliplens.load("toy-spurious"), load_toy(SPEC), out, settings=StoreSettings(chunk_size=60,
                                                                                          batch_size=60))
    return out


def test_debias_json_and_table(store):
    r = run("debias", store, "--spurious", "background", "--random-sets", "3", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["heads"]["by"] == "attribute" and d["heads"]["attribute"] == "bg_kind" and len(d["heads"]["heads"]) == 3
    assert set(d["before"]["groups"]) == {"circle on dotted", "circle on striped", "square on dotted",
                                          "square on striped"}
    assert len(d["random"]) == 3 and d["best_random"]["worst"] == max(x["worst"] for x in d["random"])
    assert d["after"]["worst"] > d["before"]["worst"]
    r = run("debias", store, "--spurious", "bg_kind", "--heads", "L4.H2", "--random-sets", "0")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert "heads ablated: L4.H2" in text and "worst group" in text and "best of" not in text


def test_debias_by_text_computes_textspan(store):
    r = run("debias", store, "--spurious", "background", "--by", "text", "--last", "6", "--texts", "5",
            "--num-heads", "2", "--random-sets", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["heads"]["by"] == "text" and d["heads"]["property"] == "bg_kind" and len(d["heads"]["heads"]) == 2
    assert set(d["heads"]["scores"]) == {f"L{layer}.H{h}" for layer in range(6) for h in range(4)}


def test_retrieve_from_saved_textspan(store, tmp_path):
    st = Store(store)
    model = cliplens.load("toy-spurious")
    texts = ["a photo of a red shape", "a photo of a blue shape", "a photo of a striped background",
             "a photo of a dotted background", "a photo of a circle", "a photo of a square"]
    textspan(st, texts, model.encode_text(texts), last=3, m=2, with_accuracy=False).write(tmp_path / "ts")
    r = run("retrieve", store, "--query-index", "4", "--property", "background", "--by", "text", "--textspan",
            tmp_path / "ts", "--top", "5", "--evaluate", "bg_kind", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    own = {"shape": ["circle", "square"][int(st.labels[4])], "bg_kind": st.attributes("bg_kind")[4]}
    assert d["query"] == {"row": 4, "id": st.ids[4], "label": own["shape"], "bg_kind": own["bg_kind"]}
    assert [len(v) for v in d["neighbours"].values()] == [5, 5]
    assert all(n["row"] != 4 and "bg_kind" in n for n in d["neighbours"]["heads"])
    assert set(d["precision"]) == {"attribute", "k", "heads", "embedding"}
    img = tmp_path / "q.png"
    load_toy(SPEC)[4].load().save(img)
    r = run("retrieve", store, "--query", img, "--heads", "L4.H2,L2.H2", "--top", "3")
    assert r.exit_code == 0, r.output
    assert st.ids[4] in r.output and "through the heads" in r.output
    r = run("retrieve", store, "--query", img, "--heads", "L4.H2,L2.H2", "--top", "3", "--json")
    q = json.loads(r.output)["query"]
    model_says = st.class_names[int((st.classifier @ torch.from_numpy(st.field("embedding")[4])).argmax())]
    assert q == {"file": str(img), "label": None, "zero_shot_label": model_says}
    r = run("retrieve", store, "--query-index", "4", "--heads", "L4.H2", "--top", "3")  # the table says it too
    assert f"row 4 ({st.ids[4]}; {own['shape']})" in one_line(r.output)


def test_an_unreadable_query_is_refused_before_any_work(store, tmp_path, monkeypatch):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    monkeypatch.setattr("cliplens.cli.heads.choose", lambda *a, **k: pytest.fail("work began"))
    r = run("retrieve", store, "--query", bad, "--property", "background")
    msg = one_line(r.output)
    assert r.exit_code == 2 and "corrupt.jpg" in msg and "--query-index" in msg, r.output
    assert "skip_bad" not in msg and "Traceback" not in r.output


@pytest.mark.parametrize("args, message", [
    (["retrieve", "{store}"], "give a query"),
    (["retrieve", "{store}", "--query-index", "999"], "the store has 120 images"),
    (["retrieve", "{store}", "--query-index", "1", "--heads", "L9.H0"], "does not exist"),
    (["retrieve", "{store}", "--query-index", "1", "--property", "smell", "--by", "text", "--last", "1"],
     "unknown property 'smell'"),
    (["retrieve", "{store}", "--query-index", "1", "--evaluate", "mood"], "no such attribute"),
    (["retrieve", "{store}", "--query-index", "1", "--property", "texture", "--by", "attribute"],
     "no attribute 'texture'"),
    (["retrieve", "{store}", "--query-index", "1", "--property", "colour", "--textspan", "/nonexistent/x.json"],
     "cannot read TEXTSPAN results"),
    (["debias", "{store}", "--spurious", "lighting"], "pass --groups"),
    (["debias", "/nonexistent-store", "--spurious", "bg_kind"], "is not a cliplens store"),
    (["textspan", "{store}", "--last", "9"], "the tower has 6 layers, so the number of last layers"),
    (["textspan", "{store}", "--layers", "2"], "--last 2"),
])
def test_mistakes_end_in_one_paragraph(store, args, message):
    r = run(*[a.format(store=store) for a in args])
    assert r.exit_code == 2, r.output
    assert message in one_line(r.output) and "Traceback" not in r.output


def test_debias_on_the_waterbirds_layout(tmp_path):
    # the layout end to end: metadata.csv -> store (test split) -> groups named by class and place
    rows = ["img_filename,y,place,split"]
    scenes = load_toy(SPEC)
    for i in range(16):
        y, place = divmod(i % 4, 2)
        name = f"{i:03d}.png"
        scenes[i].load().save(tmp_path / name)
        rows.append(f"{name},{y},{place},{2 if i < 12 else 0}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    store = tmp_path / "wb"
    r = run("store", "build", tmp_path, "--split", "test", "--out", store)
    assert r.exit_code == 0, r.output
    r = run("debias", store, "--spurious", "place", "--random-sets", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert sorted(d["before"]["groups"]) == ["landbird on land", "landbird on water", "waterbird on land",
                                             "waterbird on water"]
    assert sum(d["before"]["sizes"].values()) == 12 and d["heads"]["attribute"] == "place"
