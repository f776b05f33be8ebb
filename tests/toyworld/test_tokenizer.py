import pytest
import torch

from cliplens.toyworld.tokenizer import SPECIALS, ToyTokenizer, build_vocab, split_words


def test_split_and_lower():
    assert split_words("A Red circle, and a STAR!") == ["a", "red", "circle", ",", "and", "a", "star", "!"]


def test_encode_round_trip():
    tok = ToyTokenizer(context_length=16)
    t = tok.encode(["a red circle, and a star", "two shapes"])
    assert t.shape == (2, 16) and t.dtype == torch.long
    assert t[0, 0] == tok.sot_id
    assert tok.decode(t[0]) == "a red circle, and a star"
    assert tok.decode(t[1]) == "two shapes"
    n = tok.count_tokens("two shapes")[0]
    assert n == 4 and t[1, n - 1] == tok.eot_id and (t[1, n:] == tok.pad_id).all()


def test_truncation_keeps_eot():
    tok = ToyTokenizer(context_length=6)
    text = "a small red circle at the top left"
    assert tok.count_tokens([text]) == [10]
    t = tok.encode(text)
    assert t.shape == (1, 6)
    assert t[0, -1] == tok.eot_id and t[0, 0] == tok.sot_id
    assert tok.decode(t[0]) == "a small red circle"


def test_unknown_words():
    tok = ToyTokenizer()
    t = tok.encode("a zebra circle")
    assert t[0, 2] == tok.unk_id
    assert tok.unknown_words(["a zebra circle", "a Zebra and a unicorn"]) == ["zebra", "unicorn"]
    assert tok.unknown_words("a red circle") == []


def test_vocab_and_persistence(tmp_path):
    v = build_vocab()
    assert tuple(v[:4]) == SPECIALS and len(v) == len(set(v))
    tok = ToyTokenizer(v, context_length=20)
    tok.save(tmp_path / "v.json")
    back = ToyTokenizer.load(tmp_path / "v.json")
    assert back.vocab == tok.vocab and back.context_length == 20
    assert torch.equal(back.encode("a red star"), tok.encode("a red star"))
    with pytest.raises(ValueError):
        ToyTokenizer(["a", "b"])
