"""Neurons' second-order effects (cliplens.analyses.neurons) against the naive float64 loops of
tests/analyses/neurons_reference.py, the decomposition's identity, and the paper's PCA / OMP / ablation recipes
re-derived with plain loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import cliplens
from cliplens.analyses.neurons import (
    SecondOrder,
    ablation_study,
    describe,
    neuron_maps,
    omp,
    principal_components,
    second_order,
    text_dictionary,
)
from cliplens.errors import InvalidInputError
from tests.analyses.neurons_reference import forward64, neuron_effects_naive, through_head
from tests.conftest import pixels, tiny_open_clip

NEURONS = [0, 3, 77, 200, 255]


@pytest.fixture(scope="module")
def tiny():
    """A tiny random open_clip ViT (4 blocks, layer-scale) and its float64 adapter."""
    m = tiny_open_clip(layer_scale=True, layers=4)
    return m, cliplens.wrap(copy.deepcopy(m)).to(dtype=torch.float64)


@pytest.mark.parametrize("layer", [0, 2])
def test_effects_equal_naive_loops_over_neurons_and_heads(tiny, layer):
    m, ad = tiny
    x = pixels(2, 64, seed=41)
    got = second_order(ad, x, [layer], neurons=NEURONS, per_token=True, dtype=torch.float64, chunk=2)[layer]
    ref, ref_tok = neuron_effects_naive(m, x, layer, NEURONS)
    assert np.abs(got.effects.numpy() - ref).max() <= 1e-10 * np.abs(ref).max()
    assert np.abs(got.tokens.numpy() - ref_tok).max() <= 1e-10 * np.abs(ref_tok).max()
    assert got.tokens.shape == (2, len(NEURONS), 17, m.visual.proj.shape[1])


def test_float32_default_is_close_and_chunks_do_not_matter(tiny):
    m, _ = tiny
    ad32 = cliplens.wrap(copy.deepcopy(m))
    x = pixels(2, 64, seed=42)
    a = second_order(ad32, x, [1], chunk=1024)[1]
    b = second_order(ad32, x, [1], chunk=37)[1]
    ref, _ = neuron_effects_naive(m, x, 1, list(range(256)))
    assert a.effects.dtype == torch.float32 and a.effects.shape == (2, 256, ref.shape[-1])
    assert np.abs(a.effects.double().numpy() - ref).max() <= 2e-5 * np.abs(ref).max()
    assert torch.allclose(a.effects, b.effects, rtol=0, atol=1e-6 * float(a.effects.abs().max()))
    z = ad32.encode_image(x)
    assert torch.allclose(a.norms, z.norm(dim=-1))
    assert torch.allclose(a.scaled(), 100 * a.effects / z.norm(dim=-1)[:, None, None])


def test_layer_neurons_plus_the_rest_sum_to_the_decompositions_head_terms(tiny):
    """Σ_n φ_n + (every other component of the residual, with the remaining share) through the later heads equals
    the decomposition's head terms of those layers: the neurons' shares are nested in the decomposition's."""
    m, ad = tiny
    x = pixels(2, 64, seed=43)
    k = 1
    eff = second_order(ad, x, [k], dtype=torch.float64)[k].effects.sum(1).numpy()  # [B, E]
    fw = forward64(m, x)
    L, H = 4, 4
    rest = np.zeros_like(eff)
    for b in range(2):
        for lat in range(k + 1, L):
            u = fw["resid_pre"][lat][b] - fw["mlp_out"][k][b]
            for h in range(H):
                rest[b] += through_head(m, fw, b, lat, h, u, 2 * lat / (2 * lat + 1)).sum(0)
    dec = ad.decompose(x, spatial=False, dtype=torch.float64).head_terms()  # [B, L, H, E]
    target = dec[:, k + 1:].sum((1, 2)).numpy()
    assert np.abs(eff + rest - target).max() <= 1e-10 * np.abs(target).max()
    assert np.abs(eff).max() > 1e-3 * np.abs(target).max()  # the neurons carry a real part of it


