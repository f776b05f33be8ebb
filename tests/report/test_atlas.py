"""The atlas's HTML and PNGs: every page and every file it references exists (relative links only), maps
are centred on zero, a user's folder is never overwritten, and a real browser (headless Chromium) loads
every image of the index and of a layer page."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.report.atlas import map_image, write_atlas
from tests.analyses.atlas_setup import atlas_setup

#: where Debian's chromium package (``apt-get install chromium``) and other builds put the binary
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome",
                                                         "google-chrome-stable")) if p), None)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    setup = atlas_setup(tmp_path_factory)
    return setup, write_atlas(setup.atlas, tmp_path_factory.mktemp("atlas-html") / "atlas")


def _links(page: Path) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]*)(?:#[^"]*)?"', page.read_text(encoding="utf-8"))


def test_every_page_and_every_file_it_references_exists(written):
    setup, files = written
    folder = files.folder
    assert files.note == "" and folder.name == "atlas"
    assert sorted(p.name for p in files.pages) == ["index.html", "layer-04.html", "layer-05.html"]
    index = (folder / "index.html").read_text(encoding="utf-8")
    for name in ("layer-04.html", "layer-05.html", "layer-05.html#L5.H2", "atlas.json"):
        assert f'href="{name}"' in index
    for head in setup.atlas.heads:  # each head with its top texts and explained variance
        assert head.name in index and html.escape(head.texts[0].text) in index
        assert f"{100 * head.explained:.1f} %" in index
    referenced: set[str] = set()
    for page in files.pages:
        for link in _links(page):
            if not link:
                continue
            assert not re.match(r"^(?:[a-z]+:|/)", link), f"{page.name} links outside the folder: {link}"
            assert (folder / link).is_file(), f"{page.name} references a missing file: {link}"
            referenced.add(link)
    layer5 = (folder / "layer-05.html").read_text(encoding="utf-8")
    head = setup.atlas.heads_of(5)[1]
    for t in head.texts:  # every text, the share of variance it removes (and cumulative), each image with its map
        assert html.escape(t.text) in layer5
        assert f"removes {100 * t.fraction:.1f} % of the variance (cumulative {100 * t.cumulative:.1f} %)" in layer5
        for s in (*t.top, *t.bottom):
            assert f"images/{s.index:06d}.png" in referenced
            j = head.texts.index(t) + 1
            assert f"maps/L05.H01/t{j:02d}-{s.index:06d}.png" in referenced
    # every PNG written is referenced, and small
    pngs = {str(p.relative_to(folder)) for p in folder.rglob("*.png")}
    assert pngs == {x for x in referenced if x.endswith(".png")}
    assert max(p.stat().st_size for p in folder.rglob("*.png")) < 30_000
    data = json.loads((folder / "atlas.json").read_text())
    assert [h["name"] for h in data["heads"]] == [h.name for h in setup.atlas.heads]
    # the shares are TEXTSPAN's (the share of variance each text's direction removes), labelled as such
    spans = {h.name: h for h in setup.spans.heads}
    for h in data["heads"]:
        assert [t["share_removed"] for t in h["texts"]] == spans[h["name"]].fractions
        assert [t["cumulative_share"] for t in h["texts"]] == spans[h["name"]].cumulative


def test_maps_are_centred_on_zero():
    view = np.full((16, 16, 3), 128, np.uint8)
    zero = np.asarray(map_image(view, np.zeros((2, 2)), 1.0)).astype(int)
    assert np.abs(zero - zero[..., :1]).max() <= 2  # white over grey: grey
    pos = np.asarray(map_image(view, np.ones((2, 2)), 1.0)).astype(int)
    neg = np.asarray(map_image(view, -np.ones((2, 2)), 1.0)).astype(int)
    assert (pos[..., 0] > pos[..., 2] + 30).all() and (neg[..., 2] > neg[..., 0] + 30).all()


def test_a_users_folder_is_never_overwritten(written, tmp_path):
    setup, _ = written
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("my own page")
    files = write_atlas(setup.atlas, out)
    assert files.folder == out / "run-2" and "not empty" in files.note
    assert (out / "index.html").read_text() == "my own page" and sorted(p.name for p in out.iterdir()) == [
        "index.html", "run-2"]
    assert (out / "run-2" / "index.html").is_file()


_CHECK = """<script>
(function () {
  var imgs = Array.prototype.slice.call(document.images);
  imgs.forEach(function (i) { i.loading = "eager"; });  // fetches started now delay the load event
  window.addEventListener("load", function () {  // every image has loaded or failed: check synchronously
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.getAttribute("src"); });
    var out = document.createElement("pre");
    out.id = "atlas-check";
    out.hidden = true;
    out.textContent = JSON.stringify({total: imgs.length, broken: broken});
    document.body.appendChild(out);
  });
})();
</script>"""


def _open_in_chromium(page: Path, screenshot: Path) -> dict:
    """Open ``page`` by file:// in headless Chromium; a screenshot, and which of its images did not load."""
    probe = page.with_name(f"check-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--mute-audio",
           "--no-first-run", "--window-size=1280,1600", "--virtual-time-budget=8000",
           f"--screenshot={screenshot}", "--dump-dom", probe.as_uri()]
    for _ in range(2):  # a loaded machine can starve a headless browser once; a second run settles it
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        found = re.search(r'<pre id="atlas-check" hidden="">(.*?)</pre>', res.stdout, re.S)
        if found:
            break
    assert found, f"Chromium did not run the check on {page.name} (exit {res.returncode}): {res.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary found (Debian: apt-get install chromium); the atlas "
                                              "is opened in a real browser only where one is installed")
def test_a_real_browser_loads_every_image(written, tmp_path):
    _, files = written
    copy = Path(shutil.copytree(files.folder, tmp_path / "copy"))  # a copy of the folder works on its own
    for name in ("index.html", "layer-05.html"):
        shot = tmp_path / f"{Path(name).stem}.png"
        result = _open_in_chromium(copy / name, shot)
        expected = len(re.findall(r"<img ", (copy / name).read_text(encoding="utf-8")))
        assert result["broken"] == [], f"{name}: images that did not load: {result['broken'][:5]}"
        assert result["total"] == expected
        with Image.open(shot) as im:
            assert im.size == (1280, 1600)
            pixels = np.asarray(im.convert("RGB").resize((64, 80))).reshape(-1, 3)
            assert len(np.unique(pixels, axis=0)) > 20  # something was drawn
    assert expected > 0  # the layer page shows images
