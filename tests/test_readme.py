"""The code of the README and of the documentation site's pages (``docs/**/*.md``) is executed, so it cannot
drift from the API: the snippets of the reference pages by the tests below (each with what it must hold), and
every Python block of the tutorials, concepts and how-to pages in order, in a temporary folder, on the embedded toy
model. A page with Python blocks that no test runs fails ``test_every_python_block_is_executed``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cliplens
from tests.conftest import pixels, tiny_open_clip

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: pages whose Python blocks run in order in one scope (a tutorial builds on its earlier blocks), each with what
#: its blocks must compute (``PAGE_CHECKS``); another page's blocks are run by a test that names its path
RUN_IN_ORDER = ("README.md", "docs/tutorials/explain-a-photo.md", "docs/tutorials/heads-and-layers.md",
                "docs/tutorials/segmentation.md", "docs/tutorials/data-set-analyses.md",
                "docs/tutorials/surgery-and-sam.md", "docs/concepts/targets.md", "docs/how-to/add-a-method.md",
                "docs/how-to/add-a-data-set.md")


def pages() -> list[Path]:
    """The README and every page of the site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _page_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def _python_blocks() -> list[str]:
    return [b for page in pages() for b in _page_blocks(page)]


def _block(marker: str) -> tuple[str, str]:
    """The one Python block that holds ``marker``, and the page it is on (for tracebacks)."""
    found = [(b, _name(page)) for page in pages() for b in _page_blocks(page) if marker in b]
    assert len(found) == 1, f"{len(found)} Python blocks of the README and docs/ hold {marker!r}: " + \
        ", ".join(name for _, name in found)
    return found[0]


#: the marker of each snippet a test below runs (with the objects its page assumes)
SNIPPET_MARKERS = (
    "attn = dec.head_terms()", 'pixels = model.preprocess(["scene.png", pil_image])',
    '@register_attention("sharpened")', "requires_grad_(True)", "Surgery().tokens(model, x)",
    "from cliplens.maps import Surgery, Targets, get_map, surgery_parts", "for name in map_names(", 'store.head_terms(images=range(1000)',
    "cliplens.wrap(siglip_model)",
)


def test_independent_check_snippet_runs_and_holds():
    block, page = _block("attn = dec.head_terms()")
    open_clip_model = tiny_open_clip(layers=3)
    x = pixels(2, 64)
    scope = {"cliplens": cliplens, "torch": torch, "open_clip_model": open_clip_model, "x": x}
    exec(compile(block, page, "exec"), scope)
    attn, mlp = scope["attn"], scope["mlp"]
    v = open_clip_model.visual
    assert attn.shape == (2, 3, 17, v.transformer.resblocks[0].attn.num_heads, v.output_dim)
    assert mlp.shape == (2, 4, v.output_dim)


def test_api_tour_runs(random_toy_weights, tmp_path):
    block, page = _block('pixels = model.preprocess(["scene.png", pil_image])')
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    img = render_scene(sample_scene(0, 0))[0]
    Image.fromarray(img).save(tmp_path / "scene.png")
    code = block.replace('cliplens.load("toy")', f'cliplens.load("toy", pretrained=r"{random_toy_weights}")')
    code = code.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"')
    code = code.replace('dec.save("scene-decomposition.safetensors"', f'dec.save(r"{tmp_path / "dec.safetensors"}"')
    scope = {"cliplens": cliplens, "pil_image": Image.fromarray(img), "torch": torch}
    exec(compile(code, page, "exec"), scope)
    scores = scope["scores"]
    assert scores.total.shape == (2, 2)
    assert scope["both"].batch_size == 2 and scope["tokens"].shape == (2, 65, scope["model"].vision.embed_dim)
    # the plan and gradient snippets run in the tour's scope
    (plan_block, plan_page), (grad_block, grad_page) = (
        _block(marker) for marker in ('@register_attention("sharpened")', "requires_grad_(True)"))
    exec(compile(plan_block, plan_page, "exec"), scope)
    assert scope["out"]["side.vv.dense"].shape == scope["tokens"].shape
    exec(compile(grad_block, grad_page, "exec"), scope)
    assert scope["grad_pixels"].shape == scope["pixels"].shape and scope["grad_pattern"].abs().sum() > 0


