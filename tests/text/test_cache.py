"""The text-embedding cache: keyed by the text tower's weights and tokenizer, never a stale hit (a weight changed in
place, a wrapped or random-weight model, another tokenizer), damaged files ignored and rewritten, opt-outs."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

import cliplens
from cliplens.errors import InvalidInputError
from cliplens.maps.targets import Targets
from cliplens.text import cache as text_cache
from cliplens.text import zero_shot_classifier

NAMES = ["red circle", "blue square", "green star"]
TEMPLATES = ["a photo of a {}", "a drawing of a {}", "a picture of the {}"]


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """An empty cache folder of this test's own, the cache on."""
    monkeypatch.setenv(text_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(text_cache.MODE_ENV, raising=False)
    return tmp_path / "cache" / "text"


def counting(adapter):
    """Count the texts the adapter's text tower embeds."""
    calls: list[int] = []
    inner = adapter._encode_tokens

    def encode(tokens):
        calls.append(int(tokens.shape[0]))
        return inner(tokens)

    adapter._encode_tokens = encode
    return calls


def oc_model(seed: int = 0):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(seed)
    vision = dict(image_size=32, patch_size=16, width=32, layers=1, head_width=16)
    text = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    return open_clip.CLIP(16, vision_cfg=vision, text_cfg=text).eval()


def toy(path):
    return cliplens.load("toy", pretrained=str(path))


def entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- hits and misses -------------------------------------------------------------------------------------

def test_memory_then_disk_hit(folder, random_toy_weights):
    a = toy(random_toy_weights)
    calls = counting(a)
    first = zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 9 and len(entries(folder)) == 2  # KEY.safetensors and KEY.json
    again = zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 9 and torch.equal(again, first)  # from memory
    again.zero_()  # a caller's tensor is its own
    assert torch.equal(zero_shot_classifier(a, NAMES, TEMPLATES), first)
    b = toy(random_toy_weights)  # another process would see the same: a new adapter, the same weights
    calls_b = counting(b)
    assert torch.equal(zero_shot_classifier(b, NAMES, TEMPLATES), first) and calls_b == []  # from disk
    meta = json.loads(next(folder.glob("*.json")).read_text())
    assert meta["about"]["names"] == NAMES and meta["about"]["templates"] == TEMPLATES
    assert meta["about"]["text"] == a.text_fingerprint() and meta["shape"] == [3, first.shape[1]]


def test_key_covers_classes_templates_and_normalisation(folder, random_toy_weights):
    a = toy(random_toy_weights)
    calls = counting(a)
    zero_shot_classifier(a, NAMES, TEMPLATES)
    zero_shot_classifier(a, NAMES[:2], TEMPLATES)
    zero_shot_classifier(a, NAMES, TEMPLATES[:1])
    Targets.texts(NAMES).embed(a)  # the texts as they are: another kind of entry
    Targets.classes(NAMES, templates=TEMPLATES).embed(a, with_empty=True)  # the classes: a hit; the empty prompt
    assert sum(calls) == 9 + 6 + 3 + 3 + 3 and len(entries(folder)) == 2 * 5


def test_a_text_weight_changed_in_place_is_a_miss(folder, random_toy_weights):
    a = toy(random_toy_weights)
    before = zero_shot_classifier(a, NAMES, TEMPLATES)
    vision_only = a.text_fingerprint()
    with torch.no_grad():
        a.model.blocks[0].fc1.weight.add_(1.0)  # the image tower: not part of the text side
    assert a.text_fingerprint() == vision_only
    with torch.no_grad():
        a.model.text_blocks[0].fc1.weight[0, 0] += 0.5  # one text weight, in place
    assert a.text_fingerprint() != vision_only
    calls = counting(a)
    after = zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 9 and not torch.allclose(after, before)
    fresh = toy(random_toy_weights)  # the same edit on fresh weights, computed without any cache
    with torch.no_grad():
        fresh.model.text_blocks[0].fc1.weight[0, 0] += 0.5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(text_cache.MODE_ENV, "off")
        assert torch.allclose(zero_shot_classifier(fresh, NAMES, TEMPLATES), after, atol=1e-6)


def test_load_state_dict_and_another_tokenizer_are_misses(folder):
    open_clip = pytest.importorskip("open_clip")
    model = oc_model()
    a = cliplens.wrap(model)
    key = a.text_fingerprint()
    calls = counting(a)
    zero_shot_classifier(a, NAMES, TEMPLATES)
    other = oc_model(seed=1)  # random weights drawn again: other weights, never the first one's entry
    model.load_state_dict(other.state_dict())
    assert a.text_fingerprint() != key
    out = zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 18
    b = cliplens.wrap(other)
    assert b.text_fingerprint() == a.text_fingerprint() and torch.allclose(
        zero_shot_classifier(b, NAMES, TEMPLATES), out, atol=1e-6)
    a.tokenizer = open_clip.SimpleTokenizer(context_length=32)  # another context: other token ids
    assert a.text_fingerprint() not in (None, key, b.text_fingerprint())


def test_random_weight_models_never_share_entries(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = cliplens.wrap(oc_model(0)), cliplens.wrap(oc_model(2))
    za, zb = zero_shot_classifier(a, NAMES, TEMPLATES), zero_shot_classifier(b, NAMES, TEMPLATES)
    assert a.text_fingerprint() != b.text_fingerprint() and not torch.allclose(za, zb)
    assert len(entries(folder)) == 4


# ---- damaged files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "other-values", "json-garbage", "json-edited", "no-json"])
def test_a_damaged_entry_is_ignored_and_rewritten(folder, random_toy_weights, damage):
    a = toy(random_toy_weights)
    good = zero_shot_classifier(a, NAMES, TEMPLATES)
    (data,) = folder.glob("*.safetensors")
    meta = data.with_suffix(".json")
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-40])
    elif damage == "other-values":  # a well-formed file with other numbers: the checksum gives it away
        from safetensors.torch import save

        data.write_bytes(save({"embeddings": torch.zeros_like(good)}))
    elif damage == "json-garbage":
        meta.write_text("{not json")
    elif damage == "json-edited":  # the description claims other classes
        m = json.loads(meta.read_text())
        m["about"]["names"] = ["cat", "dog", "car"]
        meta.write_text(json.dumps(m))
    else:
        meta.unlink()
    b = toy(random_toy_weights)
    calls = counting(b)
    assert torch.allclose(zero_shot_classifier(b, NAMES, TEMPLATES), good, atol=1e-6)
    assert sum(calls) == 9  # recomputed, not read
    c = toy(random_toy_weights)
    calls = counting(c)
    assert torch.equal(zero_shot_classifier(c, NAMES, TEMPLATES), zero_shot_classifier(b, NAMES, TEMPLATES))
    assert calls == []  # rewritten, and read back
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_folder_only_means_no_cache(tmp_path, monkeypatch, random_toy_weights):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(text_cache.CACHE_ENV, str(blocker))
    a = toy(random_toy_weights)
    assert zero_shot_classifier(a, NAMES, TEMPLATES).shape == (3, a.vision.embed_dim)


