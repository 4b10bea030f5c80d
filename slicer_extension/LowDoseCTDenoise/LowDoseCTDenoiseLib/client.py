"""Client of the ldct MONAI Label server, on the standard library only (runs in Slicer's Python).

Uses ``http.client`` so that a request owns its socket: cancelling shuts the socket down,
which ends a blocking wait for the server at once. Uploads and downloads are streamed in
chunks (progress and cancellation between chunks), so a large CT never sits in memory twice.
Idempotent calls (``GET /info/``) are retried on connection errors and 5xx answers.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode, urlsplit

from .errors import (
    AuthenticationFailed,
    Cancelled,
    ModelMissing,
    NotMonaiLabel,
    RequestRejected,
    ServerError,
    ServerFailure,
    ServerTimeout,
    ServerUnreachable,
)

CHUNK = 1 << 20
Progress = Callable[[str, float], None]  # (phase, fraction 0..1)


class CancelToken:
    """Shared between the UI (``cancel()``) and the worker running a request."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the request: sockets in use are shut down, so blocking reads end at once."""
        self._cancelled.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("Denoising was cancelled; the input volume is unchanged.")

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.cancelled:
            self.cancel()


@dataclass
class ModelEntry:
    """One denoiser the server offers, with what the UI shows about it."""

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    def tooltip(self) -> str:
        """The model card in a few lines (method, paper, training data, held-out metrics)."""
        card = self.card
        lines = [self.description]
        for key, label in (("title", "Method"), ("paper", "Paper"),
                           ("supervision", "Supervision"), ("training_data", "Trained on"),
                           ("version", "Version")):
            if card.get(key):
                lines.append(f"{label}: {card[key]}")
        held_out = card.get("held_out") or {}
        if held_out:
            lines.append("Held-out (ircadb17, dose 0.25): " + ", ".join(
                f"{k} {v:.3g}" for k, v in held_out.items() if isinstance(v, (int, float))))
        return "\n".join(lines)