def test_refusals_are_readable(tiny, random_toy_weights):
    _, ad = tiny
    x = pixels(1, 64)
    with pytest.raises(InvalidInputError, match="no later attention head"):
        second_order(ad, x, [3])
    with pytest.raises(InvalidInputError, match="does not exist"):
        second_order(ad, x, [9])
    with pytest.raises(InvalidInputError, match="hidden width"):
        second_order(ad, x, [0], neurons=[256])
    from tests.pooled_towers import pooled_toy

    with pytest.raises(InvalidInputError, match="CLS-pooled"):
        SecondOrder(pooled_toy(random_toy_weights, "map"), [0])


def _pcs_by_loops(eff: np.ndarray, top_k: int):
    """compute_pcas.py's recipe, one neuron at a time."""
    mean = eff.mean(0)
    pcs, norms = [], []
    for n in range(eff.shape[1]):
        cur = eff[:, n] - mean[n]
        nr = np.linalg.norm(cur, axis=-1)
        imp = cur[np.argsort(nr)[-top_k:]]
        norms.append(np.sort(nr)[-top_k:])
        vh = np.linalg.svd(imp, full_matrices=False)[2]
        pcs.append(vh[0] if (imp @ vh[0] > 0).sum() > top_k // 2 else -vh[0])
    return mean, np.stack(pcs), np.stack(norms)


def test_principal_components_follow_the_papers_recipe_and_find_a_planted_direction():
    rng = np.random.default_rng(44)
    n_img, n, E = 300, 6, 16
    dirs = rng.standard_normal((n, E))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    amp = np.abs(rng.standard_normal((n_img, n))) * (rng.random((n_img, n)) < 0.2) * 5  # selective, positive
    eff = amp[..., None] * dirs[None] + 0.05 * rng.standard_normal((n_img, n, E)) + 0.3
    comp = principal_components(eff, layer=3, top_k=40, chunk=4)
    mean, pcs, norms = _pcs_by_loops(eff, 40)
    assert np.allclose(comp.mean, mean) and np.allclose(comp.norms, norms)
    assert np.allclose(comp.pcs, pcs, atol=1e-10)
    assert (np.einsum("nd,nd->n", comp.pcs, dirs) > 0.99).all()  # the planted direction, with its sign
    assert np.allclose(comp.threshold, norms[:, 0])
    assert (comp.explained > 0.9).all()


def test_omp_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(45)
    Dm = rng.standard_normal((60, 20)) * rng.uniform(0.5, 2.0, (60, 1))  # atoms of different norms, as the paper's
    y = rng.standard_normal((7, 20))
    got = omp(torch.as_tensor(y), torch.as_tensor(Dm), 5).numpy()
    ref = sklearn.orthogonal_mp(Dm.T, y.T, n_nonzero_coefs=5).T
    assert np.allclose(got, ref, atol=1e-8)
    assert ((got != 0).sum(1) == 5).all()


def test_describe_recovers_planted_texts():
    rng = np.random.default_rng(46)
    T, E = 50, 24
    emb = torch.as_tensor(rng.standard_normal((T, E)))
    texts = [f"text {i}" for i in range(T)]
    Dm = text_dictionary(emb)
    pcs = (2.0 * Dm[7] - 1.0 * Dm[30]).numpy()[None]
    from cliplens.analyses.neurons import NeuronComponents

    comp = NeuronComponents(layer=2, neurons=np.array([5]), mean=np.zeros((1, E)), pcs=pcs,
                            norms=np.ones((1, 3)), explained=np.ones(1), top_images=np.zeros((1, 3), dtype=int))
    desc, recon = describe(comp, texts, emb, n_texts=2)
    assert desc[0].texts == ["text 7", "text 30"] and np.allclose(desc[0].weights, [2.0, -1.0])
    assert desc[0].cosine == pytest.approx(1.0) and desc[0].neuron == 5
    assert torch.allclose(recon, torch.as_tensor(pcs))
    assert "'text 7'" in desc[0].line()


def test_ablation_study_equals_the_papers_per_image_loop():
    rng = np.random.default_rng(47)
    n_img, n, E, C = 40, 8, 12, 5
    eff = rng.standard_normal((n_img, n, E))
    z = torch.as_tensor(rng.standard_normal((n_img, E)))
    W = torch.as_tensor(rng.standard_normal((E, C)))
    y = rng.integers(0, C, n_img)
    comp = principal_components(eff, top_k=10)
    rec = torch.as_tensor(rng.standard_normal((n, E)))
    got = ablation_study(eff, z, y, W, comp, reconstructions=rec)
    rep = (100 * z / z.norm(dim=-1, keepdim=True)).numpy()
    Wn = W.numpy()
    acc = {k: 0 for k in got}
    for i in range(n_img):  # compute_ablations.py, one image at a time
        cen = eff[i] - comp.mean
        base = rep[i] - eff[i].sum(0) + comp.mean.sum(0)
        sig = np.linalg.norm(cen, axis=-1) > comp.norms[:, 0]
        reps = {"baseline": rep[i], "mean_ablated": base, "without_significant": base + cen[~sig].sum(0),
                "without_insignificant": base + cen[sig].sum(0),
                "principal_components": base + ((cen * comp.pcs).sum(1)[:, None] * comp.pcs).sum(0),
                "texts": base + ((cen * rec.numpy()).sum(1)[:, None] * rec.numpy()).sum(0)}
        for k, v in reps.items():
            acc[k] += int(np.argmax(v @ Wn) == y[i])
    assert got == {k: v / n_img for k, v in acc.items()}


def test_neuron_maps_average_the_chosen_neurons_activations(tiny):
    m, ad = tiny
    x = pixels(2, 64, seed=48)
    E = m.visual.proj.shape[1]
    rng = np.random.default_rng(49)
    from cliplens.analyses.neurons import NeuronComponents

    comps = [NeuronComponents(layer=k, neurons=np.arange(256), mean=np.zeros((256, E)),
                              pcs=rng.standard_normal((256, E)), norms=np.ones((256, 2)), explained=np.ones(256),
                              top_images=np.zeros((256, 2), dtype=int)) for k in (1, 2)]
    W = torch.as_tensor(rng.standard_normal((E, 3)))
    maps, classes = neuron_maps(ad, x, comps, W, top=10)
    fw = forward64(m, x)
    z = fw["embedding"]
    assert classes.tolist() == list(np.argmax(z @ W.numpy(), 1))
    pcs = np.concatenate([c.pcs for c in comps])
    for b in range(2):
        chosen = np.argsort(-np.abs(pcs @ W.numpy()[:, classes[b]]))[:10]
        acts = [fw["hidden"][1 + i // 256][b, 1:, i % 256] for i in chosen]
        assert np.allclose(maps[b].numpy(), np.mean(acts, 0).reshape(4, 4), atol=1e-10)


def test_real_shape_vit_b16_equals_naive_loops():
    """ViT-B-16's width, heads, patch and 3,072-neuron MLPs (4 of its blocks; 64 px to keep the loops short): the
    batched effects of every neuron, checked on two of them against the naive loops."""
    from tests.conftest import oc_vit

    m = oc_vit("B-16", layers=4, image_size=64, seed=84)
    ad = cliplens.wrap(copy.deepcopy(m)).to(dtype=torch.float64)
    x = pixels(1, 64, seed=85)
    got = second_order(ad, x, [1], dtype=torch.float64, chunk=1000)[1]
    assert got.effects.shape == (1, 3072, 512)
    ref, _ = neuron_effects_naive(m, x, 1, [0, 3071])
    assert np.abs(got.effects[:, [0, 3071]].numpy() - ref).max() <= 1e-10 * np.abs(ref).max()
