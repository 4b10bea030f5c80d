"""SQLite storage of a study: WAL journal, synchronous FULL, one transaction per submission.

A score is acknowledged only after its transaction commits, so a server killed at any moment
keeps every acknowledged score. One connection per call (SQLite serializes writers), so any
number of reader threads can use one store.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
    token TEXT PRIMARY KEY, case_id TEXT NOT NULL, condition TEXT NOT NULL, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    token TEXT PRIMARY KEY, reader TEXT NOT NULL, position INTEGER NOT NULL,
    case_id TEXT NOT NULL, left_condition TEXT NOT NULL, right_condition TEXT,
    left_volume TEXT NOT NULL, right_volume TEXT, served_at REAL,
    UNIQUE (reader, position));
CREATE TABLE IF NOT EXISTS scores (
    assignment TEXT PRIMARY KEY REFERENCES assignments(token), reader TEXT NOT NULL,
    submission_id TEXT NOT NULL, payload TEXT NOT NULL, choice TEXT,
    reading_seconds REAL, submitted_at REAL NOT NULL);
"""


class StudyStore:
    """One study's database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        db = sqlite3.connect(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction (committed on success)."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- meta -----------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.connect() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        with self.connect() as db:
            return {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT * FROM meta")}

    # -- creation -------------------------------------------------------------------------
    def volume_path(self, token: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT path FROM volumes WHERE token = ?", (token,)).fetchone()
        return row["path"] if row else None

    def volume_reader(self, token: str) -> str | None:
        """The reader whose item shows this volume token (each token shows on one item)."""
        with self.connect() as db:
            row = db.execute("SELECT reader FROM assignments WHERE left_volume = ? OR "
                             "right_volume = ?", (token, token)).fetchone()
        return row["reader"] if row else None

    def add_assignments(self, rows: list[dict[str, Any]],
                        volumes: list[tuple[str, str, str, str]]) -> None:
        """Readers' items and their volume tokens (token, case, condition, file), together."""
        with self.connect() as db:
            db.executemany("INSERT INTO volumes VALUES (?, ?, ?, ?)", volumes)
            db.executemany(
                "INSERT INTO assignments (token, reader, position, case_id, left_condition, "
                "right_condition, left_volume, right_volume) VALUES (:token, :reader, "
                ":position, :case_id, :left_condition, :right_condition, :left_volume, "
                ":right_volume)", rows)

    # -- readers --------------------------------------------------------------------------
    def next_assignment(self, reader: str) -> sqlite3.Row | None:
        """The reader's first unscored item, marked as served (for the reading time)."""
        with self.connect() as db:
            row = db.execute(
                "SELECT a.* FROM assignments a LEFT JOIN scores s ON s.assignment = a.token "
                "WHERE a.reader = ? AND s.assignment IS NULL ORDER BY a.position LIMIT 1",
                (reader,)).fetchone()
            if row is not None and row["served_at"] is None:
                db.execute("UPDATE assignments SET served_at = ? WHERE token = ?",
                           (time.time(), row["token"]))
            return row

    def assignment(self, token: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute("SELECT * FROM assignments WHERE token = ?", (token,)).fetchone()

    def progress(self, reader: str) -> tuple[int, int]:
        """(scored, total) items of a reader."""
        with self.connect() as db:
            total = db.execute("SELECT COUNT(*) FROM assignments WHERE reader = ?",
                               (reader,)).fetchone()[0]
            done = db.execute("SELECT COUNT(*) FROM scores WHERE reader = ?",
                              (reader,)).fetchone()[0]
        return done, total

    def submit(self, assignment: str, reader: str, submission_id: str, payload: dict,
               choice: str | None, reading_seconds: float | None) -> tuple[bool, dict | None]:
        """Store a score once. Returns (stored now, the earlier payload when there was one)."""
        with self.connect() as db:
            old = db.execute("SELECT * FROM scores WHERE assignment = ?",
                             (assignment,)).fetchone()
            if old is not None:
                return False, {"submission_id": old["submission_id"],
                               "payload": json.loads(old["payload"]), "choice": old["choice"]}
            db.execute("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (assignment, reader, submission_id, json.dumps(payload, sort_keys=True),
                        choice, reading_seconds, time.time()))
        return True, None

    # -- coordinator ----------------------------------------------------------------------
    def readers_progress(self) -> dict[str, dict[str, int]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT a.reader, COUNT(a.token) AS total, COUNT(s.assignment) AS done "
                "FROM assignments a LEFT JOIN scores s ON s.assignment = a.token "
                "GROUP BY a.reader ORDER BY a.reader").fetchall()
        return {r["reader"]: {"done": r["done"], "total": r["total"]} for r in rows}

    def scored_rows(self) -> list[sqlite3.Row]:
        """Every score with its (unblinded) assignment."""
        with self.connect() as db:
            return db.execute(
                "SELECT a.reader, a.position, a.case_id, a.left_condition, a.right_condition, "
                "s.payload, s.choice, s.reading_seconds, s.submitted_at, a.served_at "
                "FROM scores s JOIN assignments a ON a.token = s.assignment "
                "ORDER BY a.reader, a.position").fetchall()