class DenoiseClient:
    """Talks to one server URL (``http(s)://host:port``), optionally with a bearer token."""

    def __init__(self, url: str, token: str = "", connect_timeout: float = 5.0,
                 read_timeout: float = 600.0, retries: int = 2) -> None:
        parts = urlsplit(url.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerUnreachable(f"'{url}' is not a server URL; enter one like "
                                    "http://127.0.0.1:8000")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self._parts = parts
        self.token = token
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries

    # -- public calls -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``GET /info/``, checked to come from a MONAI Label server (retried)."""
        body = self._get_with_retries("/info/")
        try:
            info = json.loads(body)
        except ValueError:
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("models"), dict):
            raise NotMonaiLabel(f"{self.url} answered, but not as a MONAI Label server (no model "
                                "list in /info/). Check the URL and port of the ldct server.")
        return info

    def models(self) -> list[ModelEntry]:
        """The denoisers the server offers, with their model cards."""
        entries = []
        for name, model in self.info()["models"].items():
            details = model.get("ldct") or {}
            card = {**(details.get("card") or {}), "version": details.get("version", "")}
            entries.append(ModelEntry(name, model.get("description", name),
                                      model.get("config") or {}, card))
        return entries

    def denoise(self, model: str, volume: str | Path, output: str | Path,
                params: Optional[dict[str, Any]] = None, cancel: Optional[CancelToken] = None,
                progress: Optional[Progress] = None) -> Path:
        """Upload ``volume``, run ``model`` and stream the result to ``output``.

        The result is written to a temporary name and renamed when complete, so a failed or
        cancelled request never leaves a partial file.
        """
        cancel = cancel or CancelToken()
        progress = progress or (lambda phase, fraction: None)
        if model not in {m.name for m in self.models()}:
            raise ModelMissing(f"The server at {self.url} does not offer the model '{model}'. "
                               "Refresh the model list.")
        volume, output = Path(volume), Path(output)
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n"
                f"{json.dumps(params or {})}\r\n--{boundary}\r\nContent-Disposition: form-data; "
                f"name=\"file\"; filename=\"{volume.name}\"\r\nContent-Type: "
                "application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = volume.stat().st_size
        path = f"/infer/{quote(model)}?{urlencode({'output': 'image'})}"
        conn = self._connect(cancel)
        partial = output.with_name(output.name + ".part")
        try:
            conn.putrequest("POST", self._parts.path + path)
            for key, value in self._headers().items():
                conn.putheader(key, value)
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + size + len(tail)))
            conn.endheaders()
            conn.send(head)
            sent = 0
            with open(volume, "rb") as source:
                while chunk := source.read(CHUNK):
                    cancel.check()
                    conn.send(chunk)
                    sent += len(chunk)
                    progress("upload", sent / max(size, 1))
            conn.send(tail)
            progress("denoise", 0.0)
            response = conn.getresponse()
            if response.status != 200:
                raise self._http_error(response.status, response.read(), f"model '{model}'")
            total = int(response.getheader("Content-Length") or 0)
            received = 0
            with open(partial, "wb") as sink:
                while chunk := response.read(CHUNK):
                    cancel.check()
                    sink.write(chunk)
                    received += len(chunk)
                    progress("download", received / total if total else 0.0)
            cancel.check()
            os.replace(partial, output)
            progress("done", 1.0)
            return output
        except (socket.timeout, TimeoutError) as exc:
            cancel.check()
            raise ServerTimeout(f"The server at {self.url} did not answer within "
                                f"{self.read_timeout:g} s. A large volume on a CPU server can "
                                "take minutes: raise the timeout or use a smaller volume.") from exc
        except (OSError, http.client.HTTPException) as exc:
            cancel.check()  # a cancelled request ends with its socket shut down
            raise ServerUnreachable(f"The connection to {self.url} broke: {exc}") from exc
        finally:
            conn.close()
            if partial.exists():
                partial.unlink()

    # -- plumbing -----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "*/*", "User-Agent": "LowDoseCTDenoise-Slicer"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _connect(self, cancel: Optional[CancelToken] = None) -> http.client.HTTPConnection:
        host, port = self._parts.hostname, self._parts.port
        if self._parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except (socket.timeout, TimeoutError) as exc:
            raise ServerTimeout(f"{self.url} did not accept a connection within "
                                f"{self.connect_timeout:g} s. Check the URL and the network."
                                ) from exc
        except OSError as exc:
            raise ServerUnreachable(f"Cannot reach {self.url} ({exc.strerror or exc}). Is the "
                                    "server running (`ldct serve`), and are host and port "
                                    "right?") from exc
        conn.sock.settimeout(self.read_timeout)
        if cancel is not None:
            cancel.watch(conn.sock)
        return conn

    def _get_with_retries(self, path: str) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return self._get(path)
            except (ServerUnreachable, ServerFailure):
                if attempt == self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)  # back-off between retries of an idempotent call
        raise AssertionError("unreachable")

    def _get(self, path: str) -> bytes:
        conn = self._connect()
        try:
            conn.request("GET", self._parts.path + path, headers=self._headers())
            response = conn.getresponse()
            body = response.read()
        except (socket.timeout, TimeoutError) as exc:
            raise ServerTimeout(f"{self.url} did not answer {path} within "
                                f"{self.read_timeout:g} s.") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(f"The connection to {self.url} broke: {exc}") from exc
        finally:
            conn.close()
        if response.status == 404:
            raise NotMonaiLabel(f"{self.url} has no {path}: it is not a MONAI Label server. "
                                "Check the URL and port of the ldct server.")
        if response.status != 200:
            raise self._http_error(response.status, body, path)
        return body

    def _http_error(self, status: int, body: bytes, what: str) -> ServerError:
        try:
            detail = json.loads(body).get("detail", "")
        except (ValueError, AttributeError):
            detail = body.decode("utf-8", "replace")[:300]
        detail = detail if isinstance(detail, str) else json.dumps(detail)
        if status in (401, 403):
            return AuthenticationFailed(f"The server refused access (HTTP {status}). Enter a "
                                        "valid token for this server in the module settings.")
        if 400 <= status < 500:
            return RequestRejected(f"The server rejected the request for {what} (HTTP {status})"
                                   f": {detail or 'no reason given'}")
        return ServerFailure(f"The server failed on {what} (HTTP {status}): "
                             f"{detail or 'no details'}. See the server log.")
