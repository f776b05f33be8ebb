"""cliplens.load / wrap / list_models: name resolution, local files, every error path."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

import cliplens.models as M  # noqa: E402
from cliplens.errors import (  # noqa: E402
    CliplensError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    PretrainedRequiredError,
    RandomWeightsWarning,
    UnsupportedArchitectureError,
)
from cliplens.models import registry as loading  # noqa: E402
from cliplens.models.hf import HFCLIPAdapter  # noqa: E402
from cliplens.models.openclip import OpenCLIPAdapter  # noqa: E402

TINY = "cliplens-test-tiny-vit"
TINY_OTHER = "cliplens-test-tiny-vit-wide"
TINY_RN = "cliplens-test-tiny-rn"

_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
_CONFIGS = {
    TINY: {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16,
                                           "patch_size": 8}, "text_cfg": _TEXT},
    TINY_OTHER: {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 96, "head_width": 16,
                                                 "patch_size": 8}, "text_cfg": _TEXT},
    TINY_RN: {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                              "patch_size": None}, "text_cfg": _TEXT},
}


@pytest.fixture(scope="module", autouse=True)
def tiny_open_clip_configs(tmp_path_factory):
    """Register tiny open_clip architectures so loading by name stays fast."""
    d = tmp_path_factory.mktemp("oc_configs")
    for name, cfg in _CONFIGS.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    yield


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing in these tests may reach the network (it would retry for ~20 s here)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def oc_model(name=TINY, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=None).eval()


def tiny_tokenizer():
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(chars)})
    vocab["ca"], vocab["cat</w>"] = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return transformers.CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")])


def hf_model(tok=None, seed=0, **vision):
    tok = tok or tiny_tokenizer()
    torch.manual_seed(seed)
    vis = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               image_size=32, patch_size=8, projection_dim=32)
    vis.update(vision)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, projection_dim=32,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=vis, projection_dim=32,
    )
    return transformers.CLIPModel(cfg).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- open_clip by name -----------------------------------------------------------------------


def test_open_clip_name_without_weights_is_an_error_listing_the_tags():
    with pytest.raises(PretrainedRequiredError) as info:
        M.load("ViT-B-32")
    msg = str(info.value)
    assert "laion2b_s34b_b79k" in msg and "openai" in msg and "'random'" in msg


def test_open_clip_random_weights_only_when_asked():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        a = M.load(TINY, pretrained="random")
    assert isinstance(a, OpenCLIPAdapter) and a.family == "open_clip" and a.name == TINY
    assert a.random_weights and a.weights == "random" and a.describe()["random_weights"] is True


def test_open_clip_prefix_openai_spelling_and_dtype():
    with pytest.warns(RandomWeightsWarning):
        a = M.load(f"open_clip:{TINY}", pretrained="random")
    assert isinstance(a, OpenCLIPAdapter) and a.vision.width == 64
    with pytest.warns(RandomWeightsWarning):
        b = M.load(f"open_clip:{TINY}", pretrained="random", dtype=torch.float64)
    assert b.dtype == torch.float64 and b.model.visual.conv1.weight.dtype == torch.float64


def test_openai_spelling_with_slash():
    oc_names = open_clip.list_models()
    assert "ViT-B-32" in oc_names
    # "ViT-B/32" is not an HF id: it resolves to the open_clip architecture without touching the Hub.
    with pytest.raises(PretrainedRequiredError, match="ViT-B-32 needs weights"):
        M.load("ViT-B/32")


def test_quickgelu_tag_builds_quickgelu_model(monkeypatch):
    seen = {}

    def fake_create(name, pretrained=None, **kw):
        seen.update(kw, name=name, pretrained=pretrained)
        raise RuntimeError("stop here")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError):
        M.load("ViT-B-32", pretrained="openai")  # OpenAI's weights were trained with QuickGELU
    assert seen["force_quick_gelu"] is True and seen["pretrained"] == "openai"
    with pytest.raises(ModelLoadError):
        M.load("ViT-B-32", pretrained="laion2b_s34b_b79k")  # trained with GELU
    assert seen["force_quick_gelu"] is False
    assert seen["pretrained_text"] is False  # never fetch separate text-tower weights


# ---- local open_clip checkpoints ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_local_open_clip_checkpoint(tmp_path, fmt):
    src = oc_model(seed=1)
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "pt":
        torch.save(src.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        a = M.load(TINY, pretrained=str(path))
    assert isinstance(a, OpenCLIPAdapter) and same_weights(a.model, src)
    assert a.weights == str(path) and not a.random_weights


def test_checkpoint_for_another_architecture(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(oc_model(TINY_OTHER).state_dict(), path)
    with pytest.raises(ModelLoadError, match=TINY):
        M.load(TINY, pretrained=str(path))


def test_local_open_clip_folder(tmp_path):
    src = oc_model(seed=2)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": _CONFIGS[TINY]}))
    torch.save(src.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    a = M.load(tmp_path)
    assert isinstance(a, OpenCLIPAdapter) and same_weights(a.model, src)
    assert a.name.startswith("local-dir:")


def test_local_open_clip_folder_without_weights(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": _CONFIGS[TINY]}))
    with pytest.raises(ModelLoadError, match="no weights file"):
        M.load(tmp_path)  # open_clip alone would silently build random weights


# ---- local transformers folders ---------------------------------------------------------------------


def test_local_hf_folder_with_tokenizer(tmp_path):
    tok = tiny_tokenizer()
    src = hf_model(tok, seed=3)
    src.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    a = M.load(str(tmp_path))
    assert isinstance(a, HFCLIPAdapter) and a.family == "transformers"
    assert same_weights(a.model, src) and a.dtype == torch.float32
    tokens = a._tokenize(["a cat"])
    assert tokens["input_ids"].shape == (1, 16)
    with torch.no_grad():
        ref = src.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(a._encode_tokens(tokens), ref)
    assert a.processor.crop_size["height"] == 32
    b = M.load(f"hf:{tmp_path}")
    assert isinstance(b, HFCLIPAdapter) and same_weights(b.model, src)


def test_local_hf_folder_without_tokenizer(tmp_path):
    src = hf_model(seed=4)
    src.save_pretrained(tmp_path)
    a = M.load(tmp_path)
    assert same_weights(a.model, src)
    assert a.source_encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 32)  # images work
    with pytest.raises(ModelLoadError, match="tokenizer"):
        a._tokenize(["a cat"])
    c = M.load(tmp_path, tokenizer=tiny_tokenizer())  # an explicit tokenizer fixes it
    assert c._tokenize(["a cat"])["input_ids"].shape == (1, 16)


def test_hf_folder_dtype(tmp_path):
    hf_model().save_pretrained(tmp_path)
    a = M.load(tmp_path, dtype=torch.float64)
    assert a.dtype == torch.float64


def test_unknown_model_type_folder_is_refused_before_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip"}))
    with pytest.raises(UnsupportedArchitectureError, match="'blip'"):
        M.load(tmp_path)


def test_folder_with_nothing_known(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="neither config.json .* nor open_clip_config.json"):
        M.load(tmp_path)


def test_bare_weights_file_needs_an_architecture(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError) as e:
        M.load(str(path))
    msg = str(e.value)
    assert "architecture" in msg and "pretrained=" in msg and str(path) in msg


def test_pretrained_folder_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="folder"):
        M.load(TINY, pretrained=str(tmp_path))


def test_missing_checkpoint_file():
    with pytest.raises(ModelLoadError, match="not found"):
        M.load(TINY, pretrained="/no/such/dir/ckpt.pt")


def test_missing_local_path():
    with pytest.raises(ModelNotFoundError, match="No such file"):
        M.load("./no/such/folder")


# ---- unknown names and tags ------------------------------------------------------------------------


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelNotFoundError) as e:
        M.load("ViT-B-33")
    msg = str(e.value)
    assert "'ViT-B-33'" in msg and "Did you mean" in msg and "ViT-B-32" in msg
    assert "pretrained='/path/to/checkpoint.pt'" in msg  # how to point at a local file
    assert isinstance(e.value, LookupError)


def test_unknown_name_suggests_hf_ids_and_case_fixes():
    with pytest.raises(ModelNotFoundError, match="ViT-L-14"):
        M.load("vit-l-14")
    with pytest.raises(ModelNotFoundError, match="openai/clip-vit-base-patch16"):
        M.load("clip-vit-base-patch16")


def test_bad_pretrained_tag_lists_that_architectures_tags():
    with pytest.raises(ModelNotFoundError) as e:
        M.load("ViT-B-32", pretrained="laion2b")
    msg = str(e.value)
    assert "laion2b_s34b_b79k" in msg and "Did you mean" in msg and "ViT-B-32" in msg


def test_tag_for_architecture_without_tags():
    with pytest.raises(ModelNotFoundError, match="no pretrained weights"):
        M.load(TINY, pretrained="openai")


def test_pretrained_with_hf_id_is_refused():
    with pytest.raises(ModelLoadError, match="pretrained"):
        M.load("openai/clip-vit-base-patch16", pretrained="laion2b_s34b_b79k")


def test_unknown_open_clip_name_with_prefix():
    with pytest.raises(ModelNotFoundError, match="ViT-B-32"):
        M.load("open_clip:ViT-B-3")


# ---- offline ---------------------------------------------------------------------------------------


def test_offline_hf_id(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(ModelLoadError) as e:
        M.load("openai/clip-vit-base-patch16", cache_dir=tmp_path)
    msg = str(e.value)
    assert "openai/clip-vit-base-patch16" in msg and "could not be fetched" in msg
    assert "HF_HUB_OFFLINE" in msg and "cliplens.load('/path/to/folder')" in msg
    assert constants.HF_HUB_OFFLINE == before  # the library flag is restored


def test_offline_hf_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="openai/clip-vit-large-patch14"):
        M.load("hf:openai/clip-vit-large-patch14", cache_dir=tmp_path)


def test_offline_open_clip_tag(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        M.load("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "ViT-B-32" in msg and "laion2b_s34b_b79k" in msg and "pretrained='/path/to/checkpoint.pt'" in msg


def test_offline_open_clip_hub_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        M.load("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", cache_dir=str(tmp_path))


# ---- architectures cliplens cannot decompose ------------------------------------------------------------


def test_resnet_by_name_needs_weights_like_any_model():
    with pytest.raises(PretrainedRequiredError, match="RN50"):
        M.load("RN50")


def test_resnet_model_object_is_read_at_its_pool():
    m = M.wrap(oc_model(TINY_RN), name=TINY_RN)
    assert m.vision.head.kind == "attnpool" and m.vision.num_layers == 0
    dec = m.decompose(torch.randn(2, 3, 64, 64))
    assert dec.check() <= 1e-5 and "trunk not decomposed" in repr(dec)


def test_timm_tower_by_name():
    with pytest.raises(UnsupportedArchitectureError, match="timm"):
        M.load("convnext_base", pretrained="random")


# ---- missing optional dependencies ------------------------------------------------------------------


def test_missing_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match="pip install"):
        M.load("openai/clip-vit-base-patch16")


def test_missing_open_clip(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingDependencyError, match="pip install"):
        M.load("ViT-B-32")
    with pytest.raises(MissingDependencyError, match="pip install"):
        M.load("open_clip:ViT-B-32")
    names = [m.name for m in M.list_models()]  # still lists what it can
    assert "openai/clip-vit-base-patch16" in names and "ViT-B-32" not in names


# ---- wrap --------------------------------------------------------------------------------------------


def _shares_storage(adapter, model) -> None:
    """Every view tensor lives in the storage of one of the model's parameters (slices, transposes)."""
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for t in adapter.vision.parameters():
        assert t.untyped_storage().data_ptr() in storages


