"""Image loading and preprocessing: exact parity with open_clip and Hugging Face transforms."""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from cliplens.errors import ImageLoadError, PixelValueError
from cliplens.images import (
    OPENAI_CLIP_MEAN,
    PreprocessConfig,
    Preprocessor,
    check_pixel_values,
    load_image,
)
from cliplens.models.hf import preprocess_config_from_hf
from cliplens.models.openclip import preprocess_config_from_open_clip
from tests.conftest import REFERENCE_IMAGES as IMAGES


def _reference_files() -> list[Path]:
    files = sorted((IMAGES / "coco-mini" / "val2017").glob("*.jpg"))[:3]
    files += sorted((IMAGES / "coco-mini" / "train2017").glob("*.jpg"))[:2]
    files += sorted((IMAGES / "voc-crops").glob("*_image.png"))[:2]
    files += sorted((IMAGES / "voc-crops").glob("*_target.png"))[:1]  # a palette PNG
    files += sorted((IMAGES / "imagenet-samples").glob("*.JPEG"))[:5]  # odd sizes
    files += sorted((IMAGES / "ade-samples" / "images").glob("*.jpg"))[:1]
    greyscale = ["imagenet-samples/n02692877_airship.JPEG", "coco-mini/val2017/000000431848.jpg"]
    files += [IMAGES / g for g in greyscale if (IMAGES / g).exists()]
    return files


REFERENCE = _reference_files()
needs_reference = pytest.mark.skipif(not REFERENCE, reason="reference images not available")


# ---- sources ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_clip_transforms():
    """(model-like object carrying open_clip's preprocess config, open_clip's own transform) pairs covering
    every open_clip resize mode: the configs ``create_model_and_transforms`` records on ``model.visual``
    for ViT-B-32 / ViT-B-16 with these overrides, and the transform open_clip builds from them."""
    pytest.importorskip("open_clip")
    from open_clip.transform import PreprocessCfg, image_transform_v2

    specs = {
        "b32": PreprocessCfg(size=224),
        "b16_160_bilinear_longest": PreprocessCfg(size=(160, 160), interpolation="bilinear", resize_mode="longest"),
        "b16_160x128": PreprocessCfg(size=(160, 128)),
        "b32_squash": PreprocessCfg(size=224, resize_mode="squash"),
    }
    out = {}
    for key, cfg in specs.items():
        model = SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=dataclasses.asdict(cfg)))
        out[key] = (model, image_transform_v2(cfg, is_train=False))
    return out


def _hf_processors():
    transformers = pytest.importorskip("transformers")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    fast = transformers.CLIPImageProcessor
    kws = [
        {},
        dict(size={"shortest_edge": 200}, crop_size={"height": 160, "width": 192}, resample=2),
        dict(size={"height": 200, "width": 180}, crop_size={"height": 224, "width": 224}),
        dict(size={"shortest_edge": 100}, crop_size={"height": 111, "width": 97}, resample=3,
             image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.5, 0.75]),
    ]
    return [cls(**kw) for cls in (fast, CLIPImageProcessorPil) for kw in kws]


@pytest.fixture(scope="module")
def hf_processors():
    return _hf_processors()


def _ours_and_theirs(open_clip_transforms, hf_processors):
    pairs = []
    for key, (model, preprocess) in open_clip_transforms.items():
        pairs.append((f"open_clip:{key}", Preprocessor(preprocess_config_from_open_clip(model)),
                      lambda im, p=preprocess: p(im)[None]))
    for i, ip in enumerate(hf_processors):
        pairs.append((f"hf:{type(ip).__name__}:{i}", Preprocessor(preprocess_config_from_hf(ip)),
                      lambda im, p=ip: p(im, return_tensors="pt")["pixel_values"]))
    return pairs


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert b.dtype == torch.float32
    return float((a.float() - b).abs().max())


# ---- config --------------------------------------------------------------------------------------
def test_config_from_open_clip(open_clip_transforms):
    cfg = preprocess_config_from_open_clip(open_clip_transforms["b32"][0])
    assert cfg.image_size == (224, 224) and cfg.resize_size == 224
    assert cfg.crop == "center_round" and cfg.convert_rgb == "last" and cfg.source == "open_clip"
    cfg = preprocess_config_from_open_clip(open_clip_transforms["b16_160_bilinear_longest"][0])
    assert cfg.image_size == (160, 160) and cfg.interpolation == "bilinear" and cfg.resize_mode == "longest"
    cfg = preprocess_config_from_open_clip(open_clip_transforms["b16_160x128"][0])
    # open_clip's ResizeKeepRatio for non-square 'shortest' ignores the interpolation: bicubic
    assert cfg.image_size == (160, 128) and cfg.resize_size == (160, 128) and cfg.interpolation == "bicubic"
    assert preprocess_config_from_open_clip(open_clip_transforms["b32_squash"][0]).crop == "none"


