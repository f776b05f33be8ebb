"""Jobs of the explorer: work that runs in a thread while the page polls its progress.

A job is a function ``work(job)`` run in its own thread; it says how far it is with :meth:`Job.step` and returns
a JSON-able result. Work that uses the model takes the explorer's model lock, so requests are served one at a
time on the model (a job waiting for it says so). A user's mistake (a :class:`~cliplens.errors.CliplensError`)
ends the job with its message, one paragraph; anything else ends it with a message that says it is a bug —
never a traceback in the page (``CLIPLENS_DEBUG=1`` prints it on the server's terminal).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cliplens.errors import CliplensError

__all__ = ["Job", "Jobs", "bug_message"]

#: jobs kept (finished ones beyond this are forgotten, oldest first)
MAX_JOBS = 200


def bug_message(e: BaseException) -> str:
    """What the page shows for an unexpected error (the same words as the command line's)."""
    return (f"unexpected {type(e).__name__}: {e}. This looks like a bug in cliplens; rerun the explorer with "
            "CLIPLENS_DEBUG=1 to see the traceback on its terminal, and please report it.")


@dataclass
class Job:
    """One piece of work and where it stands: ``state`` is ``queued``, ``running``, ``done`` or ``failed``."""

    id: str
    kind: str
    state: str = "queued"
    done: int = 0
    total: int = 1
    message: str = "waiting for the model"
    result: Any = None
    error: str | None = None
    #: what the work has made so far (a run's figures), shown while it runs
    partial: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def step(self, message: str, done: int | None = None, total: int | None = None) -> None:
        """Say what the job does now (and, optionally, how many of how many steps are done)."""
        self.message = message
        if total is not None:
            self.total = max(1, int(total))
        if done is not None:
            self.done = int(done)

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
               "message": self.message, "seconds": round(time.monotonic() - self.started, 2)}
        if self.state == "running" and self.partial:
            out["partial"] = list(self.partial)
        if self.state == "done":
            out["result"] = self.result
        if self.state == "failed":
            out["error"] = self.error
        return out


class Jobs:
    """The jobs of one explorer, each run in a daemon thread (``start``), looked up by id (``get``)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._guard = threading.Lock()

    def start(self, kind: str, work: Callable[[Job], Any]) -> Job:
        with self._guard:
            job = Job(id=f"{kind}-{next(self._ids)}", kind=kind)
            self._jobs[job.id] = job
            finished = [k for k, j in self._jobs.items() if j.state in ("done", "failed")]
            for k in finished[:max(0, len(self._jobs) - MAX_JOBS)]:
                del self._jobs[k]
        threading.Thread(target=self._run, args=(job, work), name=f"cliplens-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._guard:
            return self._jobs.get(job_id)

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any]) -> None:
        try:
            result = work(job)
        except CliplensError as e:
            job.error, job.state = str(e), "failed"
        except Exception as e:  # a bug: one paragraph in the page, the traceback only on request
            if os.environ.get("CLIPLENS_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
                traceback.print_exc()
            job.error, job.state = bug_message(e), "failed"
        else:
            job.result, job.done, job.message, job.state = result, job.total, "done", "done"
