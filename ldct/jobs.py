"""The server's denoising jobs: an id, an owner, progress and a cancel that stops the work.

Process-wide, so that a request's route, the worker thread running the model and the
``/jobs/`` routes share each job. A job's id is random unless the client names it (so a client
can cancel a request it is still waiting for); only its owner or an admin sees or cancels it.
Ids are per owner: another user's job of the same id neither blocks nor reveals anything; the
worker finds a job by its ``key``, which no client sees.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
KEPT_FINISHED = 200  # finished jobs remembered for their status


class JobError(ValueError):
    """A job request that cannot be honoured; ``status`` is the HTTP code that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    id: str
    owner: str
    model: str
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop_requested(self) -> bool:
        return self.cancel_requested.is_set()

    def cancel(self) -> None:
        """Ask the work to stop; a job still queued ends at once (its worker never starts)."""
        with self._lock:
            self.cancel_requested.set()
            if self.state == "queued":
                self.state, self.finished = "cancelled", time.time()

    def claim(self) -> bool:
        """The worker takes the job: False when it was cancelled first."""
        with self._lock:
            if self.cancel_requested.is_set():
                return False
            self.state = "running"
            return True

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def status(self) -> dict[str, Any]:
        return {"job": self.id, "model": self.model, "state": self.state,
                "progress": round(self.done / self.total, 3) if self.total else 0.0,
                "seconds": round((self.finished or time.time()) - self.created, 2)}


class JobRegistry:
    """Every job of this process, by id."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], Job] = {}  # by (owner, id)
        self._lock = threading.Lock()

    def start(self, owner: str, model: str, job_id: str = "") -> Job:
        """A new queued job (``job_id`` the client's, checked, else a random one)."""
        if job_id and not JOB_ID.fullmatch(job_id):
            raise JobError(422, "job must be 8-64 letters, digits, '-' or '_' (a random id the "
                                "client makes per request)")
        with self._lock:
            job_id = job_id or secrets.token_urlsafe(12)
            if (owner, job_id) in self._jobs:
                raise JobError(409, f"you have a job '{job_id}' already; make a new id per "
                                    "request")
            job = self._jobs[owner, job_id] = Job(job_id, owner, model)
            finished = [j for j in self._jobs.values() if j.finished is not None]
            for old in sorted(finished, key=lambda j: j.finished)[:-KEPT_FINISHED]:
                del self._jobs[old.owner, old.id]
        return job

    def find(self, key: str) -> Job | None:
        """A job by its key, for the worker running it (not for clients)."""
        return next((j for j in list(self._jobs.values()) if j.key == key), None)

    def finish(self, job: Job, state: str) -> None:
        job.state, job.finished = state, time.time()

    def get(self, job_id: str, owner: str, admin: bool = False) -> Job:
        """The caller's job; another's is refused exactly as an unknown one (404)."""
        job = self._jobs.get((owner, job_id)) or (admin and next(
            (j for j in list(self._jobs.values()) if j.id == job_id), None)) or None
        if job is None:
            raise JobError(404, f"no job '{job_id}' of yours on this server")
        return job

    def list(self, owner: str, admin: bool = False) -> list[dict[str, Any]]:
        return [j.status() for j in list(self._jobs.values()) if admin or j.owner == owner]


JOBS = JobRegistry()
# The compute device (every core, or the GPU): a denoising request and a study's volumes use
# it one at a time, whoever asks.
DEVICE = threading.Lock()
