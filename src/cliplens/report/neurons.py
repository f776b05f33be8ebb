"""Atlas pages for neurons (``cliplens neurons --atlas``): per layer, the neurons with the largest second-order
effects, each with its sparse text description, the images where its effect is largest and, over each, where the
neuron fires (its post-activation value at each patch, the quantity the paper's segmentation averages).

The data come from :mod:`cliplens.analyses.neurons`; only the images shown are run through the model again (to
record the neurons' activations).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplens.analyses.neurons import NeuronComponents, NeuronDescription
from cliplens.report.atlas import map_image
from cliplens.report.html import esc, figure, page

__all__ = ["NeuronCard", "neuron_cards", "write_neuron_atlas"]


@dataclass
class NeuronCard:
    """One neuron on a page: its layer and index, its largest centred effect norm, the share of its top images'
    second moment its principal component carries, its description, and the store rows of its top images."""

    layer: int
    neuron: int
    peak: float
    explained: float
    description: NeuronDescription | None
    rows: list[int]


def neuron_cards(components: NeuronComponents, descriptions: Sequence[NeuronDescription] | None, *, top: int,
                 images: int, rows: np.ndarray) -> list[NeuronCard]:
    """The ``top`` neurons of a layer by their largest centred effect, with their ``images`` top images (as
    store rows: ``rows`` maps the analysed images to the store's rows)."""
    peak = components.norms[:, -1]
    order = np.argsort(-peak)[:top]
    by_neuron = {d.neuron: d for d in descriptions or []}
    return [NeuronCard(components.layer, int(components.neurons[i]), float(peak[i]), float(components.explained[i]),
                       by_neuron.get(int(components.neurons[i])),
                       [int(rows[j]) for j in components.top_images[i, :images]]) for i in order]


def _picture(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: int = 160) -> np.ndarray:
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = (pixels.detach().float().cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
    out = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    out.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(out)


@torch.no_grad()
def write_neuron_atlas(cards: Mapping[int, Sequence[NeuronCard]], model: Any, dataset: Any, store_indices: np.ndarray,
                       out_dir: str | os.PathLike[str], *, title: str = "Neuron atlas", note: str = "") -> Path:
    """Write ``index.html`` and one ``neurons-LXX.html`` per layer (with PNGs under ``neuron-maps/``) into
    ``out_dir``; returns the index page. ``dataset`` is the store's data set (reopened), ``store_indices`` the data
    set index of each store row."""
    from cliplens.core.forward import run_vision

    out = Path(out_dir)
    (out / "neuron-maps").mkdir(parents=True, exist_ok=True)
    cfg = model.preprocess_config
    view = model.vision
    prefix = view.num_prefix_tokens
    layers = sorted(cards)
    links = " · ".join(f'<a href="neurons-L{k:02d}.html">layer {k}</a>' for k in layers)
    index = [f"<h1>{esc(title)}</h1>", f'<p class="muted">{esc(note)}</p>' if note else "", f"<p>{links}</p>",
             '<div class="explain"><p>Each neuron\'s <b>second-order effect</b> is what it adds to the image '
             "embedding through the later attention heads. <i>peak</i>: its largest effect (centred, scaled by "
             "100/‖z‖) over the images; <i>rank-1 %</i>: the share of its top images' effects its first principal "
             "component carries; the description writes that component as a sparse sum of pool texts.</p></div>"]
    for k in layers:
        body = [f"<h1>{esc(title)}: layer {k}</h1>", f'<p><a href="index.html">index</a> · {links}</p>']
        rows = sorted({r for c in cards[k] for r in c.rows})
        acts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s in range(0, len(rows), 16):
            part = rows[s:s + 16]
            px = model.preprocess([dataset[int(store_indices[r])].image for r in part])
            res = run_vision(view, px.to(device=view.device, dtype=view.dtype), names=[f"blocks.{k}.mlp.hidden"])
            hid = res.cache[f"blocks.{k}.mlp.hidden"][:, prefix:].float().cpu().numpy()  # [b, patches, Nn]
            gh, gw = res.grid
            for j, r in enumerate(part):
                acts[r] = (_picture(px[j], cfg.mean, cfg.std), hid[j].reshape(gh, gw, -1))
        for c in cards[k]:
            d = c.description
            text = esc(d.line(6)) + f" (cosine {d.cosine:.2f})" if d is not None else "(no description)"
            figs = []
            limit = max(float(np.abs(acts[r][1][..., c.neuron]).max()) for r in c.rows) or 1.0
            for r in c.rows:
                name = f"neuron-maps/L{k:02d}.N{c.neuron:05d}-{r:06d}.png"
                map_image(acts[r][0], acts[r][1][..., c.neuron], limit).save(out / name)
                figs.append(figure(name, f"image {r}, neuron {c.neuron}", width=150))
            body += [f'<div class="block"><h3 id="n{c.neuron}">L{k}.N{c.neuron}</h3>',
                     f'<p>peak {c.peak:.3g} · rank-1 {100 * c.explained:.1f} %</p><p>{text}</p>',
                     f'<div class="figs">{"".join(figs)}</div></div>']
        (out / f"neurons-L{k:02d}.html").write_text(page(f"{title}: layer {k}", body), encoding="utf-8")
        index += [f"<h2>layer {k}</h2><table><tr><th>neuron</th><th class=num>peak</th><th class=num>rank-1 %</th>"
                  "<th>description</th></tr>"]
        index += [f'<tr><td><a href="neurons-L{k:02d}.html#n{c.neuron}">N{c.neuron}</a></td>'
                  f"<td class=num>{c.peak:.3g}</td><td class=num>{100 * c.explained:.1f}</td>"
                  f"<td>{esc(c.description.line(3)) if c.description else ''}</td></tr>" for c in cards[k]]
        index.append("</table>")
    path = out / "index.html"
    path.write_text(page(title, index), encoding="utf-8")
    return path
