"""The batch ledger: which series a model version already denoised to which destination.

One SQLite file (WAL), written only by the driver, so a re-run after a crash does only what is
left: a series is skipped once its row says ``done``; ``started`` rows are what a crash
interrupted (their write is checked in the destination before it is redone, see
`ldct.batch.workers`); ``failed`` rows keep the reason and are tried again on the next run.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    source TEXT NOT NULL,       -- series UID, or the path of a file/folder
    model TEXT NOT NULL,
    version TEXT NOT NULL,      -- weights version and SHA-256 prefix, or 'baseline'
    strength REAL NOT NULL,
    target_noise REAL NOT NULL DEFAULT 0,  -- HU a per-series strength leaves; 0: none
    destination TEXT NOT NULL,  -- 'pacs:<url>' or 'dir:<folder>'
    state TEXT NOT NULL,        -- started | done | failed
    derived TEXT NOT NULL DEFAULT '',  -- the derived SeriesInstanceUID or output folder
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (source, model, version, strength, target_noise, destination)
)
"""


@dataclass(frozen=True)
class JobKey:
    """What makes two runs the same work: model, its version, strength (or the noise target
    that chooses it per series; 0: none) and destination."""

    model: str
    version: str
    strength: float
    destination: str
    target_noise: float = 0.0


class Ledger:
    """The driver's record of each series of a job (one row per source and job key)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a 'done' survives a power cut
        self._db.execute(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(series)")}
        if "target_noise" not in columns:  # a ledger of a version without noise targets
            self._db.execute("ALTER TABLE series ADD COLUMN target_noise REAL NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def state(self, source: str, job: JobKey) -> str | None:
        """``started``, ``done``, ``failed`` or None (never tried)."""
        row = self._db.execute(
            "SELECT state FROM series WHERE source=? AND model=? AND version=? AND strength=? "
            "AND destination=? AND target_noise=?", (source, *_key(job))).fetchone()
        return row[0] if row else None

    def started(self, source: str, job: JobKey) -> None:
        """Record that a worker was given the series (before any write can happen)."""
        self._db.execute(
            "INSERT INTO series (source, model, version, strength, destination, target_noise, "
            "state, attempts, updated) VALUES (?, ?, ?, ?, ?, ?, 'started', 1, ?) ON CONFLICT "
            "DO UPDATE SET "
            "state='started', attempts=attempts+1, updated=excluded.updated",
            (source, *_key(job), time.time()))

    def finish(self, source: str, job: JobKey, state: str, derived: str = "",
               reason: str = "") -> None:
        """Record the outcome: ``done`` (with what was written) or ``failed`` (with why)."""
        if state not in ("done", "failed"):
            raise ValueError(f"a finished series is done or failed, not {state!r}")
        self._db.execute(
            "UPDATE series SET state=?, derived=?, reason=?, updated=? WHERE source=? AND "
            "model=? AND version=? AND strength=? AND destination=? AND target_noise=?",
            (state, derived, reason, time.time(), source, *_key(job)))

    def derived(self, job: JobKey, other_versions: bool = False) -> set[str]:
        """The derived series written for this job (or, with ``other_versions``, by the same
        model and strength at other versions: those are never taken for this version's)."""
        op = "!=" if other_versions else "="
        rows = self._db.execute(
            f"SELECT derived FROM series WHERE model=? AND version{op}? AND strength=? AND "
            "destination=? AND target_noise=? AND state='done' AND derived!=''",
            _key(job)).fetchall()
        return {r[0] for r in rows}

    def rows(self) -> list[dict]:
        """Every row, for reports and tests."""
        cursor = self._db.execute("SELECT * FROM series ORDER BY source")
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _key(job: JobKey) -> tuple:
    return (job.model, job.version, float(job.strength), job.destination,
            float(job.target_noise))
