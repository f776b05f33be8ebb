"""The CLIP ViTs users run, at their real shapes (OpenAI ViT-B/32 and ViT-L/14@336px, MetaCLIP, MetaCLIP 2, DFN;
open_clip and transformers; :mod:`tests.models.shapes`): each loads as users load it, its forward equals the
source's at its native size, its decomposition sums to the embedding there, and every map method runs on it."""

from __future__ import annotations

import pytest
import torch

from cliplens.maps import get_map, map_names
from cliplens.maps.base import map_class
from tests.models.shapes import SHAPES


@pytest.fixture(scope="module", params=sorted(SHAPES), ids=str)
def shaped(request):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/families/conftest.py
    shape = SHAPES[request.param]
    yield shape, shape.build()
    torch.set_num_threads(before)


def _method(name: str, layers: int):
    """Each method with its defaults, the ones that count blocks from the end cut to the model's depth."""
    if name in ("surgery", "gem"):
        return get_map(name, blocks=min(6, layers))
    if name == "resclip" and layers < 4:  # its reference layers are mid-depth ones, before the last block
        return get_map(name, reference_layers=[0])
    return get_map(name)


def test_the_shape_loads_decomposes_and_runs_every_map_method(shaped):
    shape, model = shaped
    v = model.vision
    assert (v.grid_size, v.width, v.num_heads, v.embed_dim) == (shape.grid, shape.width, shape.heads,
                                                                shape.embed_dim)
    assert {b.activation for b in v.blocks} == {shape.activation}
    x = torch.randn(2, 3, shape.image, shape.image, generator=torch.Generator().manual_seed(0))
    want = model.source_encode_image(x)
    got = model.encode_image(x)
    assert (got - want).norm() <= 1e-5 * want.norm()
    assert model.decompose(x).check() <= 1e-5
    # every method on a 4×4-patch input (the positions resized by each method's rule): what runs at the native grid
    # runs here, in a fraction of the time of a 27×27 one
    size = 4 * shape.patch
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))
    for name in (n for n in map_names(baseline=False, second_backbone=False) if map_class(n).__module__.startswith("cliplens.")):
        maps = _method(name, v.num_layers)(model, [image], ["a dog", "a cat"], fit="squash", size=size)
        assert maps.raw.shape == (1, 2, 4, 4) and torch.isfinite(maps.raw).all(), name
