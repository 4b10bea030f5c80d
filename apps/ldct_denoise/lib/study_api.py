"""`/study/...`: the reader-study service (`ldct.study.service`) on the app's own server.

Reader routes answer only with opaque tokens (blinded); coordinator routes need the
coordinator token as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import FileResponse, Response

from ldct.study.analysis import write_scores
from ldct.study.definition import StudyDefinitionError, parse
from ldct.study.service import StudyError, StudyService


def _bearer(authorization: str) -> str:
    return authorization.removeprefix("Bearer ").strip()


def study_router(service: StudyService) -> APIRouter:
    """The routes, each a thin call into ``service`` with its errors as HTTP answers."""
    router = APIRouter(prefix="/study", tags=["Reader study"])

    def call(function, *args):
        try:
            return function(*args)
        except StudyError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        except StudyDefinitionError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    @router.get("/", summary="Open studies")
    def studies() -> list[dict[str, Any]]:
        return service.studies()

    @router.post("/", summary="Create a study from its YAML (volumes are denoised up front)")
    def create(definition: str = Body(..., media_type="text/plain")) -> dict[str, Any]:
        try:
            data = yaml.safe_load(definition)
        except yaml.YAMLError as exc:
            raise HTTPException(status_code=422, detail=f"not valid YAML: {exc}") from exc
        return call(lambda: service.create_in_background(parse(data)))

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
    def volume(study: str, token: str) -> FileResponse:
        path = call(service.volume_file, study, token)
        return FileResponse(path, media_type="application/octet-stream",
                            filename="volume.nrrd")

    @router.get("/{study}/status", summary="Coordinator: progress of every reader")
    def status(study: str, authorization: str = Header("")) -> dict[str, Any]:
        return call(service.status, study, _bearer(authorization))

    @router.post("/{study}/close", summary="Coordinator: close the study")
    def close(study: str, authorization: str = Header("")) -> dict[str, Any]:
        return call(service.close, study, _bearer(authorization))

    @router.get("/{study}/export", summary="Coordinator: unblinded scores as CSV")
    def export(study: str, authorization: str = Header("")) -> Response:
        rows = call(service.export_rows, study, _bearer(authorization))
        buffer = io.StringIO()
        write_scores(rows, buffer)
        return Response(buffer.getvalue(), media_type="text/csv")

    return router
