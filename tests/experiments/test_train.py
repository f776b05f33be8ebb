import json

import torch

from cliplens.experiments.evaluate import TARGETS, evaluate, format_table
from cliplens.experiments.train import TrainConfig, contrastive_loss, lr_at, make_batch, train
from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, load_toy_clip
from cliplens.toyworld.tokenizer import ToyTokenizer

TINY = dict(image_size=32, patch_size=8, width=32, layers=2, heads=2, embed_dim=16, text_width=32,
            text_layers=1, text_heads=2, context_length=48)


def _cfg(**kw):
    base = dict(seed=3, steps=4, batch_size=8, lr=1e-3, warmup=2, checkpoint_every=2, log_every=1,
                num_workers=0, threads=1, model=ToyCLIPConfig(**TINY))
    base.update(kw)
    return TrainConfig(**base)


def test_batch_is_deterministic_and_targets_valid():
    cfg = _cfg()
    tok = ToyTokenizer(context_length=48)
    a = make_batch(cfg, 5, tok)
    b = make_batch(cfg, 5, tok)
    c = make_batch(cfg, 6, tok)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["tokens"], b["tokens"])
    assert not torch.equal(a["images"], c["images"])
    t = a["targets"]
    assert t.shape == (8, 8 + 2) and t.dtype == torch.bool
    assert t[:, :8].diagonal().all()
    assert a["images"].shape == (8, 32, 32, 3) and a["images"].dtype == torch.uint8


def test_contrastive_loss_prefers_matching():
    e = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    tg = torch.eye(6, dtype=torch.bool)
    good = contrastive_loss(e, e, torch.tensor(10.0), tg, 6)
    bad = contrastive_loss(e, e.roll(1, 0), torch.tensor(10.0), tg, 6)
    assert good < bad
    # a second positive lowers the loss when its logit is high
    tg2 = tg.clone()
    tg2[0, 1] = True
    e2 = e.clone()
    e2[1] = e[0]
    assert contrastive_loss(e, e2, torch.tensor(10.0), tg2, 6) < contrastive_loss(e, e2, torch.tensor(10.0), tg, 6)


def test_lr_schedules():
    cfg = _cfg(steps=100, warmup=10, schedule="wsd", decay_frac=0.3)
    assert lr_at(cfg, 0) < lr_at(cfg, 9) == cfg.lr == lr_at(cfg, 69)
    assert lr_at(cfg, 85) < cfg.lr and lr_at(cfg, 100) == cfg.lr * cfg.min_lr_frac
    cos = _cfg(steps=100, warmup=10, schedule="cosine")
    assert lr_at(cos, 10) > lr_at(cos, 50) > lr_at(cos, 99)


def _state_tensors(folder):
    from safetensors.torch import load_file

    rec = json.loads((folder / "checkpoint.json").read_text())
    return rec, load_file(folder / rec["tensors"])