def test_surgery_snippet_runs_and_holds():
    block, page = _block("Surgery().tokens(model, x)")
    open_clip_model = tiny_open_clip(layers=8)
    x = pixels(2, 64)
    text_embeddings = torch.randn(3, open_clip_model.visual.output_dim, generator=torch.Generator().manual_seed(0))
    scope = {"cliplens": cliplens, "torch": torch, "open_clip_model": open_clip_model, "x": x,
             "text_embeddings": text_embeddings}
    exec(compile(block, page, "exec"), scope)
    assert scope["tokens"].shape == (2, 17, open_clip_model.visual.output_dim)
    assert scope["sim"].shape == (2, 3, 4, 4)


def test_maps_snippet_runs(random_toy_weights, tmp_path):
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    img = render_scene(sample_scene(0, 0))[0]
    Image.fromarray(img).save(tmp_path / "scene.png")
    block, page = _block("from cliplens.maps import Surgery, Targets, get_map, surgery_parts")
    code = block.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"')
    model = cliplens.load("toy", pretrained=str(random_toy_weights))
    scope = {"cliplens": cliplens, "model": model, "pil_image": Image.fromarray(img)}
    exec(compile(code, page, "exec"), scope)
    assert scope["m"].on_image().shape == (3, 64, 64) and scope["maps"].settings["method"] == "decomposition"


def test_every_methods_raw_maps_snippet():
    from cliplens.maps import get_map, map_names

    block, page = _block("for name in map_names(")
    open_clip_model = tiny_open_clip(layers=8)
    x = pixels(2, 64)
    text_embeddings = torch.randn(3, open_clip_model.visual.output_dim, generator=torch.Generator().manual_seed(1))
    scope = {"cliplens": cliplens, "torch": torch, "model": cliplens.wrap(open_clip_model), "x": x,
             "text_embeddings": text_embeddings}
    exec(compile(block, page, "exec"), scope)
    raw = scope["raw"]
    assert set(map_names(second_backbone=False)) <= set(raw) and "naclip_no_prior" in raw
    for name, r in raw.items():
        if not type(get_map("naclip" if name == "naclip_no_prior" else name)).__module__.startswith("cliplens."):
            continue  # a method another test registered
        grid = {"uniform": (1, 1), "gaussian": (64, 64), "nothing": (1, 1)}.get(name, (4, 4))
        assert r.shape == (2, 3, *grid) and torch.isfinite(r).all(), name
        assert r.grad_fn is None, name


def test_store_snippet(tmp_path):
    from cliplens.datasets import load_toy
    from cliplens.store import StoreSettings, build_store

    block, page = _block("store.head_terms(images=range(1000)")
    build_store(cliplens.load("toy"), load_toy("toy:label=shape,n=12,seed=1"), tmp_path / "store",
                settings=StoreSettings(chunk_size=5, batch_size=6))
    scope: dict = {}
    code = block.replace('"store/"', f'r"{tmp_path / "store"}"').replace("range(1000)", "range(12)")
    exec(compile(code, page, "exec"), scope)
    assert scope["terms"].shape == (12, 4, 4, 128) and scope["labels"].shape == (12,) and len(scope["values"]) == 12