def test_config_from_open_clip_legacy_attributes():
    visual = SimpleNamespace(image_size=96, image_mean=(0.1, 0.2, 0.3), image_std=(0.4, 0.5, 0.6))
    cfg = preprocess_config_from_open_clip(SimpleNamespace(visual=visual))
    assert cfg.image_size == (96, 96) and cfg.mean == (0.1, 0.2, 0.3) and cfg.std == (0.4, 0.5, 0.6)
    cfg = preprocess_config_from_open_clip(SimpleNamespace(visual=SimpleNamespace()))
    assert cfg.image_size == (224, 224) and cfg.mean == OPENAI_CLIP_MEAN


def test_config_from_hf(hf_processors):
    fast, pil = hf_processors[1], hf_processors[5]
    for ip, backend in ((fast, "torch"), (pil, "pil")):
        cfg = preprocess_config_from_hf(ip)
        assert cfg.image_size == (160, 192) and cfg.resize_size == 200 and cfg.interpolation == "bilinear"
        assert cfg.crop == "center_floor" and cfg.convert_rgb == "first_white" and cfg.resize_backend == backend
    squash = preprocess_config_from_hf(hf_processors[2])
    assert squash.resize_mode == "squash" and squash.resize_size == (200, 180)
    # a CLIPProcessor-like wrapper is accepted too
    assert preprocess_config_from_hf(SimpleNamespace(image_processor=fast)) == \
        preprocess_config_from_hf(fast)


def test_config_plain_and_roundtrip():
    cfg = PreprocessConfig(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="toy")
    assert cfg.image_size == (32, 32) and cfg.resize_size == 32
    d = cfg.to_dict()
    import json

    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == cfg
    with pytest.raises(ValueError, match="unknown PreprocessConfig keys"):
        PreprocessConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessConfig(resize_mode="fit")
    with pytest.raises(ValueError, match="mean"):
        PreprocessConfig(mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="resize_backend='pil'"):
        PreprocessConfig(interpolation="lanczos", resize_backend="torch")


def test_geometry_rounding_conventions():
    tv = PreprocessConfig(image_size=4, crop="center_round")
    hf = PreprocessConfig(image_size=4, crop="center_floor")
    # torchvision rounds half to even: a margin of 1 starts at 0, a margin of 3 at 2, of 5 at 2
    assert [tv.crop_window(n, n)[0] for n in (5, 7, 9)] == [0, 2, 2]
    assert [hf.crop_window(n, n)[0] for n in (5, 7, 9)] == [0, 1, 2]
    # padding: a 1-pixel image in a 4-pixel crop sits 1 from the top (floor) or 2 (ceil)
    assert tv.crop_window(1, 1) == (-1, -1)
    assert PreprocessConfig(image_size=4, pad_align="ceil").crop_window(1, 1) == (-2, -2)
    # shortest side -> int(size * long / short); keep-ratio -> round
    assert PreprocessConfig(image_size=224).resize_output_size(480, 640) == (224, 298)
    assert PreprocessConfig(image_size=(224, 224), resize_size=(224, 224)).resize_output_size(480, 641) == (224, 299)


# ---- parity on real photos -----------------------------------------------------------------------
@needs_reference
def test_parity_real_photos(open_clip_transforms, hf_processors):
    worst = {}
    for name, ours, theirs in _ours_and_theirs(open_clip_transforms, hf_processors):
        diffs = []
        for f in REFERENCE:
            im = ImageOps.exif_transpose(Image.open(f))
            diffs.append(_maxdiff(theirs(im), ours(f)))  # ours loads the path itself
        worst[name] = max(diffs)
    assert all(v == 0.0 for v in worst.values()), worst


