"""HTTP plumbing shared by the denoising and reader-study clients (standard library only).

Uses ``http.client`` so that a request owns its socket: cancelling shuts the socket down,
which ends a blocking wait for the server at once. Downloads are streamed in chunks (progress
and cancellation between chunks) to a temporary name renamed when complete. Idempotent calls
are retried on connection errors and 5xx answers.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlencode, urlsplit

from .errors import (
    AuthenticationFailed,
    Cancelled,
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


class ServerConnection:
    """One server URL (``http(s)://host:port``), optionally with a bearer token."""

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

    def _request(self, method: str, path: str, body: Optional[dict[str, Any]] = None,
                 retry: bool = False, cancel: Optional[CancelToken] = None,
                 form: Optional[dict[str, str]] = None) -> bytes:
        """A request with a JSON ``body`` or form fields (``form``: MONAI Label's routes take
        their parameters so); ``retry`` only for idempotent ones (GETs, keyed submissions)."""
        for attempt in range(self.retries + 1 if retry else 1):
            try:
                return self._request_once(method, path, body, cancel, form)
            except (ServerUnreachable, ServerFailure):
                if attempt == (self.retries if retry else 0):
                    raise
                time.sleep(0.5 * 2**attempt)  # back-off between retries of an idempotent call
        raise AssertionError("unreachable")

    def _request_json(self, method: str, path: str, body: Optional[dict[str, Any]] = None,
                      retry: bool = False, cancel: Optional[CancelToken] = None,
                      form: Optional[dict[str, str]] = None) -> Any:
        try:
            return json.loads(self._request(method, path, body, retry, cancel, form))
        except ValueError as exc:
            raise NotMonaiLabel(f"{self.url}{path} did not answer with JSON: is this the ldct "
                                "server?") from exc

    def _request_once(self, method: str, path: str, body: Optional[dict[str, Any]],
                      cancel: Optional[CancelToken] = None,
                      form: Optional[dict[str, str]] = None) -> bytes:
        conn = self._connect(cancel)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, self._parts.path + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (socket.timeout, TimeoutError) as exc:
            raise ServerTimeout(f"{self.url} did not answer {path} within "
                                f"{self.read_timeout:g} s.") from exc
        except (OSError, http.client.HTTPException) as exc:
            if cancel is not None:
                cancel.check()  # a cancelled request ends with its socket shut down
            raise ServerUnreachable(f"The connection to {self.url} broke: {exc}") from exc
        finally:
            conn.close()
        if response.status == 404 and path.startswith("/info/"):
            raise NotMonaiLabel(f"{self.url} has no {path}: it is not a MONAI Label server. "
                                "Check the URL and port of the ldct server.")
        if response.status != 200:
            raise self._http_error(response.status, payload, path)
        return payload

    def _download(self, path: str, output: str | Path, cancel: Optional[CancelToken] = None,
                  progress: Optional[Progress] = None) -> Path:
        """GET a file to ``output`` in chunks (complete or absent, never partial)."""
        cancel = cancel or CancelToken()
        conn = self._connect(cancel)
        try:
            conn.request("GET", self._parts.path + path, headers=self._headers())
            response = conn.getresponse()
            if response.status != 200:
                raise self._http_error(response.status, response.read(), path)
            return self._stream_response(response, Path(output), cancel, progress)
        except (socket.timeout, TimeoutError) as exc:
            cancel.check()
            raise ServerTimeout(f"{self.url} did not send {path} within "
                                f"{self.read_timeout:g} s.") from exc
        except (OSError, http.client.HTTPException) as exc:
            cancel.check()
            raise ServerUnreachable(f"The connection to {self.url} broke: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def _stream_response(response: http.client.HTTPResponse, output: Path, cancel: CancelToken,
                         progress: Optional[Progress]) -> Path:
        total = int(response.getheader("Content-Length") or 0)
        received = 0
        partial = output.with_name(output.name + ".part")
        try:
            with open(partial, "wb") as sink:
                while chunk := response.read(CHUNK):
                    cancel.check()
                    sink.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress("download", received / total if total else 0.0)
            cancel.check()
            os.replace(partial, output)
        finally:
            if partial.exists():
                partial.unlink()
        return output

    def _http_error(self, status: int, body: bytes, what: str) -> ServerError:
        try:
            detail = json.loads(body).get("detail", "")
        except (ValueError, AttributeError):
            detail = body.decode("utf-8", "replace")[:300]
        detail = detail if isinstance(detail, str) else json.dumps(detail)
        if status in (401, 403):
            if detail and detail != "Not authenticated":  # the server said why
                return AuthenticationFailed(f"The server refused access (HTTP {status}): "
                                            f"{detail}")
            return AuthenticationFailed(f"The server refused access (HTTP {status}). Enter a "
                                        "valid token for this server in the module settings.")
        if 400 <= status < 500:
            return RequestRejected(f"The server rejected the request for {what} (HTTP {status})"
                                   f": {detail or 'no reason given'}")
        return ServerFailure(f"The server failed on {what} (HTTP {status}): "
                             f"{detail or 'no details'}. See the server log.")
