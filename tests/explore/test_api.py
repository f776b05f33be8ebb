"""The explorer's JSON API over HTTP on 127.0.0.1 (no browser): what a run returns and serves, every view,
uploads, the store's atlas, requests served one at a time, and bad input answered as one paragraph."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from cliplens.explore import Explorer, session, views
from tests.cli.conftest import one_line
from tests.explore.conftest import PHOTO, call, get_json, post_json, served, wait

PNG = b"\x89PNG\r\n\x1a\n"


def test_info_lists_the_model_methods_views_and_scenes(app, random_toy):
    status, d = get_json(f"{app.url}/api/info")
    assert status == 200
    assert d["model"]["name"] == "toy" and d["model"]["layers"] == random_toy.vision.num_layers
    names = [m["name"] for m in d["methods"]]
    assert {"surgery", "gem", "maskclip", "decomposition"} <= set(names) and names == sorted(names)
    assert d["views"] == list(views.VIEWS) and d["store"] is None
    scenes = [i for i in d["images"] if i["kind"] == "scene"]
    assert len(scenes) == len(session.SCENES)
    status, body, kind = call(app.url + scenes[0]["url"])
    assert status == 200 and body.startswith(PNG) and kind == "image/png"
    status, body, kind = call(app.url + "/")
    assert status == 200 and b'id="upload"' in body and kind.startswith("text/html")


def test_a_run_draws_every_view_and_serves_its_figures(app, random_toy):
    texts = ["a red circle"]
    status, d = post_json(f"{app.url}/api/run", {"image": "scene-0", "texts": texts, "methods": ["surgery", "gem"],
                                                  "views": list(views.VIEWS)})
    assert status == 200, d
    job = wait(app.url, d["job"])
    assert job["state"] == "done", job
    r = job["result"]
    assert r["texts"] == texts
    assert [n for n in r["notes"] if "empty-prompt variant" not in n] == []  # Surgery's one-text fallback only
    by_view = {v: [f for f in r["figures"] if f["view"] == v] for v in views.VIEWS}
    # maps: one grid per method and the methods side by side; bars: layers and heads per text; head maps: the
    # top heads of each text; Surgery by head and the segmentation
    assert len(by_view["maps"]) == 3 and by_view["maps"][-1]["title"] == "the methods side by side"
    assert len(by_view["bars"]) == 2 * len(texts)
    assert 1 <= len(by_view["head-maps"]) <= views.TOP_HEADS * len(texts)
    assert len(by_view["surgery-heads"]) == len(texts) and len(by_view["segment"]) == 1
    for f in r["figures"]:
        status, body, kind = call(app.url + f["url"])
        assert status == 200 and body.startswith(PNG) and kind == "image/png", f
    # the similarity shown is the model's own cosine of image and text (computed here without the decomposition)
    image = app.explorer.image_file("scene-0")
    with torch.no_grad():
        img = random_toy.encode_image(random_toy.preprocess([str(image)]), normalize=True)
        cos = (img @ random_toy.encode_text(texts).T)[0]
    assert torch.allclose(torch.tensor([r["similarity"][t] for t in texts]), cos.double().float(), atol=1e-4)


def test_an_uploaded_photo_is_mapped(app):
    status, body, _ = call(f"{app.url}/api/upload?name={PHOTO.name}", PHOTO.read_bytes(),
                           headers={"Content-Type": "application/octet-stream"})
    entry = json.loads(body)
    assert status == 200 and entry["kind"] == "upload" and entry["name"] == PHOTO.name
    assert call(app.url + entry["url"])[1] == PHOTO.read_bytes()
    status, d = post_json(f"{app.url}/api/run", {"image": entry["id"], "texts": "a dog\na cat", "views": ["maps"]})
    job = wait(app.url, d["job"])
    assert job["state"] == "done", job
    assert [f["view"] for f in job["result"]["figures"]] == ["maps"]
    assert job["result"]["texts"] == ["a dog", "a cat"] and job["result"]["image"] == PHOTO.name
    # the toy CLIP's warning about words it does not know is shown as a note
    assert any("has no word 'dog', 'cat'" in n for n in job["result"]["notes"]), job["result"]["notes"]


def test_bad_input_is_one_paragraph_never_a_traceback(app):
    def refused(path: str, value: object, match: str, status: int = 400) -> None:
        got, d = post_json(app.url + path, value)
        assert got == status and match in one_line(d["error"]), d
        assert "Traceback" not in d["error"]

    refused("/api/run", {"image": "scene-99", "texts": ["a"]}, "no image 'scene-99': pick a scene or upload")
    refused("/api/run", {"image": "scene-0", "texts": [" ", ""]}, "type at least one text")
    refused("/api/run", {"image": "scene-0", "texts": ["a"], "methods": ["nope"]}, "'nope' is not a map method")
    refused("/api/run", {"image": "scene-0", "texts": ["a"], "views": ["pie"]}, "views are maps, bars")
    refused("/api/run", {"image": "scene-0", "texts": ["a"], "method": "gem"}, "unknown field method in the run")
    refused("/api/run", {"image": "scene-0", "texts": 3}, "texts must be a list of strings")
    refused("/api/run", {"image": "scene-0", "texts": ["a"], "templates": "odd"}, "templates must be none or one of")
    refused("/api/run", ["scene-0"], "a run is a JSON object")
    refused("/api/atlas", {}, "started without a store")
    status, body, _ = call(f"{app.url}/api/run", b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    status, body, _ = call(f"{app.url}/api/upload?name=notes.txt", b"just text")
    assert status == 400 and "'notes.txt' is not an image the explorer can read" in json.loads(body)["error"]
    status, body, _ = call(f"{app.url}/api/upload?name=x.png", b"", method="POST")
    assert status == 400 and "the upload is empty" in json.loads(body)["error"]
    status, d = get_json(f"{app.url}/api/jobs/run-999")
    assert status == 400 and "no job 'run-999'" in d["error"]
    for path in ("/nothing", "/files/../images/scene-0.png", "/files/runs/..%2f..%2fimages/scene-0.png",
                 "/files/images/scene-0.png", "/images/../session.py"):
        status, body, _ = call(app.url + path)
        assert status == 404 and "nothing at" in json.loads(body)["error"], path
    # a request addressed to another host name (DNS rebinding) is refused
    status, body, _ = call(f"{app.url}/api/info", headers={"Host": "evil.example:80"})
    assert status == 403


def test_a_large_upload_is_refused_with_the_limit(app, monkeypatch):
    monkeypatch.setattr(session, "MAX_UPLOAD", 10)
    with pytest.raises(session.InvalidInputError, match="the explorer takes images up to 0 MiB"):
        app.explorer.upload("big.png", PHOTO.read_bytes())


def test_a_method_that_cannot_run_is_a_note_and_a_bug_is_said_as_one(app, monkeypatch):
    status, d = post_json(f"{app.url}/api/run", {"image": "scene-1", "texts": ["a red circle"],
                                                  "methods": ["proxyclip", "maskclip"], "views": ["maps"]})
    job = wait(app.url, d["job"])
    assert job["state"] == "done", job
    r = job["result"]
    assert [f["title"] for f in r["figures"]] == ["MaskCLIP: where it puts each text"]
    assert len(r["notes"]) == 1 and r["notes"][0].startswith("proxyclip:")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(session, "draw", broken)
    status, d = post_json(f"{app.url}/api/run", {"image": "scene-1", "texts": ["a"]})
    job = wait(app.url, d["job"])
    assert job["state"] == "failed" and job["error"].startswith("unexpected RuntimeError: boom. This looks like a bug")


def test_runs_are_served_one_at_a_time_on_the_model(random_toy, monkeypatch, tmp_path):
    ex = Explorer(random_toy, scenes=False, folder=tmp_path)
    ex.upload("p.jpg", PHOTO.read_bytes())
    inside, most = [0], [0]
    guard = threading.Lock()

    def slow(adapter, req, out, step, figures=None, link=str):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with guard:
            inside[0] -= 1
        return {"figures": [], "notes": []}

    monkeypatch.setattr(session, "draw", slow)
    jobs = [ex.run({"image": "upload-1", "texts": ["a"]}) for _ in range(3)]
    waiting = ex.job(jobs[-1].id)
    assert waiting["state"] in ("queued", "running")
    end = time.monotonic() + 10
    while any(ex.job(j.id)["state"] != "done" for j in jobs) and time.monotonic() < end:
        time.sleep(0.05)
    assert [ex.job(j.id)["state"] for j in jobs] == ["done"] * 3 and most[0] == 1
    ex.close()
    assert tmp_path.exists()  # a folder given to the explorer is the caller's: not removed


def test_the_store_atlas_is_built_and_browsable(tmp_path_factory):
    from tests.analyses.atlas_setup import atlas_setup

    setup = atlas_setup(tmp_path_factory)
    app = served(Explorer(setup.model, store=setup.store, scenes=False))
    try:
        status, d = get_json(f"{app.url}/api/info")
        assert d["store"]["images"] == len(setup.store) and d["store"]["path"] == str(setup.store.path)
        status, d = post_json(f"{app.url}/api/atlas", {"last": 99})
        assert status == 400 and "layers must be a whole number from 1 to" in d["error"]
        status, d = post_json(f"{app.url}/api/atlas", {"last": 1, "texts": 2, "images_per_text": 1})
        job = wait(app.url, d["job"])
        assert job["state"] == "done", job
        r = job["result"]
        assert r["layers"] == [setup.store.shape["layers"] - 1] and r["pool"] == "toy"
        status, body, kind = call(app.url + r["url"])
        page = body.decode()
        assert status == 200 and kind.startswith("text/html") and all(h in page for h in r["heads"])
        layer_page = r["url"].rsplit("/", 1)[0] + f"/layer-{r['layers'][0]:02d}.html"
        assert call(app.url + layer_page)[0] == 200
    finally:
        app.stop()


def test_a_run_shows_its_progress_and_first_figures_while_it_runs(random_toy, monkeypatch, tmp_path):
    ex = Explorer(random_toy, scenes=False, folder=tmp_path)
    ex.upload("p.jpg", PHOTO.read_bytes())
    reached, release = threading.Event(), threading.Event()

    def halfway(adapter, req, out, step, figures=None, link=str):
        step("first part")
        step("second part")
        (out / "a.png").write_bytes(PNG)
        figures.append({"view": "maps", "title": "a", "url": link("a.png")})
        reached.set()
        release.wait(10)
        return {"figures": list(figures), "notes": []}

    monkeypatch.setattr(session, "draw", halfway)
    job = ex.run({"image": "upload-1", "texts": ["a"]})
    assert reached.wait(10)
    d = ex.job(job.id)
    assert d["state"] == "running" and d["message"] == "second part" and 1 <= d["done"] < d["total"]
    assert d["partial"] == [{"view": "maps", "title": "a", "url": f"/files/runs/{job.id}/a.png"}]
    assert ex.file(f"runs/{job.id}/a.png") == (tmp_path / "runs" / job.id / "a.png").resolve()
    release.set()
    end = time.monotonic() + 10
    while ex.job(job.id)["state"] != "done" and time.monotonic() < end:
        time.sleep(0.02)
    d = ex.job(job.id)
    assert d["state"] == "done" and d["done"] == d["total"] and "partial" not in d
    assert d["result"]["figures"][0]["url"] == f"/files/runs/{job.id}/a.png"


def test_an_open_clip_model_with_random_weights_and_method_parameters(tiny_vit):
    import cliplens

    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = cliplens.load(tiny_vit, pretrained="random")
    ex = Explorer(model)
    try:
        info = ex.info()
        assert info["model"]["random_weights"] is True and info["model"]["layers"] == 2
        request = {"image": "scene-2", "texts": ["a green circle"], "methods": ["surgery"],
                   "views": ["maps", "surgery-heads"]}
        job = ex.run(request)
        while ex.job(job.id)["state"] in ("queued", "running"):
            time.sleep(0.05)
        r = ex.job(job.id)["result"]
        # CLIP Surgery's default 6 blocks do not fit a 2-layer tower: a note, no figure
        assert r["figures"] == [] and "blocks must be between 1 and the model's depth (2), got 6" in r["notes"][0]
        job = ex.run({**request, "params": ["surgery.blocks=2"]})
        while ex.job(job.id)["state"] in ("queued", "running"):
            time.sleep(0.05)
        r = ex.job(job.id)["result"]
        assert [f["view"] for f in r["figures"]] == ["maps", "surgery-heads"], r
        with pytest.raises(session.InvalidInputError, match="no method run here has a parameter 'nope'"):
            ex.run({**request, "params": "nope=1"})
        with pytest.raises(session.InvalidInputError, match="map method 'surgery'"):
            ex.run({**request, "params": ["surgery.feature=odd"]})
    finally:
        ex.close()