@needs_reference
def test_batch_of_paths_equals_single(open_clip_transforms):
    ours = Preprocessor(preprocess_config_from_open_clip(open_clip_transforms["b32"][0]))
    batch = ours([str(f) for f in REFERENCE[:4]])
    assert batch.shape == (4, 3, 224, 224) and batch.dtype == torch.float32
    for i, f in enumerate(REFERENCE[:4]):
        assert torch.equal(batch[i:i + 1], ours(f))


# ---- parity on synthetic images of every mode ----------------------------------------------------
def _synthetic(size=(37, 53), seed=0) -> dict[str, Image.Image]:
    h, w = size
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    out = {
        "RGB": Image.fromarray(rgb),
        "L": Image.fromarray(rgb[..., 0]),
        "1": Image.fromarray(rgb[..., 0]).convert("1"),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
        "LA": Image.merge("LA", [Image.fromarray(rgb[..., 0]), Image.fromarray(alpha)]),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "P": Image.fromarray(rgb).quantize(colors=17),
    }
    trns = Image.fromarray(rgb).quantize(colors=9)
    trns.info["transparency"] = 3
    out["P_transparency"] = trns
    return out


def _roundtrip_png(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="PNG" if im.mode != "CMYK" else "TIFF")
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


@pytest.mark.parametrize("size", [(37, 53), (300, 41), (12, 9), (1, 1), (224, 225)])
def test_parity_synthetic_modes(open_clip_transforms, hf_processors, size):
    images = _synthetic(size)
    worst = {}
    for name, ours, theirs in _ours_and_theirs(open_clip_transforms, hf_processors):
        for mode, im in images.items():
            if "hf" in name and mode == "1":
                continue  # transformers cannot build a tensor from a 1-bit image
            im = _roundtrip_png(im) if mode in ("P_transparency",) else im
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = theirs(im.copy())
                got = ours(im.copy())
            worst[(name, mode)] = _maxdiff(ref, got)
    bad = {k: v for k, v in worst.items() if v != 0.0}
    assert not bad, bad


