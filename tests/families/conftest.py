"""What the family tests share: one torch thread per module, restored afterwards. On a shared 2-core machine under
load torch's OpenMP pool makes every op wait for a thread: measured, a 768×64 then 512×768 matvec pair took 7–21 ms
on 2 threads vs 0.2 ms on 1, a 2-block B/16 open_clip build 5.6 s vs 0.4 s, and test_reference.py 84 s vs 26 s
(load average ~4–5 from other work)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
