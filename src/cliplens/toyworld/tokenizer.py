"""A word-level tokenizer for the toy world's captions.

Lower-cases, splits words and punctuation (each punctuation mark is its own token), maps words
to ids from a fixed vocabulary (built from the caption grammar and shipped with the weights),
unknown words to ``<unk>``. Every encoded text is ``<sot> words... <eot>`` padded with ``<pad>``
to ``context_length``; texts that are too long are truncated and still end with ``<eot>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from cliplens.toyworld.captions import (
    GENERIC,
    GENERIC_PLURAL,
    NUMBER_WORDS,
    PLURALS,
    POSITION_PHRASES,
    PREFIXES,
    PROMPT_SETS,
)
from cliplens.toyworld.scenes import BG_COLOURS, BG_KINDS, COLOURS, SHAPES, SIZES

__all__ = ["ToyTokenizer", "split_words", "SPECIALS", "build_vocab", "grammar_words"]

PAD, SOT, EOT, UNK = "<pad>", "<sot>", "<eot>", "<unk>"
SPECIALS = (PAD, SOT, EOT, UNK)  # ids 0, 1, 2, 3
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case and split into words and single punctuation marks."""
    return _WORD.findall(text.lower())


def grammar_words() -> list[str]:
    """Every word the grammar can produce (sorted), for building the tokenizer vocabulary."""
    words: set[str] = set()

    def add(text: str) -> None:
        words.update(split_words(text))

    for p in PREFIXES:
        add(p)
    for w in (*COLOURS, *SHAPES, *PLURALS.values(), *SIZES, *BG_COLOURS, *BG_KINDS, *GENERIC,
              *GENERIC_PLURAL.values(), *NUMBER_WORDS.values(), *POSITION_PHRASES.values()):
        add(w)
    add("a an of on at the in and with background , : shapes and objects")
    # words other modules' prompts commonly use with the toy model
    add("photo picture image drawing rendering this is there are scene empty nothing spurious")
    for ps in PROMPT_SETS.values():
        for t in ps.texts:
            add(t)
    return sorted(words)



def build_vocab(words: Iterable[str] | None = None) -> list[str]:
    """Specials followed by the sorted grammar words (default: the caption grammar's)."""
    if words is None:
        words = grammar_words()
    rest = sorted(set(words) - set(SPECIALS))
    return list(SPECIALS) + rest


class ToyTokenizer:
    """Word-level tokenizer: ``encode(texts) -> LongTensor [B, context_length]``."""

    def __init__(self, vocab: Sequence[str] | None = None, context_length: int = 40) -> None:
        vocab = list(vocab) if vocab is not None else build_vocab()
        if tuple(vocab[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate entries")
        if context_length < 2:
            raise ValueError("context_length must be at least 2 (<sot> and <eot>)")
        self.vocab = vocab
        self.context_length = int(context_length)
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.sot_id, self.eot_id, self.unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        """Untruncated ids, ``<sot>`` and ``<eot>`` included."""
        return [self.sot_id] + [self.index.get(w, self.unk_id) for w in split_words(text)] + [self.eot_id]

    def encode(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Token ids ``[B, ctx]`` (truncated texts keep their final ``<eot>``)."""
        if isinstance(texts, str):
            texts = [texts]
        ctx = int(context_length or self.context_length)
        out = torch.full((len(texts), ctx), self.pad_id, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.ids(t)
            if len(ids) > ctx:
                ids = ids[: ctx - 1] + [self.eot_id]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    __call__ = encode

    def count_tokens(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text needs, ``<sot>``/``<eot>`` included, before truncation."""
        if isinstance(texts, str):
            texts = [texts]
        return [len(split_words(t)) + 2 for t in texts]

    def unknown_words(self, texts: str | Sequence[str]) -> list[str]:
        """Distinct out-of-vocabulary words in ``texts`` (in order of first appearance)."""
        if isinstance(texts, str):
            texts = [texts]
        seen: dict[str, None] = {}
        for t in texts:
            for w in split_words(t):
                if w not in self.index:
                    seen.setdefault(w, None)
        return list(seen)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> text (specials dropped, stops at ``<eot>``); punctuation re-attached."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        words: list[str] = []
        for i in ids:
            if i == self.eot_id:
                break
            if i in (self.pad_id, self.sot_id):
                continue
            words.append(self.vocab[i])
        text = " ".join(words)
        return re.sub(r" ([,.:;!?])", r"\1", text)

    # ---- persistence
    def to_json(self) -> str:
        return json.dumps({"vocab": self.vocab, "context_length": self.context_length})

    @classmethod
    def from_json(cls, s: str) -> ToyTokenizer:
        d = json.loads(s)
        return cls(d["vocab"], d["context_length"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ToyTokenizer:
        return cls.from_json(Path(path).read_text())