def test_every_command_and_package_is_in_the_docs():
    """The command-line guide names every command (the generated CLI reference lists them by construction), and
    the layout page names every package."""
    import click

    from cliplens.cli import main

    cli_block = (DOCS / "cli" / "index.md").read_text(encoding="utf-8")
    commands = []
    for name, cmd in main.all_commands().items():
        if isinstance(cmd, click.Group):
            commands += [f"cliplens {name} {sub}" for sub in cmd.commands]
        else:
            commands.append(f"cliplens {name}")
    for c in commands:
        group, _, sub = c.removeprefix("cliplens ").partition(" ")
        assert f"cliplens {group}" in cli_block, f"{c!r} is not in docs/cli/index.md"
        assert not sub or sub in cli_block, f"{c!r} is not in docs/cli/index.md"
    layout = (DOCS / "development" / "layout.md").read_text(encoding="utf-8")
    src = Path(cliplens.__file__).parent
    for pkg in sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file()):
        assert f"  {pkg}/" in layout, f"package {pkg}/ is not in docs/development/layout.md"


@pytest.mark.parametrize("page", pages(), ids=_name)
def test_no_paragraph_stops_mid_sentence(page):
    """Every paragraph or bullet of prose (outside code, tables, headings and markers) ends with punctuation."""
    lines = page.read_text(encoding="utf-8").split("\n")
    code, directive, cut = False, False, []
    for i, line in enumerate(lines):
        if line.startswith("```"):
            code = not code
            continue
        directive = line.startswith("::: ") or (directive and line.startswith("    "))  # mkdocstrings and options
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if code or directive or not line.strip() or following.strip() or line.startswith(("#", "|", "<!--")):
            continue
        if not line.rstrip().endswith((".", ":", ")", "!", "?", "`", "*")):
            cut.append(f"line {i + 1}: …{line[-50:]}")
    assert not cut, cut


def test_family_snippet_runs_and_holds():
    """The README's SigLIP / EVA02 / RN50 snippet on random-weight models of the real widths (2 blocks)."""
    from tests.families import models

    block, page = _block("cliplens.wrap(siglip_model)")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scope = {"cliplens": cliplens, "torch": torch, "x": models.pixels(2, 224).float(),
                 "siglip_model": models.open_clip_timm("ViT-B-16-SigLIP", layers=2).float(),
                 "eva02_model": models.open_clip_timm("EVA02-B-16", layers=2).float(),
                 "rn50_model": models.open_clip_resnet("RN50").float()}
        exec(compile(block, page, "exec"), scope)
    finally:
        torch.set_num_threads(before)
    assert scope["pool"].shape == (2, 32, 50, 1024) and scope["heads"].shape == (2, 2, 197, 12, 512)
    assert scope["lumped"].shape == (2, 768) and scope["layers"].shape == (2, 3, 768)


def _in_order(page: Path) -> bool:
    return page.relative_to(ROOT).as_posix() in RUN_IN_ORDER


#: what each page's blocks must leave behind (beyond running without an error)
PAGE_CHECKS = {
    "README.md": lambda s: s["scores"].per_head().shape == (1, 6, 4, 2) and s["dec"].check() < 1e-5,
    "docs/tutorials/explain-a-photo.md": lambda s: s["overlay"].shape[0] == 3 and s["scores"].total.shape == (1, 2),
    "docs/tutorials/heads-and-layers.md": lambda s: s["per_head"].shape == (1, 6, 4, 3) and s["dec"].check() < 1e-5,
    "docs/tutorials/segmentation.md": lambda s: s["result"].images == 8 and 0 <= s["result"].miou <= 100
    and set(s["seg"].present()) <= {"purple diamond", "cyan square", "green heart"},
    "docs/tutorials/data-set-analyses.md": lambda s: len(s["study"]["curve"]) == 6
    and [h.name for h in s["spans"].heads] == ["L5.H1", "L5.H2"] and all(len(h.texts) == 3 for h in s["spans"].heads),
    "docs/tutorials/surgery-and-sam.md": lambda s: s["maps"][0].raw.shape == (3, 8, 8) and s["parts"].labels[0] == "start"
    and len(s["points"].points) == len(s["points"].labels),
    "docs/concepts/targets.md": lambda s: s["maps"].settings["contrast"] == "others",
    "docs/how-to/add-a-method.md": lambda s: s["maps"].settings["method"] == "sharp-similarity"
    and s["maps"][0].raw.shape == (2, 8, 8),
    "docs/how-to/add-a-data-set.md": lambda s: s["load_numbered"].__name__ == "load_numbered",
}


