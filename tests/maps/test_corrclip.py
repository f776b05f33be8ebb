"""CorrCLIP against the naive float64 reference (tests/maps/corrclip_reference.py) on random weights: a tiny
open_clip CLIP, a tiny transformers DINO (ViTModel, 8-pixel patches) and, end to end, a random-weight SAM."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import cliplens
from cliplens.errors import InvalidInputError, UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from cliplens.maps.corrclip import merge_regions, regions_from_masks, spatial_layers, vote_in_regions
from tests.maps.corrclip_reference import reference_raw, reference_regions, reference_vote
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.models.vfm_models import tiny_vfm


class Boxes:
    """A mask generator with fixed overlapping boxes (SAM's output format); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, image: np.ndarray) -> list[dict]:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.calls += 1
        H, W = image.shape[:2]
        out = []
        for top, left, bottom, right in ((0, 0, H // 2, W), (0, 0, H, W // 3), (H // 2, W // 2, H, W)):
            m = np.zeros((H, W), bool)
            m[top:bottom, left:right] = True
            out.append({"segmentation": m, "area": int(m.sum())})
        return out


@pytest.fixture(scope="module")
def models():
    clip = build_tiny_clip(layers=8, seed=41)
    dino = tiny_vfm("dino", width=32, heads=4, layers=2, patch=8, image_size=64, seed=3)
    return clip.double(), cliplens.wrap(copy.deepcopy(clip).double()), copy.deepcopy(dino).double()


def _regions(hw, seed=0, labels=5):
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, labels, (2, hw[0] // 16, hw[1] // 16), generator=g)
    return cells.repeat_interleave(16, 1).repeat_interleave(16, 2)


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["native", "64x96"])
@pytest.mark.parametrize("params", [{}, {"merge_eps": 1e-9}, {"merge_eps": 1.0, "tau": 2.0, "alpha": 0.5, "beta": 1.0}],
                         ids=["defaults", "no-merging", "other-settings"])
def test_matches_the_naive_reference(models, hw, params):
    clip, wrapped, dino = models
    x = random_images(2, hw, seed=7).double()
    regions = _regions(hw)
    texts = random_directions(3, seed=5)
    method = get_map("corrclip", vfm=dino, sam=Boxes(), **params)
    ours = method.raw(wrapped, torch.cat([x, regions[:, None].double()], 1), TextEmbeddings(texts, ("a", "b", "c")))
    kw = {"eps": params.get("merge_eps", 0.2), **{k: v for k, v in params.items() if k != "merge_eps"}}
    cfg = wrapped.preprocess_config
    ref = reference_raw(clip, dino, x, regions, texts, cfg.mean, cfg.std, **kw)
    assert ours.shape == ref.shape == (2, 3, hw[0] // 8, hw[1] // 8)  # DINO's 8-pixel grid
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    # 1e-6, not 1e-12: vfm's normalize_from rounds the re-normalised pixels through float32
    assert rel <= 1e-6, rel


def test_matches_the_reference_with_layer_scale_and_twelve_layers():
    """Layer-scale applies in the blocks (the mask class tokens' too), not to the reconstructed last attention's
    out-projection (the original calls ``attn.out_proj``); 12 layers: the spatial branch reads blocks 5-9."""
    clip = build_tiny_clip(layers=12, ls_init_value=0.5, seed=43).double()
    wrapped = cliplens.wrap(copy.deepcopy(clip))
    dino = copy.deepcopy(tiny_vfm("dino", width=32, heads=4, layers=2, patch=8, image_size=64, seed=4)).double()
    x = random_images(1, (64, 80), seed=9).double()
    regions = _regions((64, 80), seed=3)[:1]
    texts = random_directions(2, seed=6)
    ours = get_map("corrclip", vfm=dino, sam=Boxes()).raw(wrapped, torch.cat([x, regions[:, None].double()], 1),
                                                          TextEmbeddings(texts, ("a", "b")))
    cfg = wrapped.preprocess_config
    ref = reference_raw(clip, dino, x, regions, texts, cfg.mean, cfg.std)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6


def test_merging_and_the_branches_change_the_map(models):
    _, wrapped, dino = models
    x = torch.cat([random_images(2, (64, 64), seed=7).double(), _regions((64, 64))[:, None].double()], 1)
    t = TextEmbeddings(random_directions(3, seed=5), ("a", "b", "c"))
    base = get_map("corrclip", vfm=dino, sam=Boxes()).raw(wrapped, x, t)
    for other in ({"merge_eps": 1e-9}, {"beta": 0.0}, {"alpha": 0.0}, {"tau": 1.0}):
        assert not torch.allclose(get_map("corrclip", vfm=dino, sam=Boxes(), **other).raw(wrapped, x, t), base), other


def test_merge_regions_is_dbscan_with_one_sample():
    sklearn = pytest.importorskip("sklearn.cluster")
    g = torch.Generator().manual_seed(2)
    for trial in range(20):
        R = 2 + trial % 9
        labels = torch.cat([torch.arange(R), torch.randint(0, R, (60,), generator=g)])
        centres = torch.nn.functional.normalize(torch.randn(R, 6, generator=g, dtype=torch.float64), dim=-1)
        feats = torch.nn.functional.normalize(centres[labels] + 0.3 * torch.randn(len(labels), 6, generator=g,
                                                                                   dtype=torch.float64), dim=-1)
        eps = [0.05, 0.2, 0.5, 1.0][trial % 4]
        merged = merge_regions(labels, feats, eps)
        if R <= 2:
            assert torch.equal(merged, labels)
            continue
        means = torch.stack([feats[labels == r].mean(0) for r in range(R)])
        means = torch.nn.functional.normalize(means, dim=-1)[1:]
        sim = means @ means.T
        cluster = sklearn.DBSCAN(metric="precomputed", eps=eps, min_samples=1).fit_predict((sim.max() - sim).numpy())
        want = torch.tensor([-1, *cluster])[labels]
        # the same partition, with the unsegmented region (0) kept apart
        assert torch.equal(merged == 0, labels == 0)
        pairs = merged[:, None] == merged[None, :]
        assert torch.equal(pairs, want[:, None] == want[None, :])


def test_vote_in_regions_is_the_originals_mode():
    g = torch.Generator().manual_seed(4)
    for _ in range(10):
        labels = torch.randint(0, 4, (12, 17), generator=g)
        regions = torch.randint(2, 9, (12, 17), generator=g)  # no 0 present: the smallest label is left alone
        assert torch.equal(vote_in_regions(labels, regions), reference_vote(labels, regions))
    labels = torch.tensor([[1, 2, 2, 1]])
    assert vote_in_regions(labels, torch.tensor([[0, 5, 5, 5]])).tolist() == [[1, 2, 2, 2]]
    assert vote_in_regions(torch.tensor([[3, 1]]), torch.tensor([[0, 1]])).tolist() == [[3, 1]]
    assert vote_in_regions(torch.tensor([[3, 1, 0]]), torch.tensor([[4, 4, 0]])).tolist() == [[1, 1, 0]]  # tie


def test_regions_from_masks_larger_masks_overwrite_smaller():
    masks = Boxes().generate(np.zeros((8, 12, 3), np.uint8))
    got = regions_from_masks(masks, (8, 12))
    assert torch.equal(got, reference_regions(masks, (8, 12)))
    assert got[7, 0] == 2 and got[7, 11] == 1 and got[0, 11] == 3  # area 32 < 32 (stable) < 48
    assert torch.equal(regions_from_masks([], (3, 4)), torch.zeros(3, 4, dtype=torch.long))


def test_spatial_layers_follow_the_original():
    assert spatial_layers(12) == [5, 6, 7, 8, 9]
    assert spatial_layers(24) == list(range(10, 22))
    assert spatial_layers(32) == list(range(2, 30))
    assert spatial_layers(8) == [2, 3, 4, 5]


def test_sam_runs_once_per_image_and_windows_see_its_crops(models):
    _, wrapped, dino = models
    boxes = Boxes()
    method = get_map("corrclip", vfm=dino, sam=boxes)
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0))
    maps = method(wrapped, [image], ["a", "b"], window=64, stride=32, normalization="raw")
    assert boxes.calls == 1 and maps.raw.shape == (1, 2, 64, 96) and torch.isfinite(maps.raw).all()
    whole = method(wrapped, [image], ["a", "b"], normalization="raw")
    assert boxes.calls == 2 and whole.raw.shape == (1, 2, 8, 12)


@pytest.fixture(scope="module")
def random_sam():
    """SAM's real vit_b, random weights, its encoder cut to one block (tests/tasks/sam_helpers.py: ~2 s, not 20)."""
    from tests.tasks.sam_helpers import random_sam

    return random_sam()


def test_random_sam_end_to_end(models, random_sam):
    _, wrapped, dino = models
    method = get_map("corrclip", vfm=dino, sam=random_sam, points_per_side=2, pred_iou_thresh=0.0,
                     stability_score_thresh=0.0)
    gen = method.mask_generator(wrapped)
    assert type(gen).__name__ == "SamAutomaticMaskGenerator"
    assert (gen.pred_iou_thresh, gen.stability_score_thresh, len(gen.point_grids[0])) == (0.0, 0.0, 4)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    px = wrapped.preprocess([image]).double()
    regions = method.regions(wrapped, px)
    assert regions.shape == (1, 64, 64) and regions.dtype == torch.long and regions.min() == 0
    t = TextEmbeddings(random_directions(2, seed=1), ("a", "b"))
    ours = method.raw(wrapped, torch.cat([px, regions[:, None].double()], 1), t)
    assert ours.shape == (1, 2, 8, 8) and torch.isfinite(ours).all()


def test_errors_are_one_paragraph(models):
    _, wrapped, dino = models
    x = random_images(1, (64, 64)).double()
    t = TextEmbeddings(random_directions(1), ("a",))
    with pytest.raises(UnsupportedArchitectureError, match="sam_checkpoint=PATH"):
        get_map("corrclip", vfm=dino)(wrapped, [torch.rand(3, 64, 64)], ["a"])
    with pytest.raises(InvalidInputError, match="sam must be one of vit_b"):
        get_map("corrclip", vfm=dino, sam="vit_q", sam_checkpoint="x.pth").raw(wrapped, x, t)
    with pytest.raises(InvalidInputError, match="does not exist"):
        get_map("corrclip", vfm=dino, sam="vit_b", sam_checkpoint="/nonexistent/sam.pth").raw(wrapped, x, t)
    with pytest.raises(InvalidInputError, match="points_per_side"):
        get_map("corrclip", points_per_side=0)
    with pytest.raises(InvalidInputError, match="merge_eps must be > 0"):
        get_map("corrclip", merge_eps=0)
    with pytest.raises(InvalidInputError, match="pred_iou_thresh"):
        get_map("corrclip", pred_iou_thresh=1.5)
    with pytest.raises(InvalidInputError, match="spatial layers"):
        get_map("corrclip", vfm=dino, sam=Boxes(), spatial_layers=[7]).raw(wrapped, x, t)


def test_sam2_by_name_says_how_to_install_it(models, tmp_path):
    import importlib.util

    from cliplens.errors import MissingDependencyError

    if importlib.util.find_spec("sam2") is not None:
        pytest.skip("SAM 2 is installed here")
    _, wrapped, dino = models
    ckpt = tmp_path / "sam2_hiera_large.pt"
    ckpt.write_bytes(b"")
    method = get_map("corrclip", vfm=dino, sam="sam2_hiera_l", sam_checkpoint=str(ckpt))
    with pytest.raises(MissingDependencyError, match=r"needs SAM 2, which is not installed: pip install sam2"):
        method.raw(wrapped, random_images(1, (64, 64)).double(), TextEmbeddings(random_directions(1), ("a",)))


def test_listed_with_its_parameters():
    from cliplens.maps import map_names
    from cliplens.maps.params import method_parameters

    assert "corrclip" in map_names() and "corrclip" in map_names(second_backbone=True)
    assert "corrclip" not in map_names(second_backbone=False) and "naclip" in map_names(second_backbone=False)

    params = {p.name: p.default for p in method_parameters("corrclip")}
    assert params["vfm"] == "dino_vitb8" and params["sam"] == "sam2_hiera_l" and params["points_per_side"] == 8
    assert params["positional"] == "bicubic_dino" and params["tau"] == 4.0 and params["beta"] == 0.5


def test_map_correction_votes_in_sams_regions_placed_on_the_image(models, monkeypatch):
    """The maps carry SAM's regions of the fitted input; correct_labels places them on the image as the maps are
    placed (nearest) and gives each region but the smallest its most frequent label, as the original's
    postprocess_result; segment() applies it; map_correction=False leaves labels alone."""
    from cliplens.maps.corrclip import CorrCLIP
    from cliplens.tasks.segment import segment

    _, wrapped, dino = models
    image = torch.rand(3, 80, 120, generator=torch.Generator().manual_seed(5))  # fitted to 64x96: box scale 1.25
    method = get_map("corrclip", vfm=dino, sam=Boxes())
    item = method(wrapped, [image], ["a", "b", "c"], size=64)[0]
    on_input = reference_regions(Boxes().generate(np.zeros((64, 96, 3), np.uint8)), (64, 96))
    assert item.regions is not None and torch.equal(item.regions, torch.unique(on_input, return_inverse=True)[1])
    # the boxes as SAM would have drawn them on the 80x120 image (each edge scales exactly by 1.25)
    on_image = reference_regions(Boxes().generate(np.zeros((80, 120, 3), np.uint8)), (80, 120))
    labels = torch.randint(0, 4, (80, 120), generator=torch.Generator().manual_seed(1))
    fixed = method.correct_labels(item, labels)
    assert torch.equal(fixed, reference_vote(labels, on_image)) and not torch.equal(fixed, labels)
    off = get_map("corrclip", vfm=dino, sam=Boxes(), map_correction=False)
    assert off(wrapped, [image], ["a"], size=64)[0].regions is None and off.correct_labels(item, labels) is labels
    # segment() hands its labels to the method's correction
    seen = []
    original = CorrCLIP.correct_labels
    monkeypatch.setattr(CorrCLIP, "correct_labels", lambda self, m, lab: seen.append((m, lab)) or original(self, m, lab))
    out = segment(method, wrapped, [image], ["a", "b", "c"], threshold=0.0, templates=None, size=64)[0].labels
    (m, lab), = seen
    assert m.regions is not None and torch.equal(out, reference_vote(lab, on_image))
