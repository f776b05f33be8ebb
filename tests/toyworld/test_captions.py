import numpy as np
import pytest

from cliplens.toyworld.captions import (
    PLURALS,
    PROMPT_SETS,
    consistency_matrix,
    describe,
    full_caption,
    hard_negative,
    perturb_scene,
    sample_caption,
    scene_facts,
)
from cliplens.toyworld.scenes import BG_KINDS, COLOURS, SHAPES, sample_scene
from cliplens.toyworld.tokenizer import ToyTokenizer, split_words


def _mentioned(words, vocab):
    return {w for w in words if w in vocab}


@pytest.mark.parametrize("i", range(40))
def test_caption_words_come_from_scene(i):
    sc = sample_scene(5, i)
    rng = np.random.default_rng(i)
    colours = {o.colour for o in sc.objects}
    shapes = {o.shape for o in sc.objects}
    plural_to_shape = {v: k for k, v in PLURALS.items()}
    for _ in range(10):
        cap = sample_caption(sc, rng)
        words = split_words(cap.text)
        assert _mentioned(words, COLOURS) <= colours, cap.text
        said = {plural_to_shape.get(w, w) for w in words}
        assert _mentioned(said, SHAPES) <= shapes, cap.text
        kinds = _mentioned(words, BG_KINDS)
        assert kinds <= {sc.bg_kind}, cap.text
        # the facts a caption claims hold in its scene
        assert cap.facts <= scene_facts(sc), cap.text


def test_full_caption_mentions_everything():
    sc = sample_scene(2, 9, count=3)
    text = describe(sc)
    for o in sc.objects:
        assert f"{o.size} {o.colour} {o.shape}" in text
    assert f"{sc.bg_colour} {sc.bg_kind} background" in text
    assert full_caption(sc).facts <= scene_facts(sc)


def test_consistency_matrix_semantics():
    a = sample_scene(0, 0, count=1, colours="red", shapes="circle", bg_kind="plain")
    b = sample_scene(0, 1, count=2, colours="red", shapes="circle", bg_kind="dotted")
    c = sample_scene(0, 2, count=1, colours="blue", shapes="square", bg_kind="plain")
    caps = {
        "a red circle": frozenset({("obj", "red", "circle", None, None)}),
        "two red circles": frozenset({("count", "red", "circle", 2)}),
        "a plain background": frozenset({("bgkind", "plain")}),
        "a purple star": frozenset({("obj", "purple", "star", None, None)}),
    }
    m = consistency_matrix([scene_facts(s) for s in (a, b, c)], list(caps.values()))
    assert m.tolist() == [
        [True, False, True, False],
        [True, True, False, False],
        [False, False, True, False],
    ]


def test_hard_negatives_are_false_of_their_scene():
    rng = np.random.default_rng(0)
    false = 0
    for i in range(100):
        sc = sample_scene(4, i)
        neg = hard_negative(sc, rng)
        false += not (neg.facts <= scene_facts(sc))
    assert false >= 95
    # a colour swap keeps the multiset of colours but changes the binding
    sc = sample_scene(0, 0, count=2, colours=("red",), shapes=("star",))
    sc.objects[1].colour = "blue"
    for _ in range(20):
        p = perturb_scene(sc, rng)
        assert sc.objects[1].colour == "blue"  # the original is untouched
        assert p != sc


def test_prompt_sets_cover_classes_and_are_in_vocab():
    tok = ToyTokenizer()
    for name, ps in PROMPT_SETS.items():
        assert len(ps.texts) == len(ps.classes) == len(set(ps.texts)), name
        assert tok.unknown_words(list(ps.texts)) == []
    assert PROMPT_SETS["colour"].texts[COLOURS.index("orange")] == "a photo of an orange shape"


def test_grammar_in_vocab_and_fits_context():
    tok = ToyTokenizer(context_length=48)
    rng = np.random.default_rng(1)
    texts = []
    for i in range(300):
        sc = sample_scene(9, i)
        texts += [sample_caption(sc, rng).text, hard_negative(sc, rng).text]
        texts += [full_caption(sc, rng, prefix="a rendering of ", form=f).text for f in range(3)]
    assert tok.unknown_words(texts) == []
    assert max(tok.count_tokens(texts)) <= 48


@pytest.mark.parametrize("factor", ["shape", "bg_kind", "position", "size", "count", "colour"])
def test_factor_captions_true_and_single_factor(factor):
    from cliplens.toyworld.captions import factor_caption

    rng = np.random.default_rng(3)
    for i in range(30):
        sc = sample_scene(8, i)
        cap = factor_caption(sc, rng, factor)
        assert cap.facts <= scene_facts(sc), cap.text
        words = set(split_words(cap.text))
        if factor != "colour":
            assert not words & set(COLOURS), cap.text
        if factor not in ("shape",):
            assert not words & (set(SHAPES) | set(PLURALS.values())), cap.text
        if factor != "bg_kind":
            assert "background" not in words
