"""A stand-in ldct server inside this process, so the self-test needs no live server.

Slicer's factory machines run every module's self-test with no server around: this one
answers the routes the client uses (``/health``, ``/info/``, ``/infer/{model}``) on
127.0.0.1 at a free port, with one denoiser that smooths the uploaded voxels a little.
Standard library only, so Slicer's self-test and pytest run the very same server.
"""

from __future__ import annotations

import http.server
import json
import sys
import tempfile
import threading
from array import array
from pathlib import Path
from typing import Any, Optional

from .transfer import read_nrrd, write_nrrd

MODEL = "fake-smooth"
INFO = {"name": "ldct fake server (self-test)", "models": {MODEL: {
    "type": "others", "description": "Self-test stand-in: (left + 2 x voxel + right) // 4",
    "ldct": {"kind": "baseline", "version": "self-test", "card": {"title": "Fake smoothing"}}}}}
TYPECODES = {"int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i",
             "uint32": "I", "int64": "q", "uint64": "Q"}  # the integer types the module sends


def smooth(raw: bytes, nrrd_type: str, endian: str = sys.byteorder) -> bytes:
    """The fake denoiser: each voxel but the first and last of the volume becomes
    ``(left + 2 x voxel + right) // 4`` along the fastest axis, in the voxels' own type."""
    voxels = array(TYPECODES[nrrd_type], raw)
    if endian != sys.byteorder:
        voxels.byteswap()
    inner = ((a + 2 * b + c) // 4 for a, b, c in zip(voxels, voxels[1:], voxels[2:]))
    out = array(voxels.typecode, [voxels[0], *inner, voxels[-1]])
    if endian != sys.byteorder:
        out.byteswap()
    return out.tobytes()


def _file_part(body: bytes, content_type: str) -> bytes:
    """The ``file`` field of a multipart/form-data body, as the module's client sends it."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content[:-2]  # the CRLF before the next boundary
    raise ValueError("no 'file' field in the upload")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
        path = self.path.split("?")[0]
        if path == "/health":
            self._send(200, json.dumps({"status": "ok"}).encode(), "application/json")
        elif path == "/info/":
            self._send(200, json.dumps(INFO).encode(), "application/json")
        else:
            self._send(404, b'{"detail": "Not Found"}', "application/json")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.split("?")[0] != f"/infer/{MODEL}":
            self._send(404, b'{"detail": "no such model"}', "application/json")
            return
        with tempfile.TemporaryDirectory(prefix="ldct-fake-") as folder:
            upload = Path(folder) / "upload.nrrd"
            upload.write_bytes(_file_part(body, self.headers.get("Content-Type", "")))
            header, raw = read_nrrd(upload)
            denoised = smooth(raw, header.type, header.endian)
            result = write_nrrd(Path(folder) / "result.nrrd", header, [denoised])
            self._send(200, result.read_bytes(), "application/octet-stream")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: the self-test's output is the module's, not a request log."""


class FakeServer:
    """``with FakeServer() as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> FakeServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="ldct-fake",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