def test_pruned_least_recently_used_first(folder, random_toy_weights):
    a = toy(random_toy_weights)
    for i in range(3):
        zero_shot_classifier(a, NAMES, TEMPLATES[i:i + 1])
    keys = sorted({p.name.split(".")[0] for p in folder.iterdir()}, key=lambda k: (folder / f"{k}.json").stat().st_mtime)
    for age, k in enumerate(keys):  # oldest first
        for suffix in (".json", ".safetensors"):
            os.utime(folder / f"{k}{suffix}", (1000 + age, 1000 + age))
    size = sum(p.stat().st_size for p in folder.iterdir())
    text_cache._prune(folder, limit=size - 1)
    assert {p.name.split(".")[0] for p in folder.iterdir()} == set(keys[1:])
    (folder / "notes.txt").write_text("not ours")
    text_cache._prune(folder, limit=0)
    assert entries(folder) == ["notes.txt"]


# ---- opting out, and where ---------------------------------------------------------------------------------

def test_memory_only_and_off(folder, monkeypatch, random_toy_weights):
    monkeypatch.setenv(text_cache.MODE_ENV, "memory")
    a = toy(random_toy_weights)
    calls = counting(a)
    zero_shot_classifier(a, NAMES, TEMPLATES)
    zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 9 and entries(folder) == []
    monkeypatch.setenv(text_cache.MODE_ENV, "off")
    zero_shot_classifier(a, NAMES, TEMPLATES)
    zero_shot_classifier(a, NAMES, TEMPLATES)
    assert sum(calls) == 27 and entries(folder) == []
    monkeypatch.setenv(text_cache.MODE_ENV, "sometimes")
    with pytest.raises(InvalidInputError, match="CLIPLENS_TEXT_CACHE='sometimes'.*'memory'.*'off'"):
        zero_shot_classifier(a, NAMES, TEMPLATES)


def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(text_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert text_cache.cache_folder() == tmp_path / "xdg" / "cliplens" / "text"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert text_cache.cache_folder() == tmp_path / "home" / ".cache" / "cliplens" / "text"
    monkeypatch.setenv(text_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert text_cache.cache_folder() == tmp_path / "mine" / "text"


def test_callable_templates_and_unknown_models_are_not_cached(folder, random_toy_weights):
    a = toy(random_toy_weights)
    calls = counting(a)
    fns = [lambda n: f"a photo of a {n}"]
    zero_shot_classifier(a, NAMES, fns)
    zero_shot_classifier(a, NAMES, fns)
    assert sum(calls) == 6 and entries(folder) == []


# ---- warnings --------------------------------------------------------------------------------------------

def test_unknown_words_are_warned_on_a_disk_hit_not_on_a_memory_hit(folder, random_toy_weights):
    names = ["red zebra", "blue square"]

    def vocabulary_warnings(adapter):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            zero_shot_classifier(adapter, names, ["a photo of a {}"])
        return [str(w.message) for w in caught if "vocabulary" in str(w.message)]

    a = toy(random_toy_weights)
    first = vocabulary_warnings(a)
    assert len(first) == 1 and "'zebra'" in first[0]
    assert vocabulary_warnings(a) == []  # this adapter said it already
    assert vocabulary_warnings(toy(random_toy_weights)) == first  # read from disk, still said
