"""The batch driver: Ray actors (one model load each), bounded in-flight work, the ledger
kept by this process alone, a progress bar, an audit line per series and the summary.

Local by default (a Ray instance sized for this machine, no dashboard); ``address`` joins a
cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the others).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from tqdm import tqdm

from ldct.batch.ledger import Ledger
from ldct.batch.workers import Job, Outcome, SeriesWorker
from ldct.batch.worklist import Item

OBJECT_STORE_BYTES = 128 * 2**20  # tasks carry UIDs and paths, results a few fields
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: a worker never waits, memory stays flat
ACTOR_RESTARTS = 3  # a worker killed (OOM, SIGKILL, node lost) comes back this often
# far above a department's cluster; a typo of 100000 would start that many model loads
MAX_WORKERS, MAX_CPUS_PER_WORKER = 256, 256


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs (`ldct batch`, `ldct study create --batch`): Ray actors, cores per
    actor, a cluster to join (None: a local Ray sized for them)."""

    workers: int = 2
    cpus_per_worker: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if not (1 <= self.workers <= MAX_WORKERS
                and 1 <= self.cpus_per_worker <= MAX_CPUS_PER_WORKER):
            raise ValueError(f"--workers and --cpus-per-worker take whole numbers >= 1 (at most "
                             f"{MAX_WORKERS} workers of {MAX_CPUS_PER_WORKER} cores each), got "
                             f"{self.workers} and {self.cpus_per_worker}")


@dataclass
class Summary:
    """The counts of a run and its throughput over the series it denoised."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    slices: int = 0
    wall_s: float = 0.0
    failures: list[Outcome] = field(default_factory=list)

    def add(self, other: Summary) -> None:
        """Count ``other`` (another job's run) in this summary too."""
        for name in ("done", "skipped", "failed", "slices", "wall_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures

    def line(self) -> str:
        """The last output line of `ldct batch` (its first words are a contract)."""
        rate = self.slices / self.wall_s if self.wall_s else 0.0
        return (f"done {self.done}, skipped {self.skipped}, failed {self.failed} "
                f"({self.slices} slices in {self.wall_s:.1f} s, {rate:.1f} slices/s)")


def audit_logger(path: Path) -> logging.Logger:
    """The audit log: one line per series, UIDs (or a hash of a file's path) and outcome."""
    logger = logging.getLogger(f"ldct.batch.audit.{path}")
    if not logger.handlers:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _audit_line(job: Job, item: Item, outcome: Outcome) -> str:
    source = outcome.series or item.series or (
        "file:" + hashlib.sha256(item.key.encode()).hexdigest()[:16])
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fields = {"series": source, "study": outcome.study or item.study or "-",
              "status": outcome.status, "derived": outcome.derived or "-", "model": job.model,
              "version": job.version, job.level[0]: job.level[1],
              "slices": outcome.slices, "seconds": f"{outcome.seconds:.2f}",
              "worker": outcome.worker or "-"}
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{now} {text}" + (f" reason={outcome.reason!r}" if outcome.reason else "")


def start_ray(address: str | None, cpus: int) -> bool:
    """Join ``address``, or start a local Ray sized for ``cpus``; False if one was running."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False)
    return True


def run_batch(items: Iterable[Item], job: Job, ledger: Ledger, audit: Path, workers: int = 2,
              cpus_per_worker: int = 1, gpus_per_worker: int | None = None,
              address: str | None = None, progress: bool = True,
              on_outcome: Callable[[Outcome], None] | None = None) -> Summary:
    """Denoise ``items`` with ``workers`` Ray actors; what the ledger has done is skipped.

    ``gpus_per_worker`` defaults to 1 when the cluster has GPUs, else 0 (CPU workers of
    ``cpus_per_worker`` cores). ``on_outcome`` hears each series as it finishes.
    """
    items = list(items)
    workers = max(1, min(workers, len(items)))  # no actor without a series to give it
    log = audit_logger(audit)
    summary = Summary()
    started_here = start_ray(address, workers * cpus_per_worker)
    try:
        if gpus_per_worker is None:
            gpus_per_worker = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        actor = ray.remote(SeriesWorker).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
            max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
        pool: list = []  # started at the first series to denoise (a re-run may need none)
        exclude = frozenset(ledger.derived(job.key, other_versions=True))
        todo = iter(items)
        pending: dict[ray.ObjectRef, tuple[Item, int]] = {}
        load = [0] * workers
        bar = tqdm(total=len(items), desc=f"batch {job.model}", unit="series",
                   disable=not progress)
        clock = time.perf_counter()

        def record(item: Item, outcome: Outcome) -> None:
            if outcome.status == "failed":
                ledger.finish(item.key, job.key, "failed", reason=outcome.reason)
                summary.failures.append(outcome)
            elif outcome.status in ("done", "skipped"):
                ledger.finish(item.key, job.key, "done", outcome.derived, outcome.reason)
            setattr(summary, outcome.status, getattr(summary, outcome.status) + 1)
            summary.slices += outcome.slices
            log.info(_audit_line(job, item, outcome))
            bar.update(1)
            bar.set_postfix(done=summary.done, skipped=summary.skipped, failed=summary.failed)
            if on_outcome is not None:
                on_outcome(outcome)

        def submit() -> bool:
            """Give the next series not yet done to the least busy worker."""
            for item in todo:
                if ledger.state(item.key, job.key) == "done":
                    record(item, Outcome(item.key, "skipped", item.series, item.study,
                                         reason="done in an earlier run (ledger)"))
                    continue
                if not pool:
                    pool.extend(actor.remote(job, cpus_per_worker) for _ in range(workers))
                slot = load.index(min(load))
                ledger.started(item.key, job.key)
                pending[pool[slot].process.remote(item, exclude)] = (item, slot)
                load[slot] += 1
                return True
            return False

        while len(pending) < workers * IN_FLIGHT_PER_WORKER and submit():
            pass
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            item, slot = pending.pop(ref)
            load[slot] -= 1
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died past its restarts
                reason = str(exc).strip().splitlines()[0][:300]
                outcome = Outcome(item.key, "failed", item.series, item.study,
                                  reason=f"worker lost: {reason}")
            record(item, outcome)
            while len(pending) < workers * IN_FLIGHT_PER_WORKER and submit():
                pass
        bar.close()
        summary.wall_s = time.perf_counter() - clock
    finally:
        if started_here:
            ray.shutdown()
    return summary