def test_train_checkpoint_resume_matches_uninterrupted(tmp_path):
    full = train(_cfg(), tmp_path / "a", progress=False)
    assert full["steps_done"] == 4 and full["stopped"] == "done"

    part = train(_cfg(), tmp_path / "b", progress=False, stop_after=2)
    assert part["steps_done"] == 2 and part["stopped"] == "stop_after"
    rec, _ = _state_tensors(tmp_path / "b")
    assert rec["step"] == 2 and rec["tensors"] == "checkpoint-00000002.safetensors"
    assert not (tmp_path / "b" / "checkpoint.pt").exists()  # no pickle is written
    res = train(_cfg(steps=999), tmp_path / "b", resume=True, progress=False,
                export=tmp_path / "b" / "m.safetensors")
    assert res["steps_done"] == 4  # the checkpoint's config (steps=4) wins
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    # bit for bit the uninterrupted run: weights, optimizer moments, random states
    ra, a = _state_tensors(tmp_path / "a")
    rb, b = _state_tensors(tmp_path / "b")
    assert sorted(a) == sorted(b) and any(k.startswith("optimizer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ra["step"] == rb["step"] == 4 and ra["optimizer"] == rb["optimizer"]
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-00000004.safetensors"]
    m, tok = load_toy_clip(tmp_path / "b" / "m.safetensors")
    side = json.loads((tmp_path / "b" / "m.json").read_text())
    assert side["training"]["steps_done"] == 4 and side["vocab"] == tok.vocab


def test_evaluate_tiny():
    torch.manual_seed(0)
    tok = ToyTokenizer(context_length=48)
    m = ToyCLIP(ToyCLIPConfig(vocab_size=len(tok), **TINY))
    r = evaluate(m, tok, n=8, seed=1, n_retrieval=12)
    for k in ("colour", "shape", "count", "position", "background", "size", "i2t_r1", "t2i_r1",
              "i2t_r5", "t2i_r5"):
        assert 0.0 <= r[k] <= 1.0, k
    assert r["details"]["colour"]["n"] == 8
    assert sum(map(sum, r["details"]["shape"]["confusion"])) == 8
    assert set(TARGETS) <= set(r)
    rows = format_table(r)
    assert rows[0][0] == "colour" and "a photo of a red shape" in rows[0][3]


def test_prompt_bank_and_loss():
    from cliplens.experiments.train import prompt_bank, prompt_bank_loss

    texts, facts, groups = prompt_bank()
    tok = ToyTokenizer(context_length=48)
    assert tok.unknown_words(texts) == [] and len(texts) == len(facts) == len(groups)
    assert "a photo of a star" in texts and "a photo of two shapes" in texts
    g = torch.tensor(groups)
    torch.manual_seed(0)
    txt = torch.nn.functional.normalize(torch.randn(len(texts), 8), dim=-1)
    # images that equal the embedding of one true prompt per group score lower than random ones
    from cliplens.toyworld.captions import consistency_matrix, scene_facts
    from cliplens.toyworld.scenes import sample_scene

    scenes = [sample_scene(0, i, count=1) for i in range(6)]
    tg = torch.from_numpy(consistency_matrix([scene_facts(s) for s in scenes], facts))
    assert bool((tg.sum(1) >= 6).all())  # every scene satisfies a prompt in (almost) every group
    img_rand = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    shape_idx = [texts.index("a photo of a " + s.objects[0].shape) for s in scenes]
    img_good = txt[shape_idx]
    for center in (False, True):
        good = prompt_bank_loss(img_good, txt[g == 0], torch.tensor(20.0), tg[:, g == 0], g[g == 0], center=center)
        bad = prompt_bank_loss(img_rand, txt[g == 0], torch.tensor(20.0), tg[:, g == 0], g[g == 0], center=center)
        assert good < bad


def test_text_lr_mult_schedule():
    from cliplens.experiments.train import text_lr_mult

    cfg = _cfg(text_lr_mult=0.1, text_lr_hold=10)
    assert text_lr_mult(cfg, 0) == 0.1 == text_lr_mult(cfg, 9)
    assert 0.1 < text_lr_mult(cfg, 15) < 1.0 and text_lr_mult(cfg, 20) == 1.0
    assert text_lr_mult(_cfg(), 0) == 1.0


def test_mirror_pairs_and_their_term():
    from cliplens.experiments.train import mirror_pairs, prompt_bank_loss
    from cliplens.toyworld.captions import consistency_matrix, scene_facts
    from cliplens.toyworld.scenes import sample_scene

    texts, facts, groups = mirror_pairs()
    assert len(texts) == len(facts) == len(groups) == 12 and sorted(set(groups)) == list(range(6))
    assert texts[:2] == ["a photo of a shape on the left", "a photo of a shape on the right"]
    assert ToyTokenizer(context_length=48).unknown_words(texts) == []
    g = torch.tensor(groups)
    # one object on the left, one on the right, one on both sides of a pair (no contrast: skipped)
    scenes = [sample_scene(0, 0, count=1, positions="left"), sample_scene(0, 1, count=1, positions="right"),
              sample_scene(0, 2, count=2, positions=("left", "right"))]
    scenes[2].objects[1].position = "right" if scenes[2].objects[0].position == "left" else "left"
    tg = torch.from_numpy(consistency_matrix([scene_facts(s) for s in scenes], facts))
    assert tg[0, :2].tolist() == [True, False] and tg[1, :2].tolist() == [False, True]
    assert tg[2, :2].tolist() == [True, True]
    # texts nearly alike: the centred pair term still tells left from right at full strength
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(8), dim=0)
    diff = torch.nn.functional.normalize(torch.randn(8), dim=0)
    txt = torch.nn.functional.normalize(torch.randn(12, 8) * 0.01 + base, dim=-1)
    txt[0] = torch.nn.functional.normalize(base + 1e-3 * diff, dim=0)
    txt[1] = torch.nn.functional.normalize(base - 1e-3 * diff, dim=0)
    img = torch.stack([diff, -diff, diff])
    sel = g == 0
    good = prompt_bank_loss(img, txt[sel], torch.tensor(20.0), tg[:, sel], g[sel], center=True, skip_all_true=True)
    bad = prompt_bank_loss(-img, txt[sel], torch.tensor(20.0), tg[:, sel], g[sel], center=True,
                           skip_all_true=True)
    assert good < 0.01 < 5 < bad
    plain = prompt_bank_loss(img, txt[sel], torch.tensor(20.0), tg[:, sel], g[sel])
    assert abs(float(plain) - 0.693) < 0.05  # uncentred, the two prompts are indistinguishable


def test_train_with_mirror_pairs(tmp_path):
    tok = ToyTokenizer(context_length=48)
    b = make_batch(_cfg(bank_pairs=1.0), 0, tok)
    assert b["pair_targets"].shape == (8, 12) and "bank_targets" in b
    s = train(_cfg(bank_pairs=1.0, bank_center=True, steps=2), tmp_path / "p", progress=False)
    assert s["steps_done"] == 2 and s["train_config"]["bank_pairs"] == 1.0
