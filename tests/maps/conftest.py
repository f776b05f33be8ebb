"""Shared by the map tests: one torch thread per test module (tiny float64 models run fastest on one thread, and
the machine is shared with the other pytest process)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
