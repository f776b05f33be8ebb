"""Contrastive training of ToyCLIP on procedurally generated scenes.

Reproducible from a seed: the model is initialised after ``torch.manual_seed(seed)`` and the batch
of step ``t`` depends only on ``(seed, t)`` (scenes ``t*B .. t*B+B-1`` of the training stream, and
a caption generator seeded with ``(seed, t)``), so a resumed run sees exactly the batches an
uninterrupted run would have seen.

Loss: symmetric InfoNCE with *label-aware* targets. Every caption carries the facts it claims
(see :mod:`cliplens.toyworld.captions`); a caption counts as a positive for every image in the
batch it is true of, and the targets of a row are spread uniformly over its positives. So "a red
circle" is not pushed away from the other images that do contain a red circle (no in-batch false
negatives). Each batch also carries extra *hard-negative* captions: full captions of the batch's
scenes with one factor changed (a colour, a shape, two objects' colours swapped, a position,
the background, one object more or fewer); they only add columns to the image->text softmax.
"""

from __future__ import annotations

import functools
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.errors import OutputExistsError
from cliplens.experiments.evaluate import evaluate
from cliplens.experiments.spurious import (
    DEFAULT_SPEC,
    SpuriousSpec,
    group_accuracies,
    spurious_training_batch,
)
from cliplens.experiments.train_state import (
    earlier_run,
    load_training_state,
    prepare_run,
    save_training_state,
)
from cliplens.toyworld.captions import (
    NUMBER_WORDS,
    bg_phrase,
    consistency_matrix,
    count_phrase,
    hard_negative,
    object_phrase,
    sample_caption,
    scene_facts,
)
from cliplens.toyworld.model import (
    DEFAULT_WEIGHTS,
    ToyCLIP,
    ToyCLIPConfig,
    load_toy_clip,
    save_toy_clip,
    with_pooling,
)
from cliplens.toyworld.scenes import (
    BG_COLOURS,
    BG_KINDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    render_batch,
    sample_scene,
    twin_scene,
)
from cliplens.toyworld.tokenizer import ToyTokenizer

__all__ = ["TrainConfig", "make_batch", "train", "contrastive_loss", "BatchDataset", "lr_at", "finetune_spurious"]


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 3000
    minutes: float | None = None  # hard wall-clock cap (stops early, then exports)
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_frac: float = 0.02
    warmup: int = 150
    #: "cosine" (over ``steps``) or "wsd" (warmup, stable, then a linear decay over the last
    #: ``decay_frac`` of the run). With ``minutes`` and no ``decay_start``, WSD starts the decay when
    #: ``1 - decay_frac`` of the time budget is spent and sizes it from the measured speed; the chosen
    #: ``decay_start``/``steps`` are stored in the config (and the checkpoint) so the run can be
    #: reproduced exactly with ``steps``/``decay_start`` given.
    schedule: str = "wsd"
    decay_frac: float = 0.3
    decay_start: int | None = None
    weight_decay: float = 0.1
    p_full: float = 0.35
    p_factor: float = 0.5  # of the partial captions, the fraction that name a single factor
    neg_frac: float = 0.25  # hard-negative captions per batch, as a fraction of the batch
    #: fraction of the batch that are "twin" images: copies of other scenes of the batch with one
    #: factor changed (mostly shape or background kind), so that in-batch contrast needs every factor
    twin_frac: float = 0.4
    grad_clip: float = 1.0
    #: weight of the prompt-bank term: every batch also contrasts each image against fixed sets of
    #: single-factor prompts (all shapes, all colours, sizes, positions, counts, background kinds and
    #: colours), an image->text InfoNCE within each set with label-aware (multi-positive) targets
    prompt_bank: float = 1.0
    bank_center: bool = False
    #: weight of the mirror-pair term: like the prompt bank, but each group is one pair of cells that
    #: mirror each other (left | right, top left | top right, bottom left | bottom right, and the same
    #: top <-> bottom); with ``bank_center`` a two-prompt group reduces to the *difference* of its
    #: prompts, so the image tower is pushed to tell the two sides apart even while the text tower
    #: still embeds "left" and "right" almost alike
    bank_pairs: float = 0.0
    text_lr_mult: float = 1.0
    text_lr_hold: int = 0
    checkpoint_every: int = 200
    eval_every: int = 0  # if > 0: quick held-out eval every this many steps (logged)
    log_every: int = 25
    num_workers: int = 1
    threads: int = 2
    count_weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    model: ToyCLIPConfig = field(default_factory=ToyCLIPConfig)
    # optional: start from weights (fine-tuning) and a different data stream (e.g. spurious)
    init_weights: str | None = None
    data: str = "train"
    data_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ToyCLIPConfig.from_dict(d["model"])
        d["count_weights"] = tuple(d.get("count_weights", (0.25,) * 4))
        return cls(**d)


