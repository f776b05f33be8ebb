import numpy as np
import torch

from cliplens.experiments.spurious import (
    DEFAULT_SPEC,
    class_prompts,
    group_accuracies,
    make_spurious_split,
    spurious_training_batch,
)
from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig
from cliplens.toyworld.scenes import render_scene
from cliplens.toyworld.tokenizer import ToyTokenizer


def test_train_mix_is_biased():
    s = make_spurious_split(2000, seed=1, split="train")
    assert abs(float((s.labels == s.backgrounds).mean()) - DEFAULT_SPEC.p_major) < 0.02
    assert set(np.unique(s.groups)) == {0, 1, 2, 3}
    for sc, lab, bg in zip(s.scenes[:50], s.labels[:50], s.backgrounds[:50], strict=True):
        assert sc.count == 1
        assert sc.objects[0].shape == DEFAULT_SPEC.class_shapes[lab]
        assert sc.bg_kind == DEFAULT_SPEC.bg_kinds[bg]


def test_test_split_is_balanced_and_deterministic():
    a = make_spurious_split(40, seed=2, split="test")
    b = make_spurious_split(40, seed=2, split="test")
    assert list(a.group_counts().values()) == [10, 10, 10, 10]
    assert [x.to_json() for x in a.scenes] == [x.to_json() for x in b.scenes]
    assert np.array_equal(render_scene(a.scenes[3])[0], render_scene(b.scenes[3])[0])
    tr = make_spurious_split(40, seed=2, split="train")
    assert a.scenes[0].to_json() != tr.scenes[0].to_json()


def test_training_batch_captions_name_shape_only():
    scenes, caps = spurious_training_batch(0, 3, 16, caption_by="shape")
    assert len(scenes) == len(caps) == 16
    for sc, c in zip(scenes, caps, strict=True):
        assert sc.objects[0].shape in c.text
        assert "background" not in c.text and sc.bg_kind not in c.text
    # context captions name the shape that usually goes with the background
    scenes, caps, facts = spurious_training_batch(0, 0, 200, return_fact_scenes=True)
    minority = 0
    for sc, c, f in zip(scenes, caps, facts, strict=True):
        named = DEFAULT_SPEC.class_shapes[DEFAULT_SPEC.bg_kinds.index(sc.bg_kind)]
        assert named in c.text and f.objects[0].shape == named and f.bg_kind == sc.bg_kind
        minority += sc.objects[0].shape != named
    assert 0 < minority < 30


def test_group_accuracies_keys():
    torch.manual_seed(0)
    tok = ToyTokenizer(context_length=48)
    m = ToyCLIP(ToyCLIPConfig(image_size=32, width=32, layers=1, heads=2, embed_dim=16, text_width=32,
                              text_layers=1, text_heads=2, context_length=48, vocab_size=len(tok)))
    r = group_accuracies(m, tok, n=16, seed=0)
    assert len(r["groups"]) == 4 and r["worst"] == min(r["groups"].values())
    assert abs(r["average"] - np.mean(list(r["groups"].values()))) < 1e-9
    assert r["gap"] >= 0 and r["prompts"] == class_prompts()
    assert tok.unknown_words(r["prompts"]) == []


def test_finetune_spurious_tiny(tmp_path):
    import json

    from cliplens.experiments.train import finetune_spurious
    from cliplens.toyworld.model import load_toy_clip, save_toy_clip

    torch.manual_seed(0)
    tok = ToyTokenizer(context_length=48)
    m = ToyCLIP(ToyCLIPConfig(image_size=64, width=32, layers=1, heads=2, embed_dim=16, text_width=32,
                              text_layers=1, text_heads=2, context_length=48, vocab_size=len(tok)))
    src = tmp_path / "base.safetensors"
    save_toy_clip(m, str(src), tok.vocab)
    out = tmp_path / "sp.safetensors"
    s = finetune_spurious(str(src), str(tmp_path / "run"), steps=2, batch_size=8, export=str(out),
                          progress=False, n_eval=8)
    assert s["steps_done"] == 2
    assert set(s["spurious"]) >= {"before", "after"} and len(s["spurious"]["after"]["groups"]) == 4
    m2, _ = load_toy_clip(out)
    assert m2.config.name == "toy-clip-spurious"
    assert not torch.equal(m2.proj, m.proj)  # it was actually trained
    assert json.loads(out.with_suffix(".json").read_text())["training"]["steps_done"] == 2
