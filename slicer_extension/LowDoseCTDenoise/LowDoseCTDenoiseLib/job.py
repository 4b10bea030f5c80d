"""Server calls on a worker thread, polled by the UI (a QTimer in Slicer), so it never freezes."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from .client import DenoiseClient
from .connection import CancelToken, Progress
from .errors import ServerError

Export = Callable[[Path, Callable[[float], None]], Path]  # (path, on_slice) -> the file
BUSY_PHASES = ("queued", "denoise")  # no measure of progress: the panel shows a busy bar


class BackgroundCall:
    """``function(*args)`` on a worker thread; the UI polls ``done``, then reads ``result`` or
    ``error`` (a readable :class:`ServerError`)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args
        self.result: Any = None
        self.error: Optional[ServerError] = None
        self._thread = threading.Thread(target=self._run, name="ldct-call", daemon=True)

    def start(self) -> BackgroundCall:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until finished (tests and Slicer's self-test; the UI polls instead)."""
        self._thread.join(timeout)
        return self.done

    def _run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except ServerError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - a worker must report, never die silently
            self.error = ServerError(f"Unexpected error: {exc!r}")


class CancellableCall(BackgroundCall):
    """A server request the user can stop: ``cancel()`` closes its connection, and the
    server cancels the job named ``job_id`` (so its worker stops too)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.token = CancelToken()
        self.job_id = uuid.uuid4().hex
        super().__init__(function, *args)

    def cancel(self) -> None:
        self.token.cancel()


class WriteBackJob(CancellableCall):
    """Send to PACS through the server, off the UI thread: when the server's datastore lists
    ``series`` (the input is a series of the server's PACS), the server denoises that series
    with ``model`` at ``params`` and stores the result in its study (``result``: the new
    series' UID); ``result`` is "" when the server does not have the series."""

    def __init__(self, client: DenoiseClient, series: str, model: str,
                 params: dict[str, Any]) -> None:
        self.client, self.series, self.model, self.params = client, series, model, params
        super().__init__(self._write_back)

    def _write_back(self) -> str:
        if self.series not in self.client.datastore_ids(self.token):
            return ""
        return self.client.write_back(self.model, self.series, self.params, self.token,
                                      self.job_id)


class DenoiseJob(CancellableCall):
    """Runs :meth:`DenoiseClient.denoise` off the UI thread; the UI reads ``phase``/``fraction``.

    The UI never blocks: it starts the job, polls ``done`` from a timer, and on completion
    reads ``result`` (the downloaded file) or ``error`` (a readable :class:`ServerError`).
    ``job_id`` names the request on the server (``GET /jobs/{job_id}``); cancelling closes the
    connection, which cancels the server's job too, so its worker stops. ``export``, when
    given, writes ``volume`` first, here on the worker (compressing a large CT takes seconds);
    ``prepare``, when given, turns the downloaded file into ``result`` here too (reading and
    blending it), so that the UI thread only shows it.
    """

    def __init__(self, client: DenoiseClient, model: str, volume: Path, output: Path,
                 params: Optional[dict[str, Any]] = None,
                 on_progress: Optional[Progress] = None, export: Optional[Export] = None,
                 prepare: Optional[Callable[[Path], Any]] = None) -> None:
        self.client, self.model, self.volume, self.output = client, model, volume, output
        self.params, self.export, self.prepare = params or {}, export, prepare
        self.on_progress = on_progress  # called on the worker thread; the UI polls instead
        self.phase, self.fraction = "queued", 0.0
        super().__init__(self._denoise)

    def status_text(self) -> str:
        """One line for the progress label."""
        labels = {"queued": "Starting", "export": "Compressing the volume",
                  "upload": "Uploading", "denoise": "Denoising on server",
                  "download": "Downloading result", "read": "Reading the result",
                  "done": "Done"}
        if self.error is not None:
            return f"Failed: {self.error}"
        if self.phase in BUSY_PHASES:  # the server works: nothing to count
            return f"{labels.get(self.phase, self.phase)}..."
        return f"{labels.get(self.phase, self.phase)} ({100 * self.fraction:.0f} %)"

    def _progress(self, phase: str, fraction: float) -> None:
        self.phase, self.fraction = phase, fraction
        if self.on_progress is not None:
            self.on_progress(phase, fraction)

    def _exported(self, fraction: float) -> None:
        self.token.check()
        self._progress("export", fraction)

    def _denoise(self) -> Path:
        if self.export is not None:
            try:
                self.export(self.volume, self._exported)
            except OSError as exc:
                raise ServerError(f"Could not write the upload file {self.volume} "
                                  f"({exc.strerror or exc}): is the disk full?") from exc
        path = self.client.denoise(self.model, self.volume, self.output, self.params,
                                   cancel=self.token, progress=self._progress, job=self.job_id)
        if self.prepare is None:
            return path
        self.token.check()
        self._progress("read", 0.0)
        try:
            return self.prepare(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ServerError(f"The server's result could not be read: {exc}") from exc
