"""Issue 19, one meaning per parameter name: ``last=k`` is "the last k layers", ``layers=`` always layer indices
(negatives from the end); the old int ``layers=k`` (which meant the last k) is refused, never read as an index."""

from __future__ import annotations

import pytest
import torch

from cliplens.core.plan import select_layers
from cliplens.errors import InvalidInputError
from cliplens.maps import TextEmbeddings, get_map
from tests.conftest import pixels


def test_select_layers_is_the_one_rule():
    assert select_layers(6) is None
    assert select_layers(6, last=2) == [4, 5]
    assert select_layers(6, [-2, -1]) == [4, 5]
    assert select_layers(6, -1) == [5]
    assert select_layers(6, [0, 3]) == [0, 3]
    with pytest.raises(InvalidInputError, match=r"last=3.*layers=\[3\]"):
        select_layers(6, 3)
    with pytest.raises(InvalidInputError, match="not both"):
        select_layers(6, [1], last=1)
    with pytest.raises(InvalidInputError, match=r"1\.\.6"):
        select_layers(6, last=7)


def test_decompose_last_and_layers(random_toy):
    x = pixels(1, 64)
    last = random_toy.decompose(x, last=2)
    idx = random_toy.decompose(x, layers=[-2, -1])
    assert last.head_layers == idx.head_layers == (4, 5)
    torch.testing.assert_close(last.per_head(), idx.per_head())
    assert random_toy.decompose(x, layers=-1).head_layers == (5,)  # a negative index works
    assert random_toy.decompose(x, layers=[3]).head_layers == (3,)
    with pytest.raises(InvalidInputError, match=r"last=3"):  # the old meaning is not silently changed
        random_toy.decompose(x, layers=3)


def test_decomposition_map_takes_negative_layers_and_last(random_toy):
    """maps/decomposition.py's docstring promises negative ``layers``: ``layers=-1`` works (it raised before)."""
    x = pixels(1, 64)
    t = TextEmbeddings(torch.nn.functional.normalize(torch.randn(2, random_toy.vision.embed_dim), dim=-1), ("a", "b"))
    neg = get_map("decomposition", layers=-1).raw(random_toy, x, t)
    last = get_map("decomposition", last=1).raw(random_toy, x, t)
    idx = get_map("decomposition", layers=[5]).raw(random_toy, x, t)
    torch.testing.assert_close(neg, idx)
    torch.testing.assert_close(last, idx)
    assert not torch.allclose(idx, get_map("decomposition").raw(random_toy, x, t))  # not all layers
    with pytest.raises(InvalidInputError, match="not two of them"):
        get_map("decomposition", layers=[1], last=1)