def test_wrap_open_clip_no_copy():
    model = oc_model()
    a = M.wrap(model, name=TINY)
    assert isinstance(a, OpenCLIPAdapter) and a.model is model
    _shares_storage(a, model)
    with torch.no_grad():
        model.visual.transformer.resblocks[1].mlp.c_fc.weight[2, 3] = 42.0
        model.visual.proj[0, 0] = -3.0
    assert a.vision.blocks[1].fc1_weight[2, 3].item() == 42.0
    assert a.vision.proj[0, 0].item() == -3.0


def test_wrap_hf_no_copy():
    model = hf_model()
    tok = tiny_tokenizer()
    a = M.wrap(model, tokenizer=tok)
    assert isinstance(a, HFCLIPAdapter) and a.model is model and a.tokenizer is tok
    _shares_storage(a, model)
    with torch.no_grad():
        model.vision_model.encoder.layers[0].self_attn.v_proj.bias[1] = 9.0
        model.visual_projection.weight[4, 6] = 5.0
    assert a.vision.blocks[0].v_bias[1].item() == 9.0
    assert a.vision.proj[6, 4].item() == 5.0


def test_wrap_keeps_processor_and_adapter():
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    a = M.wrap(hf_model(), preprocess=proc)
    assert a.processor is proc
    assert M.wrap(a) is a


