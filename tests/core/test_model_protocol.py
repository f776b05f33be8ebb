"""The model protocol and the adapter agree: every member of :class:`ImageTextModel` is on
:class:`CLIPAdapter` with the same parameters, and every loaded model (each family) is one."""

from __future__ import annotations

import inspect

import pytest

import cliplens
from cliplens.core.model import ImageTextModel
from cliplens.models.base import CLIPAdapter
from tests.conftest import tiny_open_clip


def _members() -> dict[str, object]:
    return {name: value for name, value in vars(ImageTextModel).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _parameters(function: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]  # type: ignore[arg-type]


def test_every_member_is_the_adapters_with_its_parameters():
    members = _members()
    assert {"vision", "preprocess_config", "encode_text", "run", "decompose"} <= set(members)
    for name, member in members.items():
        ours = inspect.getattr_static(CLIPAdapter, name)
        assert isinstance(ours, property) == isinstance(member, property), name
        if isinstance(member, property):
            continue
        declared, actual = _parameters(member), _parameters(ours)
        assert [(n, k) for n, k, _ in declared] == [(n, k) for n, k, _ in actual], name
        for (n, _, default), (_, _, real) in zip(declared, actual, strict=True):
            assert default is Ellipsis or default == real, (name, n, default, real)
    for name in ImageTextModel.__annotations__:
        assert name in CLIPAdapter.__annotations__ or name in inspect.getsource(CLIPAdapter.__init__), name


def test_loaded_models_are_image_text_models(random_toy):
    assert isinstance(random_toy, ImageTextModel)
    assert isinstance(cliplens.wrap(tiny_open_clip()), ImageTextModel)
    assert not isinstance(tiny_open_clip(), ImageTextModel)  # the source model itself is not


def test_the_protocol_is_exported_where_models_are():
    from cliplens.models import ImageTextModel as from_models

    assert from_models is ImageTextModel
    with pytest.raises(TypeError):
        ImageTextModel()  # a protocol, not a class to build