# --------------------------------------------------------------------------- data
def make_batch(cfg: TrainConfig, step: int, tokenizer: ToyTokenizer) -> dict[str, Tensor]:
    """The batch of ``step``: uint8 images, tokens (real captions then hard negatives), targets."""
    b = cfg.batch_size
    if cfg.data == "spurious":
        scenes, captions, fact_scenes = spurious_training_batch(cfg.seed, step, b, return_fact_scenes=True,
                                                                **cfg.data_options)
        rng = np.random.default_rng([cfg.seed, 101, step])
    else:
        n_twin = int(round(cfg.twin_frac * b))
        scenes = [
            sample_scene(cfg.seed, step * b + i, stream="train", image_size=cfg.model.image_size,
                         count_weights=cfg.count_weights)
            for i in range(b - n_twin)
        ]
        rng = np.random.default_rng([cfg.seed, 100, step])
        scenes += [twin_scene(scenes[k % len(scenes)], rng) for k in range(n_twin)]
        captions = [sample_caption(s, rng, cfg.p_full, cfg.p_factor) for s in scenes]
        fact_scenes = scenes
    n_neg = int(round(cfg.neg_frac * b))
    negs = [hard_negative(scenes[int(i)], rng) for i in rng.permutation(b)[:n_neg]]
    caps = captions + negs
    targets = consistency_matrix([scene_facts(s) for s in fact_scenes], [c.facts for c in caps])
    tokens = tokenizer.encode([c.text for c in caps])
    # crop trailing all-padding columns (the text tower is causal: padding never matters)
    used = int((tokens != tokenizer.pad_id).any(0).nonzero().max()) + 1
    out_extra: dict[str, Tensor] = {}
    if cfg.prompt_bank or cfg.bank_pairs:
        all_facts = [scene_facts(s) for s in scenes]
        if cfg.prompt_bank:
            out_extra["bank_targets"] = torch.from_numpy(consistency_matrix(all_facts, prompt_bank()[1]))
        if cfg.bank_pairs:
            out_extra["pair_targets"] = torch.from_numpy(consistency_matrix(all_facts, mirror_pairs()[1]))
    return {
        **out_extra,
        "images": torch.from_numpy(render_batch(scenes)),
        "tokens": tokens[:, :used].contiguous(),
        "targets": torch.from_numpy(targets),
        "n_real": torch.tensor(b),
    }


_BANK: tuple[list[str], list[frozenset], list[int]] | None = None


def prompt_bank() -> tuple[list[str], list[frozenset], list[int]]:
    """Fixed single-factor prompts ``(texts, facts, group ids)`` used by the prompt-bank term."""
    global _BANK
    if _BANK is None:
        texts: list[str] = []
        facts: list[frozenset] = []
        groups: list[int] = []

        def add(g: int, t: str, f: tuple) -> None:
            texts.append("a photo of " + t)
            facts.append(frozenset({f}))
            groups.append(g)

        for s in SHAPES:
            add(0, object_phrase(shape=s), ("obj", None, s, None, None))
        for c in COLOURS:
            add(1, object_phrase(c), ("obj", c, None, None, None))
        for z in SIZES:
            add(2, object_phrase(size=z), ("obj", None, None, z, None))
        for p in POSITIONS:
            add(3, object_phrase(position=p), ("obj", None, None, None, p))
        for n in NUMBER_WORDS:
            add(4, count_phrase(n, None, None), ("count", None, None, n))
        for k in BG_KINDS:
            add(5, bg_phrase(k, None), ("bgkind", k))
        for c in BG_COLOURS:
            add(6, bg_phrase(None, c), ("bgcol", c))
        _BANK = (texts, facts, groups)
    return _BANK


