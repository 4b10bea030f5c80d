"""Decoding a volume in a child process, so that a job can be ended in every phase.

A reader stuck in ``open()`` or in a long decode cannot be interrupted inside a thread; a
child process can be killed. The worker waits for the child, checking the job's cancel flag
and a deadline; the child writes the HU array (.npy) and the geometry (JSON, the DICOM header
as DICOM JSON, and when asked every slice's header without pixels: what a write-back to the
PACS needs to point each derived slice at its source) to a folder of the server's, and imports
only `ldct.io` (no torch: it starts in well under a second). The server decodes nothing
itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ldct.io import CTInputError, CTVolume, read_volume

DECODE_TIMEOUT_ENV = "LDCT_DECODE_TIMEOUT_S"
DEFAULT_DECODE_TIMEOUT_S = 600.0  # an upper bound on one decode, not a target
POLL_S = 0.1  # how often the worker checks the cancel flag while the child decodes
REFUSED = 3  # the child's exit status for a CTInputError (its message in error.txt)


class DecodeCancelled(RuntimeError):
    """The job was cancelled while its volume was being decoded."""


def decode_timeout() -> float:
    return float(os.environ.get(DECODE_TIMEOUT_ENV) or DEFAULT_DECODE_TIMEOUT_S)


_spare: subprocess.Popen | None = None  # a child started ahead, its imports done
_spare_lock = threading.Lock()


def _take_child() -> subprocess.Popen:
    """The spare child (started now if there is none), and a new spare started behind it: a
    request does not wait for a Python start and ``ldct.io``'s imports."""
    global _spare
    with _spare_lock:
        if _spare is not None and _spare.poll() is not None:  # it died (killed by hand?)
            _spare.errors.close()
            _spare = None
        child = _spare or _start_child()
        _spare = _start_child()
    return child


def _start_child() -> subprocess.Popen:
    """A child waiting for its work on stdin; its stderr goes to a file (a pipe could fill)."""
    errors = tempfile.TemporaryFile()
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=errors)
    child.errors = errors  # type: ignore[attr-defined]
    return child


def read_in_child(path: str | Path, shown: str, stop: Callable[[], bool] | None = None,
                  timeout_s: float | None = None, slice_headers: bool = False) -> CTVolume:
    """`ldct.io.read_volume(path)` run in a child process that is killed when ``stop()`` turns
    true (`DecodeCancelled`) or after ``timeout_s`` (`CTInputError`); ``shown`` replaces the
    server's paths in messages. ``slice_headers``: with `CTVolume.sources` (a DICOM series'
    per-slice headers; about 2 ms a slice each way, so only when asked)."""
    timeout_s = decode_timeout() if timeout_s is None else timeout_s
    hidden = str(Path(path).parent)
    with tempfile.TemporaryDirectory(prefix="ldct-decode-") as folder:
        out = Path(folder)
        child = _take_child()
        try:
            child.stdin.write(f"{path}\n{out}\n{'sources' if slice_headers else ''}\n".encode())
            child.stdin.close()
            return _await(child, path, out, shown, hidden, stop, timeout_s)
        finally:
            child.errors.close()


def _await(child: subprocess.Popen, path: str | Path, out: Path, shown: str, hidden: str,
           stop: Callable[[], bool] | None, timeout_s: float) -> CTVolume:
    """Wait for ``child`` to read ``path`` (killing it on cancel or timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            code = child.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        if (stop is not None and stop()) or time.monotonic() > deadline:
            child.kill()
            child.wait()
            if stop is not None and stop():
                raise DecodeCancelled("cancelled while the volume was being read")
            raise CTInputError(f"{shown}: reading the volume took more than {timeout_s:g} s "
                               "and was stopped; send a smaller or simpler volume.")
    if code == REFUSED:
        message = (out / "error.txt").read_text()
        raise CTInputError(message.replace(str(path), shown).replace(hidden, "(server folder)"))
    if code != 0:
        child.errors.seek(0)
        lines = child.errors.read().decode(errors="replace").strip().splitlines()
        reason = (lines[-1] if lines else f"exit status {code}")
        raise CTInputError(f"{shown}: cannot be read ({reason[:300]})".replace(
            str(path), shown).replace(hidden, "(server folder)"))
    geometry = json.loads((out / "geometry.json").read_text())
    header = geometry["dicom"]
    return CTVolume(hu=np.load(out / "hu.npy"), spacing=tuple(geometry["spacing"]),
                    origin=tuple(geometry["origin"]),
                    direction=np.array(geometry["direction"], dtype=np.float64),
                    dicom=None if header is None else Dataset.from_json(header),
                    sources=tuple(Dataset.from_json(s) for s in geometry["sources"]))


def _child(path: str, out: Path, slice_headers: bool) -> int:
    """The child's work: read, then write the array and geometry (or the refusal)."""
    try:
        volume = read_volume(path)
    except CTInputError as exc:
        (out / "error.txt").write_text(str(exc))
        return REFUSED
    np.save(out / "hu.npy", volume.hu)
    header = None if volume.dicom is None else _as_json(volume.dicom)
    (out / "geometry.json").write_text(json.dumps({
        "spacing": list(volume.spacing), "origin": list(volume.origin),
        "direction": np.asarray(volume.direction).tolist(), "dicom": header,
        "sources": [_as_json(s) for s in volume.sources] if slice_headers else []}))
    return 0


def _as_json(header: Dataset) -> dict:
    """A header as DICOM JSON without private elements (no derived slice keeps them) and
    without values JSON cannot carry (an IS of 'x' a scanner wrote: pydicom reads it, a
    derived series need not copy it)."""
    public = Dataset()
    public.update({tag: element for tag, element in header.items() if not tag.is_private})
    return public.to_json_dict(suppress_invalid_tags=True)


if __name__ == "__main__":
    work = [sys.stdin.readline().strip() for _ in range(3)]  # path, out folder, "sources"?
    sys.exit(_child(work[0], Path(work[1]), work[2] == "sources") if all(work[:2])
             else 0)  # no work: the server ended
