"""Pooling heads, one file per kind (the plan's last step; :mod:`.base` has the interface and the rule every
kind states for the exact decomposition): CLS pooling (:mod:`.cls`), mean pooling (:mod:`.mean`), attention
pooling with a learned probe (:mod:`.map`), attention pooling with a mean-token query (:mod:`.attnpool`)."""

from __future__ import annotations

from cliplens.core.heads.attnpool import AttnPoolHead
from cliplens.core.heads.base import PoolHead, Readout
from cliplens.core.heads.cls import ClsHead
from cliplens.core.heads.map import MapHead
from cliplens.core.heads.mean import MeanHead

__all__ = ["AttnPoolHead", "ClsHead", "MapHead", "MeanHead", "PoolHead", "Readout"]
