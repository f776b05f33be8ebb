"""Ground truth for TEXTSPAN in the toy world: what each head's texts say next to what it measurably follows.

Every toy scene is generated from known factors (the first object's shape, colour, size and position; the
number of objects; the background's kind and colour). For each attention head of ``toy-clip`` this runs,
over the same scenes (1 to 4 objects, as the model was trained on):

* **TEXTSPAN** with the built-in ``"toy"`` pool (phrases naming one factor value each); the head's *text
  factor* is the factor its first text names;
* the **measurement**: for every factor, the share of the head's variance (its direct effects on the unit-norm
  image embeddings) that the factor's values explain (between-value over total variance,
  :mod:`cliplens.analyses.factors`); the head's *measured factor* is the factor with the largest share.

The agreement rate is the share of heads whose text factor is their measured factor; it is also given over
the heads that clearly follow one factor (measured share ≥ ``clear``), since a head whose variance no factor
explains has nothing for its texts to agree with.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cliplens.analyses.factors import explained_by_factors
from cliplens.analyses.pools import load_pool, toy_pool_factors
from cliplens.analyses.textspan import textspan
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import select_layers
from cliplens.datasets.toy import FACTORS, ToyDataset
from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store

__all__ = ["HeadFactor", "HeadFactorTable", "head_factors"]


@dataclass
class HeadFactor:
    layer: int
    head: int
    texts: list[str]  # TEXTSPAN's first texts
    fractions: list[float]  # … and the share of the head's variance each explains
    text_factor: str  # the factor the first text names
    measured_factor: str  # the factor with the largest share of the head's variance
    shares: dict[str, float]  # factor -> share of the head's variance its values explain
    total_variance: float

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}"

    @property
    def agrees(self) -> bool:
        return self.text_factor == self.measured_factor


@dataclass
class HeadFactorTable:
    heads: list[HeadFactor]
    clear: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return sum(h.agrees for h in self.heads) / len(self.heads)

    @property
    def clear_heads(self) -> list[HeadFactor]:
        return [h for h in self.heads if h.shares[h.measured_factor] >= self.clear]

    @property
    def clear_agreement(self) -> float | None:
        c = self.clear_heads
        return sum(h.agrees for h in c) / len(c) if c else None

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "clear": self.clear, "agreement": self.agreement,
                "clear_heads": len(self.clear_heads), "clear_agreement": self.clear_agreement,
                "heads": [{**asdict(h), "name": h.name, "agrees": h.agrees} for h in self.heads]}


def head_factors(model: ImageTextModel, *, n: int = 2000, seed: int = 0, stream: str = "test", last: int | None = None,
                 m: int = 3, clear: float = 0.3, store_dir: str | Path | None = None,
                 objects: int | None = None, progress: bool = False) -> HeadFactorTable:
    """TEXTSPAN's text factor next to the measured factor for every head of the ``last`` k layers (all by
    default) of a toy-world model, over ``n`` scenes of ``seed`` with 1 to 4 objects (or exactly ``objects``:
    with one object per scene an object's colour, shape, size and position are the scene's, so the heads
    that carry them can be measured). The decompositions go to a store at ``store_dir`` (reused when
    complete) or to a temporary folder."""
    if n < 10:
        raise InvalidInputError(f"the head table needs at least 10 scenes; got {n}")
    L = model.vision.num_layers
    layers = select_layers(L, last=L if last is None else last)
    texts = load_pool("toy")
    factor_of = {t: f for t, (f, _) in toy_pool_factors().items()}
    if objects is not None and not 1 <= objects <= 4:
        raise InvalidInputError(f"objects: scenes hold 1 to 4 objects; got {objects}")
    data = ToyDataset(n, seed=seed, stream=stream, label="count", count=objects)
    with tempfile.TemporaryDirectory(prefix="cliplens-toy-heads-") as tmp:
        path = Path(store_dir) if store_dir is not None else Path(tmp) / "store"
        build_store(model, data, path, settings=StoreSettings(dtype="float32"), progress=progress)
        store = Store(path)
        chosen = [(layer, h) for layer in layers for h in range(store.shape["heads"])]
        emb = model.encode_text(texts)
        span = textspan(store, texts, emb, heads=chosen, m=m, with_accuracy=False)
        shares = explained_by_factors(store, FACTORS, chosen)
    rows = [HeadFactor(s.layer, s.head, s.texts, s.fractions, factor_of[s.texts[0]], f.factor, f.shares,
                       s.total_variance) for s, f in zip(span.heads, shares, strict=True)]
    return HeadFactorTable(rows, clear, settings={"model": getattr(model, "name", None), "scenes": n, "seed": seed,
                                                  "stream": stream, "last": len(layers), "texts_per_head": m,
                                                  "pool": "toy", "objects": "1-4" if objects is None else objects,
                                                  "factors": list(FACTORS)})
