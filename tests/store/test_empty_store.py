"""A store that holds no images (every image of its data set skipped as unreadable): every command that reads it
says so in one paragraph, with the images skipped and why, instead of failing on a missing field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cliplens.errors import InvalidInputError
from cliplens.store import Store
from tests.cli.conftest import one_line, run, save_image


@pytest.fixture(scope="module")
def empty(random_toy_weights, tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("empty")
    for name in ("cat/a.png", "dog/b.png"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"not an image")
    (root / "list.csv").write_text("path,label,place\ncat/a.png,cat,land\ndog/b.png,dog,water\n")
    toy = ["--model", "toy", "--pretrained", str(random_toy_weights)]
    r = run("store", "build", root / "list.csv", *toy, "--out", root / "s", "--skip-bad")
    assert r.exit_code == 0, r.output
    return root / "s", toy


def test_the_store_says_it_holds_no_images_and_why(empty):
    st = Store(empty[0])
    assert len(st) == 0
    with pytest.raises(InvalidInputError, match="holds no images") as info:
        st.field("heads")
    msg = str(info.value)
    assert "cat/a.png: not an image file" in msg and "dog/b.png" in msg and "--skip-bad" in msg


def test_every_command_says_so(empty, tmp_path):
    store, toy = empty
    query = save_image(tmp_path / "q.png")
    for args in (["ablate", store], ["textspan", store, "--pool", "toy"], ["atlas", store, "--out", tmp_path / "a"],
                 ["retrieve", store, "--query", query, "--property", "place"],
                 ["debias", store, "--spurious", "place"]):
        r = run(*args)
        err = one_line(r.stderr)
        assert r.exit_code == 2 and "holds no images" in err and "cat/a.png: not an image file" in err, (args, r.output)
        assert "Traceback" not in r.output and "has no field" not in err
    r = run("store", "info", store)
    assert r.exit_code == 0 and "holds no images" in one_line(r.stdout) and "dog/b.png" in one_line(r.stdout)