def test_alpha_handling_differs_between_sources(open_clip_transforms, hf_processors):
    """open_clip resizes RGBA premultiplied, then drops alpha; transformers composites onto white first."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    oc = Preprocessor(preprocess_config_from_open_clip(open_clip_transforms["b32"][0]))
    hf = Preprocessor(preprocess_config_from_hf(hf_processors[0]))

    def rgb(x):
        return ((x * std + mean) * 255)[0, :, 100, 100]

    clear = torch.tensor([10.0, 20.0, 30.0])
    small = Image.new("RGBA", (64, 64), (10, 20, 30, 0))  # fully transparent dark pixels
    native = Image.new("RGBA", (224, 224), (10, 20, 30, 0))  # already the right size: no resize
    # open_clip: a resize premultiplies by alpha, so fully transparent pixels come out black ...
    assert torch.allclose(rgb(oc(small)), torch.zeros(3), atol=1e-3)
    # ... while without a resize convert('RGB') just drops alpha and keeps the hidden colour
    assert torch.allclose(rgb(oc(native)), clear, atol=1e-3)
    for im in (small, native):
        assert torch.allclose(rgb(hf(im)), torch.full((3,), 255.0), atol=1e-3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 320), w=st.integers(1, 320), seed=st.integers(0, 2**16))
def test_parity_odd_sizes_hypothesis(open_clip_transforms, hf_processors, h, w, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    for name, ours, theirs in _ours_and_theirs(open_clip_transforms, hf_processors):
        try:
            ref = theirs(im)
        except ValueError:  # a side rounded to 0 pixels: the source fails, cliplens keeps 1 pixel
            assert ours(im).shape[-2:] == ours.config.image_size
            continue
        assert _maxdiff(ref, ours(im)) == 0.0, name


def test_high_bit_greyscale_is_scaled(tmp_path):
    a16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a16).save(p)
    im = load_image(p)
    assert im.mode == "RGB"
    got = np.asarray(im)[..., 0].astype(int)
    want = np.round(a16 / 257.0).astype(int)
    assert np.abs(got - want).max() <= 0  # not clipped to white as convert('RGB') would do
    f = Image.fromarray(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10))
    assert np.asarray(Preprocessor(PreprocessConfig(image_size=10))(f)).std() > 0.5


# ---- files ---------------------------------------------------------------------------------------
def test_exif_orientation(tmp_path, open_clip_transforms):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    p = tmp_path / "rotated.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    loaded = load_image(p)
    assert loaded.size == (40, 70)  # width and height swapped
    model, preprocess = open_clip_transforms["b32"]
    ref = preprocess(ImageOps.exif_transpose(Image.open(p)))[None]
    assert _maxdiff(ref, Preprocessor(preprocess_config_from_open_clip(model))(p)) == 0.0


def test_load_image_modes(tmp_path):
    for mode, im in _synthetic().items():
        if mode == "CMYK":
            p = tmp_path / f"{mode}.jpg"
            im.save(p)
        else:
            p = tmp_path / f"{mode}.png"
            im.save(p)
        out = load_image(p)
        assert out.mode == "RGB" and out.size == im.size
        assert load_image(p, mode=None).mode in (mode.split("_")[0], "RGB", "L", "1", "P", "RGBA", "LA", "CMYK")
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    p = tmp_path / "clear.png"
    rgba.save(p)
    assert np.asarray(load_image(p))[0, 0].tolist() == [0, 0, 0]
    assert np.asarray(load_image(p, background=(255, 255, 255)))[0, 0].tolist() == [255, 255, 255]


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    good.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    buf = io.BytesIO()
    good.save(buf, format="PNG")
    png = buf.getvalue()
    trunc_png = tmp_path / "truncated.png"
    trunc_png.write_bytes(png[: len(png) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image at all" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"truncated": trunc, "truncated_png": trunc_png, "junk": junk, "empty": empty,
            "missing": tmp_path / "nope.jpg", "directory": tmp_path}


def test_bad_files_raise_naming_the_file(tmp_path):
    pre = Preprocessor(PreprocessConfig(image_size=32))
    for kind, path in _bad_files(tmp_path).items():
        for fn in (load_image, pre):
            with pytest.raises(ImageLoadError) as info:
                fn(path)
            msg = str(info.value)
            assert str(path) in msg, kind
            assert info.value.source == str(path) and info.value.reason in msg
            # the preprocessor says how to skip such files; reading one file alone does not
            assert ("skip_bad=True" in msg) == (fn is pre), kind
            if kind.startswith("truncated"):
                assert "truncated" in msg or "corrupt" in msg
            if kind == "missing":
                assert "no such file" in msg


def test_skip_bad(tmp_path):
    bad = _bad_files(tmp_path)
    good = tmp_path / "good.png"
    Image.new("RGB", (50, 40), (200, 10, 10)).save(good)
    inputs = [good, bad["missing"], bad["truncated"], Image.new("L", (20, 30), 7), bad["junk"]]
    pre = Preprocessor(PreprocessConfig(image_size=32))
    with pytest.raises(ImageLoadError):
        pre(inputs)
    with pytest.warns(UserWarning, match="skipped 3 images"):
        out = pre(inputs, skip_bad=True)
    assert out.shape == (2, 3, 32, 32)
    assert pre.last_kept == [0, 3]
    assert [s.index for s in pre.last_report.skipped] == [1, 2, 4]
    assert str(bad["missing"]) in pre.last_report.skipped[0].source
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report says what was skipped: no warning
        report = pre.preprocess_with_report([bad["junk"]], skip_bad=True)
    assert report.pixel_values.shape == (0, 3, 32, 32) and report.kept == []
    with pytest.raises(ImageLoadError, match="none of the 1 images"):
        pre([bad["junk"]], skip_bad=True)


# ---- tensors and arrays ---------------------------------------------------------------------------
def test_float_tensor_parity_with_open_clip(open_clip_transforms):
    """open_clip's transform on a float tensor (torchvision tensor ops) == ours."""
    g = torch.Generator().manual_seed(0)
    for key in ("b32", "b32_squash"):  # ResizeKeepRatio (the other modes) takes only PIL images
        model, preprocess = open_clip_transforms[key]
        ours = Preprocessor(preprocess_config_from_open_clip(model))
        for hw in ((97, 131), (300, 240), (224, 224)):
            x = torch.rand(3, *hw, generator=g)
            assert _maxdiff(preprocess(x)[None], ours(x)) < 1e-6, (key, hw)


def test_uint8_tensor_parity_with_hf(hf_processors):
    g = torch.Generator().manual_seed(0)
    for ip in hf_processors[:4]:  # torchvision backend: uint8 tensors resized natively
        ours = Preprocessor(preprocess_config_from_hf(ip))
        for hw in ((97, 131), (300, 240), (30, 20)):
            x = torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=g)
            ref = ip(x, return_tensors="pt")["pixel_values"]
            assert _maxdiff(ref, ours(x)) == 0.0


