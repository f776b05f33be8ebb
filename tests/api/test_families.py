"""Issue 18 item 5: the entry points on the model families of issue 16 beyond CLIP ViTs. SigLIP (transformers
config, MAP head, no CLS token, no tokenizer) and an OpenAI ResNet (an opaque trunk read by an attention pool):
what works, and what says why not."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.errors import InvalidInputError, ModelLoadError, UnsupportedArchitectureError
from cliplens.maps import Maps, Targets, get_map
from cliplens.tasks.points import points_from_maps
from tests.families import models

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def siglip():
    cfg = transformers.SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=8))
    torch.manual_seed(0)
    return cliplens.wrap(models.perturb(transformers.SiglipModel(cfg).eval()))


def test_siglip_layers_last_textspan_and_maps_from_embeddings(siglip):
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert siglip.decompose(x, last=1).head_layers == siglip.decompose(x, layers=-1).head_layers == (2,)
    with pytest.raises(InvalidInputError, match="last=2"):
        siglip.decompose(x, layers=2)
    with pytest.raises(ModelLoadError, match="no tokenizer"):  # wrapped with no name: it says so, assumes nothing
        siglip.encode_text(["a dog"])
    # TEXTSPAN on its heads' outputs (the MAP head splits exactly per pooling head), texts as embeddings
    dec = siglip.decompose(x, spatial=False).normalized()
    pool = F.normalize(torch.randn(20, dec.per_head().shape[-1], generator=torch.Generator().manual_seed(1)), dim=-1)
    spans = cliplens.textspan(dec.per_head()[:, -1], pool, m=3)  # [N, heads, E] -> one span per head
    assert len(spans) == 2 and all(len(s.texts) == 3 and 0 < s.explained <= 1 + 1e-9 for s in spans)
    # maps from embeddings need no tokenizer; points from them land on the image
    emb = torch.randn(2, pool.shape[1], generator=torch.Generator().manual_seed(2))
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3))
    maps = get_map("decomposition")(siglip, [image], Targets.from_embeddings(emb, ["a", "b"], contrast="none"),
                                    normalization="raw")
    assert maps.raw.shape[:2] == (1, 2) and torch.isfinite(maps.raw).all()
    pts = points_from_maps(maps, "b")
    assert len(pts) > 0 and all(0 <= p[0] < 56 and 0 <= p[1] < 40 for p in pts.points)
    again = Maps.from_grids(maps.raw, image_size=(40, 56), labels=maps.labels)
    assert points_from_maps(again, "b").points == pts.points


def test_resnet_says_why_not_and_runs_what_it_can():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(32, vision_cfg=dict(layers=(1, 1, 1, 1), width=16, image_size=64, head_width=8),
                           text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rn = cliplens.wrap(models.perturb(model), name="tiny-rn")
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for kw in ({"last": 1}, {"layers": [-1]}):  # no blocks to choose: one paragraph saying so
        with pytest.raises(UnsupportedArchitectureError) as e:
            rn.decompose(x, **kw)
        assert "\n" not in str(e.value)
    # TEXTSPAN on the attention pool's per-head terms (what a ResNet's decomposition splits into)
    dec = rn.decompose(x).normalized()
    terms = dec.pool_terms().sum(2)  # [B, pool heads, E]
    pool = F.normalize(torch.randn(12, terms.shape[-1], generator=torch.Generator().manual_seed(1)), dim=-1)
    spans = cliplens.textspan(terms, pool, m=2)
    assert len(spans) == terms.shape[1] and all(len(s.texts) == 2 for s in spans)
    # maps from embeddings, and points from them
    emb = rn.encode_text(["a red circle", "grass"])
    maps = get_map("decomposition")(rn, [x[0]], Targets.from_embeddings(emb, ["red", "grass"]), size=128)
    ref = get_map("decomposition")(rn, [x[0]], Targets.texts(["a red circle", "grass"]), size=128)
    torch.testing.assert_close(maps.raw, ref.raw)
    assert len(points_from_maps(maps, "red")) > 0
