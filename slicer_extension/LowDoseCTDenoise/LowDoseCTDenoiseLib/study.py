"""Reader side of a reader study: the blinded /study/ API and a reader's session state.

The reader sees studies, items and volumes only as the server names them for readers (opaque
tokens, volumes "A" and "B"); nothing here can learn which condition is behind a letter.
A submission carries an id made once per item, so resending it after a network error is
safe (the server acknowledges the same submission again and never stores it twice).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from .connection import CancelToken, ServerConnection


class StudyClient(ServerConnection):
    """The reader routes of a server's /study/ service."""

    def studies(self) -> list[dict[str, Any]]:
        return self._request_json("GET", "/study/", retry=True)

    def session(self, study: str, reader: str) -> dict[str, Any]:
        return self._request_json("POST", f"/study/{quote(study)}/readers/{quote(reader)}"
                                          "/session", retry=True)

    def next_item(self, study: str, reader: str) -> dict[str, Any]:
        return self._request_json("GET", f"/study/{quote(study)}/readers/{quote(reader)}/next",
                                  retry=True)

    def download(self, path: str, output: str | Path,
                 cancel: Optional[CancelToken] = None) -> Path:
        return self._download(path, output, cancel)

    def submit(self, study: str, reader: str, item: str, body: dict[str, Any]
               ) -> dict[str, Any]:
        return self._request_json("POST", f"/study/{quote(study)}/readers/{quote(reader)}"
                                          f"/items/{quote(item)}", body, retry=True)


def reader_id(text: str) -> str:
    """The reader id as typed, checked before anything is sent."""
    if not text.strip():
        raise ValueError("Enter your reader id (the coordinator gave it to you).")
    return text.strip()


class ReaderSession:
    """One reader working through one study: progress, the current item, its answer."""

    def __init__(self, client: StudyClient, study: str, reader: str) -> None:
        self.client, self.study, self.reader = client, study, reader_id(reader)
        self.info = client.session(study, self.reader)
        self.done, self.total = self.info["done"], self.info["total"]
        self.item: Optional[dict[str, Any]] = None
        self._shown_at = 0.0
        self._submission_id = ""

    @property
    def criteria(self) -> list[dict[str, Any]]:
        return self.info["criteria"]

    @property
    def window(self) -> tuple[float, float]:
        return float(self.info["window"]["width"]), float(self.info["window"]["level"])

    @property
    def forced_choice(self) -> bool:
        return bool(self.info["forced_choice"])

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def progress_text(self) -> str:
        if self.finished:
            return f"All {self.total} items scored. Thank you."
        return f"Item {self.done + 1} of {self.total}"

    def load_next(self, folder: str | Path) -> dict[str, Path]:
        """Fetch the next item's volumes into ``folder`` as A.nrrd (and B.nrrd)."""
        item = self.client.next_item(self.study, self.reader)
        self.done, self.total = item["done"], item["total"]
        if item["finished"]:
            self.item = None
            return {}
        files = {label: self.client.download(path, Path(folder) / f"{label}.nrrd")
                 for label, path in sorted(item["volumes"].items())}
        self.item = item
        self._submission_id = uuid.uuid4().hex  # one id per item: resubmitting is safe
        self._shown_at = time.monotonic()
        return files

    def answer(self, scores: dict[str, dict[str, int]], choice: Optional[str] = None
               ) -> dict[str, Any]:
        """Submit the current item's scores (every criterion for every side) and choice."""
        return self.send(self.check(scores, choice))

    def check(self, scores: dict[str, dict[str, int]], choice: Optional[str] = None
              ) -> dict[str, Any]:
        """The submission of the current item, or ValueError saying what is missing (on the
        GUI thread: nothing is sent)."""
        if self.item is None:
            raise ValueError("There is no item to score: load the next item first.")
        sides = sorted(self.item["volumes"])
        missing = [f"{side}: {c['name']}" for side in sides for c in self.criteria
                   if c["name"] not in scores.get(side, {})]
        if missing:
            raise ValueError("Score every criterion before submitting; missing "
                             + ", ".join(missing))
        if self.forced_choice and choice not in ("A", "B"):
            raise ValueError("Choose which image is better (A or B) before submitting.")
        return {"submission_id": self._submission_id, "scores": scores,
                "choice": choice if self.forced_choice else None,
                "reading_seconds": round(time.monotonic() - self._shown_at, 2)}

    def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a checked submission; the server acknowledges with the reader's progress."""
        ack = self.client.submit(self.study, self.reader, self.item["item"], body)
        self.done, self.total = ack["done"], ack["total"]
        self.item = None
        return ack
