"""PAMR against a naive, pixel-by-pixel implementation of its formula, and in the segmentation protocol."""

from __future__ import annotations

import math

import pytest
import torch

from cliplens.errors import InvalidInputError
from cliplens.maps.pamr import affinities, pamr


def naive_pamr(image: torch.Tensor, scores: torch.Tensor, iterations: int, dilations: list[int]) -> torch.Tensor:
    """Loops over pixels: neighbours at d·(±1|0, ±1|0), border replicated (indices clamped); σ the unbiased standard
    deviation of each channel over the 9 pixels of every dilation; α the softmax over neighbours of the channel
    mean of −|x_i − x_j| / (1e-8 + 0.1 σ); then ``iterations`` times m_i ← Σ_j α_ij m_j."""
    _, C, H, W = image.shape
    x = image[0].double()
    m = scores[0].double().clone()
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

    def at(t, i, j):
        return t[:, min(max(i, 0), H - 1), min(max(j, 0), W - 1)]

    alpha = {}
    for i in range(H):
        for j in range(W):
            around = [at(x, i + dy * d, j + dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            stack = torch.stack(around, 1)  # [C, 9·len(d)]
            n = stack.shape[1]
            mean = stack.sum(1) / n
            sd = torch.sqrt(((stack - mean[:, None]) ** 2).sum(1) / (n - 1))
            logits = []
            for d in dilations:
                for dy, dx in offsets:
                    diff = (x[:, i, j] - at(x, i + dy * d, j + dx * d)).abs()
                    logits.append(float((-diff / (1e-8 + 0.1 * sd)).sum() / C))
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            alpha[i, j] = [v / sum(e) for v in e]
    for _ in range(iterations):
        new = torch.zeros_like(m)
        for i in range(H):
            for j in range(W):
                p = 0
                for d in dilations:
                    for dy, dx in offsets:
                        new[:, i, j] += alpha[i, j][p] * at(m, i + dy * d, j + dx * d)
                        p += 1
        m = new
    return m[None]


@pytest.mark.parametrize("dilations", [[1], [1, 3]])
def test_pamr_is_its_formula(dilations):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 7, 9, generator=g)
    scores = torch.randn(1, 4, 7, 9, generator=g)
    got = pamr(image, scores, iterations=3, dilations=dilations)
    torch.testing.assert_close(got.double(), naive_pamr(image, scores, 3, dilations), rtol=1e-5, atol=1e-6)
    alpha = affinities(image, dilations)
    torch.testing.assert_close(alpha.sum(1), torch.ones(1, 7, 9))  # a weighted mean of the neighbours


def test_pamr_keeps_constants_and_follows_edges():
    image = torch.zeros(1, 3, 12, 12)
    image[..., :, 6:] = 1.0  # two regions
    scores = torch.full((1, 2, 12, 12), 0.25)
    torch.testing.assert_close(pamr(image, scores, 5, [1, 2]), scores)  # constants stay
    noisy = torch.zeros(1, 1, 12, 12)
    noisy[..., 3, 2] = 1.0  # a spike in the left region
    out = pamr(image, noisy, 4, [1])
    assert out[..., :, 6:].abs().max() < 1e-3 < out[..., :, :6].sum()  # it spreads within its region only


def test_bad_arguments_are_clear_errors():
    with pytest.raises(InvalidInputError, match="iterations >= 0"):
        pamr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), iterations=-1)
    with pytest.raises(InvalidInputError, match=r"\[B, C, H, W\]"):
        pamr(torch.zeros(3, 4, 4), torch.zeros(1, 2, 4, 4))


def test_segment_eval_with_pamr_records_it_and_changes_the_labels(tmp_path):
    from tests.cli.conftest import run

    def miou(args, out):
        r = run("segment-eval", "toy:n=3,seed=3", "--method", "maskclip", "--out", tmp_path / out, "--overlays", 0,
                "--json", *args)
        assert r.exit_code == 0, r.output
        import json

        d = json.loads(r.stdout)["methods"]["maskclip"]
        saved = json.loads((tmp_path / out / "maskclip" / "progress.json").read_text())["settings"]["protocol"]
        return d["per_class_iou"], saved

    plain, saved_plain = miou([], "a")
    refined, saved = miou(["--pamr", "10", "--pamr-dilations", "1,2"], "b")
    assert "pamr" not in saved_plain and saved["pamr"] == 10 and saved["pamr_dilations"] == [1, 2]
    assert plain != refined