@pytest.mark.parametrize("page", [p for p in pages() if _in_order(p)], ids=_name)
def test_pages_run_in_order(page, tmp_path, monkeypatch):
    """Every Python block of the README and of a tutorial, concept or how-to page runs, in order, in one scope, in
    a folder holding only a toy-world scene (`scene.png`), on the embedded toy model; then what the page's blocks
    computed is checked."""
    from cliplens.datasets.registry import REGISTRY
    from cliplens.maps.base import _REGISTRY, map_names

    blocks = _page_blocks(page)
    assert blocks, f"{_name(page)} is run in order but has no Python block"
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    monkeypatch.chdir(tmp_path)
    Image.fromarray(render_scene(sample_scene(0, 0))[0]).save(tmp_path / "scene.png")
    map_names()  # the built-in methods are registered on first use: before the snapshot
    maps_before, sets_before = set(_REGISTRY), set(REGISTRY)
    scope: dict = {}
    try:
        for block in blocks:
            exec(compile(block, _name(page), "exec"), scope)
        rel = page.relative_to(ROOT).as_posix()
        assert PAGE_CHECKS[rel](scope), f"{rel}: its blocks ran but did not compute what the page says"
        if rel == "docs/how-to/add-a-data-set.md":  # its last line, run: the layout opens by name, options typed
            (tmp_path / "photos").mkdir()
            for i in range(4):
                Image.new("RGB", (8, 8)).save(tmp_path / "photos" / f"{i}.png")
            data = scope["open_dataset"](str(tmp_path / "photos"), layout="numbered", every="2")
            assert len(data) == 2 and data.class_names == ["even", "odd"]
    finally:  # what the pages registered is not left to other tests
        for name in set(_REGISTRY) - maps_before:
            _REGISTRY.pop(name)
        for key in set(REGISTRY) - sets_before:
            REGISTRY.pop(key)


def test_every_python_block_is_executed():
    """A Python block is on a page run in order, holds the marker of a test above, or is on a page another test
    file runs (it names the page's path)."""
    others = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py")
                       if p.resolve() != Path(__file__).resolve())
    missed = [f"{_name(page)}: {block.splitlines()[0]!r}" for page in pages() for block in _page_blocks(page)
              if not _in_order(page) and not any(m in block for m in SNIPPET_MARKERS)
              and _name(page) not in others]
    assert not missed, f"Python blocks no test runs: {missed}"


def test_readme_is_a_front_page():
    """At most 12 KB, the two commands exactly as `.ci/run` and a fresh clone use them, its picture small, and
    every relative link to a file that exists."""
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024, f"README.md is {len(text.encode())} bytes"
    two = text[text.index("## The two commands"):]
    assert ("python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install . && "
            "cliplens demo") in two
    assert 'python3.11 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && ruff check && pytest' in two
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert any(link.endswith(".png") for link in links)
    for link in links:
        target = ROOT / link
        assert target.is_file(), f"README links to {link}, which is not in the repository"
        if target.suffix == ".png":
            assert target.stat().st_size <= 150 * 1024, f"{link} is {target.stat().st_size} bytes"


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the body rows of the first table under ``heading``."""
    section = text[text.index(heading):]
    rows = []
    for line in section.split("\n")[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]  # without the header


def test_papers_numbers_in_the_readme_are_the_protocol_pages():
    """The README's mean mIoU per paper is the mean column of the protocol page's per-set table, row for row."""
    readme = {r[0]: r[1] for r in _table_rows(README.read_text(encoding="utf-8"), "## Each paper's table")}
    protocol = _table_rows((DOCS / "evaluation" / "protocol.md").read_text(encoding="utf-8"),
                           "## The field's table in one command")
    assert len(protocol) >= 13 and all(len(r) == 11 for r in protocol)
    assert readme == {r[0]: r[9] for r in protocol}