_PAIRS: tuple[list[str], list[frozenset], list[int]] | None = None


def mirror_pairs() -> tuple[list[str], list[frozenset], list[int]]:
    """Position prompts in mirror pairs ``(texts, facts, group ids)``: one group per pair of cells
    that mirror each other left<->right or top<->bottom (six groups of two prompts)."""
    global _PAIRS
    if _PAIRS is None:
        texts: list[str] = []
        facts: list[frozenset] = []
        groups: list[int] = []
        pairs = [("left", "right"), ("top left", "top right"), ("bottom left", "bottom right"),
                 ("top", "bottom"), ("top left", "bottom left"), ("top right", "bottom right")]
        for g, pair in enumerate(pairs):
            for p in pair:
                texts.append("a photo of " + object_phrase(position=p))
                facts.append(frozenset({("obj", None, None, None, p)}))
                groups.append(g)
        _PAIRS = (texts, facts, groups)
    return _PAIRS


def prompt_bank_loss(img: Tensor, bank_txt: Tensor, scale: Tensor, targets: Tensor, groups: Tensor,
                     center: bool = False, skip_all_true: bool = False) -> Tensor:
    """Image->text InfoNCE within each prompt group, multi-positive targets; mean over groups.

    Rows with no true prompt in a group are left out of it; with ``skip_all_true`` so are rows for
    which every prompt of the group is true (they carry no contrast)."""
    losses = []
    for g in groups.unique():
        sel = groups == g
        t = targets[:, sel].float()
        rows = t.sum(1) > 0
        if skip_all_true:
            rows &= t.sum(1) < t.shape[1]
        if not bool(rows.any()):
            continue
        tb = bank_txt[sel]
        if center:
            # centre the group's prompts: softmax over j of img.(t_j - mean) equals that of img.t_j,
            # but normalising the centred prompts makes the contrast well-conditioned even while
            # the prompts are still nearly identical (early training), like a classifier's weights
            tb = F.normalize(tb - tb.mean(0, keepdim=True), dim=-1)
        logits = scale * img[rows] @ tb.T
        tr = t[rows]
        losses.append(-(tr / tr.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean())
    if not losses:
        return img.sum() * 0.0
    return torch.stack(losses).mean()


class BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset over step indices: item ``t`` is the whole batch of step ``t``."""

    def __init__(self, cfg: TrainConfig, tokenizer: ToyTokenizer) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        return make_batch(self.cfg, int(step), self.tokenizer)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- loss
def contrastive_loss(img: Tensor, txt: Tensor, scale: Tensor, targets: Tensor, n_real: int) -> Tensor:
    """Symmetric InfoNCE with multi-positive targets.

    ``img [B, E]``, ``txt [T, E]`` normalised; ``targets [B, T]`` bool (caption j true of image i;
    the diagonal of the first ``B`` columns is always true). Image->text rows use all ``T``
    captions; text->image rows use the captions that are true of at least one image.
    """
    logits = scale * img @ txt.T  # [B, T]
    t = targets.float()
    i2t = -(t / t.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    cols = t.sum(0) > 0
    tc = t[:, cols]
    t2i = -(tc / tc.sum(0, keepdim=True) * F.log_softmax(logits[:, cols], 0)).sum(0).mean()
    return 0.5 * (i2t + t2i)


def sigmoid_loss(img: Tensor, txt: Tensor, scale: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023) with multi-positive targets: every (image, caption)
    pair is a binary problem, ``−log σ(z_ij (s·cos_ij + b))`` with ``z_ij = +1`` where caption j is true of image
    i and −1 elsewhere, summed over captions and averaged over images."""
    logits = scale * img @ txt.T + bias
    z = targets.float() * 2 - 1
    return -F.logsigmoid(z * logits).sum(1).mean()


def sigmoid_bank_loss(img: Tensor, bank_txt: Tensor, scale: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
    """The prompt bank under the sigmoid loss: each (image, prompt) pair a binary problem (true of the image or
    not), averaged over pairs."""
    logits = scale * img @ bank_txt.T + bias
    return F.binary_cross_entropy_with_logits(logits, targets.float())


def encode_text_bucketed(model: ToyCLIP, tokens: Tensor, pad_id: int, short: int = 20) -> Tensor:
    """``model.encode_text(tokens, normalize=True)``, with short and long texts run separately,
    each cropped to its own longest text (the text tower is causal, so padding never matters)."""
    lengths = (tokens != pad_id).sum(1)
    is_short = lengths <= short
    if bool(is_short.all()) or not bool(is_short.any()):
        return model.encode_text(tokens, normalize=True)
    out = []
    idx = []
    for sel in (is_short, ~is_short):
        i = sel.nonzero().squeeze(1)
        n = int(lengths[i].max())
        out.append(model.encode_text(tokens[i, :n], normalize=True))
        idx.append(i)
    order = torch.argsort(torch.cat(idx))
    return torch.cat(out)[order]


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "wsd":
        start = cfg.decay_start
        if start is None:
            if cfg.minutes is not None:
                return cfg.lr  # decay not started yet (time-based)
            start = int(round(cfg.steps * (1 - cfg.decay_frac)))
        if step < start:
            return cfg.lr
        p = min(max((step - start) / max(1, cfg.steps - start), 0.0), 1.0)
        return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * (1 - p))
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    p = min(max(p, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


_TEXT_PREFIXES = ("token_embedding", "text_", "ln_final")


def _param_groups(model: ToyCLIP, wd: float) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[Tensor]] = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "embedding" in name or name == "logit_scale"
        is_text = name.startswith(_TEXT_PREFIXES)
        groups.setdefault((is_text, no_decay), []).append(p)
    return [
        {"params": ps, "weight_decay": 0.0 if nd else wd, "is_text": is_text}
        for (is_text, nd), ps in sorted(groups.items())
    ]


def text_lr_mult(cfg: TrainConfig, step: int) -> float:
    """LR multiplier of the text tower: ``text_lr_mult`` for ``text_lr_hold`` steps, then a linear
    ramp to 1 over as many steps again (slows the text tower's early collapse onto colour words)."""
    if cfg.text_lr_hold <= 0 or step >= 2 * cfg.text_lr_hold:
        return 1.0
    if step < cfg.text_lr_hold:
        return cfg.text_lr_mult
    return cfg.text_lr_mult + (1 - cfg.text_lr_mult) * (step - cfg.text_lr_hold) / cfg.text_lr_hold


def _restoring_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` giving the process's torch thread count back as it found it (training sets its own)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        old_threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(old_threads)

    return run


# --------------------------------------------------------------------------- train
@_restoring_threads
def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    export: str | Path | None = None,
    eval_n: int = 0,
    eval_seed: int = 12345,
    progress: bool = True,
    command: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) and optionally export; returns a summary dict.

    Args:
        out_dir: the training state (``checkpoint.json`` + a ``.safetensors`` file), ``train_log.jsonl``,
            ``config.json`` and ``summary.json`` go here. A folder holding an earlier run is refused unless
            ``resume`` or ``overwrite``.
        resume: continue from the state saved in ``out_dir`` (its config wins over ``cfg``); a new run when
            the folder holds none.
        overwrite: replace an earlier run in ``out_dir`` (its files are deleted first) and an existing
            ``export`` file.
        trust_checkpoint: with ``resume``, allow the pickled ``checkpoint.pt`` of an older cliplens (unpickling
            can run code: only for a run you made yourself).
        export: write final weights (safetensors + JSON sidecar) to this path.
        eval_n: if > 0, run :func:`cliplens.experiments.evaluate.evaluate` with ``n=eval_n`` at the end.
        stop_after: stop (after checkpointing) once this many steps are done in total (tests).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = prepare_run(out, resume=resume, overwrite=overwrite, trust_checkpoint=trust_checkpoint, export=export)
    if state is not None:
        cfg = TrainConfig.from_dict(state["config"])
    torch.set_num_threads(cfg.threads)
    tokenizer = ToyTokenizer(context_length=cfg.model.context_length)
    if cfg.init_weights and state is None:
        model, tokenizer = load_toy_clip(cfg.init_weights)
        if (cfg.model.pool, cfg.model.loss) != (model.config.pool, model.config.loss):
            # e.g. toy-siglip from toy-clip: the blocks and text tower carry over, the new head starts random
            model = with_pooling(model, pool=cfg.model.pool, loss=cfg.model.loss, name=cfg.model.name, seed=cfg.seed)
        cfg.model = model.config
        model.train()
    else:
        cfg.model.vocab_size = tokenizer.vocab_size
        cfg.model.eot_id = tokenizer.eot_id
        cfg.model.pad_id = tokenizer.pad_id
        torch.manual_seed(cfg.seed)
        model = ToyCLIP(cfg.model)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start = 0
    prev_wall = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        start = int(state["step"])
        prev_wall = float(state["extra"].get("wall_s", 0.0))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    model.train()

    ds = BatchDataset(cfg, tokenizer)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers else None,
        prefetch_factor=2 if cfg.num_workers else None, persistent_workers=False,
        # its own generator: the loader's worker seed is not drawn from the global random state, which a
        # resumed run then continues exactly as the uninterrupted run would
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    bank_texts, _, bank_g = prompt_bank()
    bank_tokens = tokenizer.encode(bank_texts)
    bank_tokens = bank_tokens[:, : int((bank_tokens != tokenizer.pad_id).any(0).nonzero().max()) + 1]
    bank_groups = torch.tensor(bank_g)
    pair_texts, _, pair_g = mirror_pairs()
    pair_tokens = tokenizer.encode(pair_texts)
    pair_tokens = pair_tokens[:, : int((pair_tokens != tokenizer.pad_id).any(0).nonzero().max()) + 1]
    pair_groups = torch.tensor(pair_g)
    mean = torch.tensor(cfg.model.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.std).view(1, 3, 1, 1)
    log_f = open(out / "train_log.jsonl", "a")
    t0 = time.time()
    step = start
    ema = None
    stopped = "done"

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cliplens.progress import progress_bar

    bar = progress_bar(
        TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), enabled=progress, transient=False,
    )
    with bar:
        task = bar.add_task("train", total=cfg.steps, completed=start, info="")
        for batch in loader:
            lr = lr_at(cfg, step)
            tm = text_lr_mult(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr * (tm if g.get("is_text") else 1.0)
            x = (batch["images"].permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            img = model.encode_image(x, normalize=True)
            txt = encode_text_bucketed(model, batch["tokens"], tokenizer.pad_id)
            scale = model.logit_scale.exp()
            bias = model.logit_bias  # None: CLIP's softmax loss; else SigLIP's sigmoid loss (toy-siglip)
            if bias is None:
                loss = contrastive_loss(img, txt, scale, batch["targets"], int(batch["n_real"]))
            else:
                loss = sigmoid_loss(img, txt, scale, bias, batch["targets"])
            if cfg.prompt_bank:
                bank_txt = model.encode_text(bank_tokens, normalize=True)
                loss = loss + cfg.prompt_bank * (
                    prompt_bank_loss(img, bank_txt, scale, batch["bank_targets"], bank_groups, center=cfg.bank_center)
                    if bias is None else sigmoid_bank_loss(img, bank_txt, scale, bias, batch["bank_targets"]))
            if cfg.bank_pairs:  # a two-way contrast of mirror prompts (a logit bias would cancel in it)
                pair_txt = model.encode_text(pair_tokens, normalize=True)
                loss = loss + cfg.bank_pairs * prompt_bank_loss(img, pair_txt, scale, batch["pair_targets"],
                                                                pair_groups, center=cfg.bank_center,
                                                                skip_all_true=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            lv = float(loss.detach())
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            wall = prev_wall + time.time() - t0
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": lv, "loss_ema": ema, "lr": lr, "wall_s": wall,
                       "scale": float(model.logit_scale.detach().exp())}
                if model.logit_bias is not None:
                    rec["bias"] = float(model.logit_bias.detach())
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            bar.update(task, completed=step, info=f"loss {ema:.3f} lr {lr:.2e}")
            if (cfg.schedule == "wsd" and cfg.minutes is not None and cfg.decay_start is None
                    and wall >= (1 - cfg.decay_frac) * cfg.minutes * 60):
                # time-based decay start: size the decay from the speed so far (in this session)
                sec_per_step = (time.time() - t0) / max(step - start, 1)
                n_decay = max(1, int(0.95 * cfg.decay_frac * cfg.minutes * 60 / sec_per_step))
                cfg.decay_start = step
                cfg.steps = min(cfg.steps, step + n_decay)
                (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
                bar.update(task, total=cfg.steps)
            done = step >= cfg.steps
            over = cfg.minutes is not None and wall > cfg.minutes * 60
            halt = stop_after is not None and step >= stop_after
            if cfg.eval_every and step % cfg.eval_every == 0 and not done and not over:
                m = evaluate(model, tokenizer, n=200, seed=777, n_retrieval=500)
                m["position_per_class"] = m.pop("details")["position"]["per_class"]
                log_f.write(json.dumps({"step": step, "eval": m, "wall_s": prev_wall + time.time() - t0}) + "\n")
                log_f.flush()
                model.train()
            if step % cfg.checkpoint_every == 0 or done or over or halt:
                save_training_state(out, model, opt, step, cfg.to_dict(), {"wall_s": wall})
            if done:
                break
            if over:
                stopped = "time cap"
                break
            if halt and not done:
                stopped = "stop_after"
                break
    log_f.close()
    wall = prev_wall + time.time() - t0
    summary: dict[str, Any] = {
        "steps_done": step, "steps_planned": cfg.steps, "stopped": stopped, "wall_s": round(wall, 1),
        "seed": cfg.seed, "final_loss_ema": ema, "command": command,
        "train_config": cfg.to_dict(),
    }
    if stopped == "stop_after":
        return summary
    model.eval()
    if eval_n:
        summary["metrics"] = evaluate(model, tokenizer, n=eval_n, seed=eval_seed)
    if export:
        Path(export).parent.mkdir(parents=True, exist_ok=True)
        save_toy_clip(model, str(export), tokenizer.vocab, info={"training": summary})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def current_command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


# --------------------------------------------------------------------------- the spurious fine-tune
def finetune_spurious(
    init_weights: str | None,
    out_dir: str,
    *,
    steps: int = 40,
    batch_size: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    spec: SpuriousSpec = DEFAULT_SPEC,
    export: str | None = None,
    overwrite: bool = False,
    minutes: float | None = None,
    progress: bool = True,
    command: str | None = None,
    caption_by: str = "context",
    n_eval: int = 800,
    num_workers: int = 0,
    threads: int = 2,
) -> dict[str, Any]:
    """Fine-tune a ToyCLIP (default: the shipped one) on the biased mix; returns the train summary
    with ``"spurious"``: :func:`group_accuracies` before and after. The defaults (40 steps of 64
    scenes at lr 1e-4, seed 0) are the recipe of the shipped ``toy-clip-spurious``. A folder ``out_dir`` that holds
    an earlier run is refused unless ``overwrite``."""
    earlier = earlier_run(Path(out_dir))
    if earlier and not overwrite:
        raise OutputExistsError(f"--out {out_dir} holds an earlier run ({', '.join(earlier[:5])}); it is left as it "
                                "is. Pass --overwrite (overwrite=True) to replace it, or another --out.")
    if init_weights is None:
        ref = resources.files("cliplens.toyworld") / "weights" / DEFAULT_WEIGHTS
        init_weights = str(ref)
    base, tok = load_toy_clip(init_weights)
    before = group_accuracies(base, tok, spec=spec, n=n_eval)
    cfg = TrainConfig(
        seed=seed, steps=steps, minutes=minutes, batch_size=batch_size, lr=lr, warmup=min(20, steps // 5),
        schedule="cosine", neg_frac=0.0, prompt_bank=0.0, checkpoint_every=max(steps, 1), log_every=10,
        num_workers=num_workers, threads=threads, model=base.config, init_weights=init_weights, data="spurious",
        data_options={"p_major": spec.p_major, "class_shapes": list(spec.class_shapes),
                      "bg_kinds": list(spec.bg_kinds), "sizes": list(spec.sizes),
                      "caption_by": caption_by},
    )
    summary = train(cfg, out_dir, progress=progress, command=command, overwrite=overwrite)
    state = load_training_state(out_dir)
    assert state is not None  # train() saved it
    model, tok = load_toy_clip(init_weights)
    model.load_state_dict(state["model"])
    model.eval()
    after = group_accuracies(model, tok, spec=spec, n=n_eval)
    summary["spurious"] = {"before": before, "after": after, "spec": spec.__dict__}
    if export:
        model.config.name = "toy-clip-spurious"
        save_toy_clip(model, export, tok.vocab, info={"training": {k: v for k, v in summary.items()
                                                                  if k != "train_config"}})
    return summary