@pytest.mark.parametrize("obj", [object(), torch.nn.Linear(2, 2), "ViT-B-32"])
def test_wrap_rejects_other_objects(obj):
    with pytest.raises(M.UnsupportedModelTypeError) as e:
        M.wrap(obj)
    assert isinstance(e.value, TypeError) and isinstance(e.value, CliplensError)
    msg = str(e.value)
    assert "CLIPModel" in msg and "open_clip" in msg and "cliplens.load" in msg


# ---- embedded registry -------------------------------------------------------------------------------


def test_register_embedded(monkeypatch):
    monkeypatch.setattr(loading, "_EMBEDDED", {})
    calls = []

    def loader(pretrained=None):
        calls.append(pretrained)
        return M.wrap(hf_model(), name="mini")

    M.register_embedded("mini", loader, "a tiny test model", pretrained=("v1",))
    a = M.load("mini", pretrained="v1", dtype=torch.float64)
    assert calls == ["v1"] and a.dtype == torch.float64
    info = [m for m in M.list_models() if m.name == "mini"]
    assert info == [M.ModelInfo("mini", "embedded", ("v1",), True, "a tiny test model")]
    with pytest.raises(ValueError):
        M.register_embedded("bad/name", loader)


def test_the_toy_family_is_registered_as_embedded():
    infos = {m.name: m for m in M.list_models() if m.family == "embedded"}
    assert set(infos) == {"toy", "toy-spurious", "toy-siglip"}
    assert infos["toy"].pretrained == ("default",) and infos["toy"].decomposable