def test_tensor_and_numpy_inputs_agree_with_pil():
    cfg = PreprocessConfig(image_size=(48, 40), resize_backend="torch", crop="center_floor",
                           rescale_arithmetic="fused", convert_rgb="first_white")
    pre = Preprocessor(cfg)
    noise = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb = np.array(Image.fromarray(noise).resize((90, 70), Image.Resampling.BILINEAR))  # smooth
    from_pil = pre(Image.fromarray(rgb))
    from_np = pre(rgb)
    from_u8 = pre(torch.from_numpy(rgb).permute(2, 0, 1))
    from_batch = pre(torch.from_numpy(rgb).permute(2, 0, 1)[None].repeat(2, 1, 1, 1))
    assert torch.equal(from_pil, from_np) and torch.equal(from_pil, from_u8)
    assert from_batch.shape == (2, 3, 48, 40) and torch.equal(from_batch[1:], from_pil)
    from_float = pre(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert (from_float - from_pil).abs().max() < 0.05  # float path: no uint8 rounding/clamping
    from_np_float = pre(rgb.astype(np.float32) / 255)
    assert torch.allclose(from_np_float, from_float, atol=1e-6)
    grey = pre(rgb[..., 0])
    assert torch.equal(grey, pre(Image.fromarray(rgb[..., 0])))
    mixed = pre([rgb, Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1)])
    assert mixed.shape == (3, 3, 48, 40)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 4, 10, 10), r"expected \[3, H, W\] or \[B, 3, H, W\]"),
        (torch.rand(10, 10, 3), "channels-last"),
        (torch.rand(10, 10), r"expected \[3, H, W\]"),
        (torch.randn(3, 10, 10), "already normalised"),
        (torch.rand(3, 10, 10) * 255, "0-255"),
        (torch.full((3, 4, 4), float("nan")), "NaN"),
        (torch.ones(3, 4, 4, dtype=torch.int64), "uint8"),
        (np.zeros((3, 10, 10), np.uint8), "channels-first"),
        (np.zeros((10, 10, 5), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.int32), "uint8"),
    ],
)
def test_bad_tensor_inputs(bad, match):
    pre = Preprocessor(PreprocessConfig(image_size=8))
    with pytest.raises(PixelValueError, match=match) as info:
        pre(bad)
    if isinstance(bad, torch.Tensor) and bad.ndim != 3:
        assert "model.decompose()" in str(info.value)


def test_unsupported_input_type():
    with pytest.raises(TypeError):
        Preprocessor(PreprocessConfig())(12345)
    with pytest.raises(ValueError, match="empty"):
        Preprocessor(PreprocessConfig())([])


# ---- check_pixel_values -------------------------------------------------------------------------
def _view(in_channels=3, patch=16, image_size=(224, 224), dtype=torch.float32):
    return SimpleNamespace(in_channels=in_channels, patch_size=(patch, patch), image_size=image_size,
                           device=torch.device("cpu"), dtype=dtype)


def test_check_pixel_values_ok():
    x = torch.randn(2, 3, 224, 224)
    assert check_pixel_values(x, _view()) is x
    y = check_pixel_values(x, _view(dtype=torch.float64))
    assert y.dtype == torch.float64
    assert check_pixel_values(torch.randn(1, 3, 64, 96), _view()).shape == (1, 3, 64, 96)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(3, 224, 224), "unsqueeze"),
        (torch.randint(0, 255, (1, 3, 224, 224), dtype=torch.uint8), "model.preprocess"),
        (torch.randn(1, 4, 224, 224), "4 channels, the model expects 3"),
        (torch.randn(1, 224, 224, 3), "channels-last"),
        (torch.randn(1, 3, 225, 230), "225x230 is not a multiple of the patch size 16x16; use a height of 224 or 240 "
                                      "and a width of 224 or 240"),
        (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite"),
        (torch.rand(1, 3, 32, 32) * 255, "un-normalised 0-255"),
        (np.zeros((1, 3, 32, 32), np.float32), "numpy"),
        ([1, 2, 3], "tensor"),
        (torch.randn(0, 3, 32, 32), "empty"),
    ],
)
def test_check_pixel_values_errors(x, match):
    with pytest.raises(PixelValueError, match=match):
        check_pixel_values(x, _view())
