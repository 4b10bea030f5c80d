"""`/study/...`: the reader-study service (`ldct.study.service`) on the app's own server.

Reader routes answer only with opaque tokens (blinded). Who may call which route is decided
before a route runs (`ldct.access`: a reader token reaches only its own study and reader id;
coordinator routes need the role coordinator or admin); the routes read the caller's identity
to narrow what a reader sees to their own study and volumes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from ldct.access import caller
from ldct.auth import Identity
from ldct.study.analysis import write_scores
from ldct.study.definition import MAX_YAML_BYTES, StudyDefinitionError, loads, parse
from ldct.study.page import HEADERS, asset
from ldct.study.service import StudyError, StudyService
from lib.routes import pacs_errors


def _reader(request: Request) -> Identity | None:
    """The caller when it is a reader (bound to one study and reader id), else None."""
    identity = caller(request.scope)
    return identity if identity is not None and identity.role == "reader" else None


def blinded_file(path: Path) -> StreamingResponse:
    """A study volume with headers that are the same for every condition: no ETag and no
    Last-Modified (a file response derives both from the file, which would tell a volume shared
    by several items, the original, from the others), not cached."""

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Length": str(path.stat().st_size), "Cache-Control": "no-store",
        "Content-Disposition": 'attachment; filename="volume.nrrd"'})


async def _bounded_text(request: Request, limit: int) -> str:
    """The request body as text, refused (413) as soon as it passes ``limit`` bytes: never
    held whole when it is larger."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=(
                f"a study definition is at most {limit:,} bytes of YAML; this one is larger"))
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def study_router(service: StudyService) -> APIRouter:
    """The routes, each a thin call into ``service`` with its errors as HTTP answers."""
    router = APIRouter(prefix="/study", tags=["Reader study"])

    # first, so that no /study/{study}/... route takes the page's paths; static files, not API
    @router.get("/_reader/", include_in_schema=False)
    @router.get("/_reader/{name}", include_in_schema=False)
    def page(name: str = "") -> Response:
        """The browser reader page (its token goes in the link's #token=), script, style."""
        found = asset(name)
        if found is None:
            raise HTTPException(status_code=404, detail=f"the reader page has no file '{name}'")
        return Response(found[0], media_type=found[1], headers=HEADERS)

    def call(function, *args):
        try:
            return function(*args)
        except StudyError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        except StudyDefinitionError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    @router.get("/", summary="Open studies (a reader sees their own)")
    def studies(request: Request) -> list[dict[str, Any]]:
        reader = _reader(request)
        if reader is None:
            return service.studies()
        return [{**s, "reader": reader.reader} for s in service.studies()
                if s["study"] == reader.study]

    @router.post("/", summary="Create a study from its YAML (volumes are denoised up front)",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "text/plain": {"schema": {"type": "string"}}}}})
    async def create(request: Request) -> dict[str, Any]:
        definition = await _bounded_text(request, MAX_YAML_BYTES)

        def created() -> dict[str, Any]:
            with pacs_errors():  # the case ids are checked against the PACS listing
                return call(lambda: service.create_in_background(parse(loads(definition))))
        return await run_in_threadpool(created)

    @router.post("/{study}/readers/{reader}/session", summary="Start or resume a reader")
    def session(study: str, reader: str) -> dict[str, Any]:
        return call(service.session, study, reader)

    @router.get("/{study}/readers/{reader}/next", summary="The reader's next item")
    def next_item(study: str, reader: str) -> dict[str, Any]:
        return call(service.next_item, study, reader)

    @router.post("/{study}/readers/{reader}/items/{item}", summary="Submit scores (once)")
    def submit(study: str, reader: str, item: str,
               body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return call(service.submit, study, reader, item, body)

    @router.get("/{study}/volumes/{token}", summary="A study volume (NRRD)")
    def volume(request: Request, study: str, token: str) -> StreamingResponse:
        reader = _reader(request)
        return blinded_file(call(service.volume_file, study, token,
                                 reader.reader if reader else None))

    @router.get("/{study}/status", summary="Coordinator: progress of every reader")
    def status(study: str) -> dict[str, Any]:
        return call(service.status, study, None)

    @router.post("/{study}/close", summary="Coordinator: close the study")
    def close(study: str) -> dict[str, Any]:
        return call(service.close, study, None)

    @router.get("/{study}/export", summary="Coordinator: unblinded scores as CSV")
    def export(study: str) -> Response:
        rows = call(service.export_rows, study, None)
        buffer = io.StringIO()
        write_scores(rows, buffer)
        return Response(buffer.getvalue(), media_type="text/csv")

    return router