# ---- list_models ------------------------------------------------------------------------------------


def test_list_models_contents():
    infos = {m.name: m for m in M.list_models()}
    b32 = infos["ViT-B-32"]
    assert b32.family == "open_clip" and b32.decomposable and "openai" in b32.pretrained
    assert "laion2b_s34b_b79k" in b32.pretrained
    rn = infos["RN50"]
    assert rn.decomposable and "ResNet" in rn.note and "pool only" in rn.note and "openai" in rn.pretrained
    assert not infos["convnext_base"].decomposable and "timm" in infos["convnext_base"].note
    assert not infos["ViT-L-14-CLIPA"].decomposable and "pooling" in infos["ViT-L-14-CLIPA"].note
    assert not infos["coca_ViT-B-32"].decomposable
    assert infos["ViT-M-16-alt"].decomposable and "layer-scale" in infos["ViT-M-16-alt"].note
    hf = infos["openai/clip-vit-base-patch16"]
    assert hf.family == "transformers" and hf.decomposable
    assert infos["google/siglip-base-patch16-224"].decomposable
    assert infos["ViT-B-16-SigLIP"].decomposable and "MAP" in infos["ViT-B-16-SigLIP"].note
    assert all(isinstance(m, M.ModelInfo) for m in infos.values())
    assert set(open_clip.list_models()) <= set(infos)


def test_list_models_agrees_with_the_adapter():
    infos = {m.name: m for m in M.list_models()}
    assert infos[TINY].decomposable and infos[TINY_RN].decomposable
    M.wrap(oc_model(TINY), name=TINY)  # decomposable: the adapter accepts it
    M.wrap(oc_model(TINY_RN), name=TINY_RN)


def test_public_exports():
    import cliplens.models as pkg

    for n in ("load", "wrap", "list_models", "ModelInfo", "CLIPAdapter", "register_embedded"):
        assert hasattr(pkg, n)
