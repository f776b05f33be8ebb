"""Data-free head descriptions against ground truth in the toy world.

Each head of a toy-world model is described three ways, and the scene factor each description names is compared
(:mod:`cliplens.analyses.head_descriptions` for the first, :mod:`cliplens.experiments.heads` for the other two):

* **OV** (no image): the toy-pool text nearest, on either sign, to the top singular direction of the head's OV
  map in the joint space; its factor;
* **TEXTSPAN** (over scenes): the factor of the head's first TEXTSPAN text;
* **measured** (over scenes, from the true factors): the factor that explains most of the head's output variance.

The agreement of OV with the measured factor says how much of a head's role its weights alone reveal; TEXTSPAN's
agreement, over the same heads and scenes, is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cliplens.analyses.head_descriptions import describe_heads
from cliplens.analyses.pools import load_pool, toy_pool_factors
from cliplens.experiments.heads import HeadFactorTable, head_factors

__all__ = ["OVFactorRow", "OVFactorTable", "ov_head_factors"]


@dataclass
class OVFactorRow:
    name: str
    ov_text: str  # the toy-pool text nearest to the top singular direction (either sign)
    ov_sign: str  # "+" or "-"
    ov_cosine: float
    ov_share: float  # the top direction's share of the OV map's squared singular values
    ov_factor: str
    textspan_text: str
    textspan_factor: str
    measured_factor: str
    measured_share: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class OVFactorTable:
    rows: list[OVFactorRow]
    clear: float
    settings: dict[str, Any]

    def _rate(self, rows: list[OVFactorRow], a: str, b: str) -> float | None:
        return sum(getattr(r, a) == getattr(r, b) for r in rows) / len(rows) if rows else None

    def agreement(self, clear_only: bool = False) -> dict[str, float | None]:
        """Share of heads whose factors agree: OV vs measured, TEXTSPAN vs measured, OV vs TEXTSPAN."""
        rows = [r for r in self.rows if r.measured_share >= self.clear] if clear_only else self.rows
        return {"ov_measured": self._rate(rows, "ov_factor", "measured_factor"),
                "textspan_measured": self._rate(rows, "textspan_factor", "measured_factor"),
                "ov_textspan": self._rate(rows, "ov_factor", "textspan_factor"), "heads": len(rows)}

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "clear": self.clear, "agreement": self.agreement(),
                "agreement_clear_heads": self.agreement(clear_only=True), "heads": [r.to_dict() for r in self.rows]}


def ov_head_factors(model: Any, *, n: int = 2000, seed: int = 0, objects: int | None = None, clear: float = 0.3,
                    table: HeadFactorTable | None = None, progress: bool = False) -> OVFactorTable:
    """The OV description's factor next to TEXTSPAN's and the measured one, for every head of a toy-world model
    (the scenes as in :func:`cliplens.experiments.heads.head_factors`; ``table``: its result, if already computed)."""
    table = table or head_factors(model, n=n, seed=seed, objects=objects, clear=clear, m=1, progress=progress)
    texts = load_pool("toy")
    factor_of = {t: f for t, (f, _) in toy_pool_factors().items()}
    described = {d.name: d for d in describe_heads(model, texts, last=None, directions=1, top=1)}
    rows = []
    for h in table.heads:
        text, cos, sign = described[h.name].directions[0].best
        rows.append(OVFactorRow(h.name, text, sign, cos, described[h.name].directions[0].share, factor_of[text],
                                h.texts[0], h.text_factor, h.measured_factor, h.shares[h.measured_factor]))
    return OVFactorTable(rows, clear, {**table.settings, "ov": "top singular direction, nearest toy-pool text "
                                                               "(centred pool), either sign"})
