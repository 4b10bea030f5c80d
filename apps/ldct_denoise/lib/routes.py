"""The app's own /info/, /datastore/, /infer/{model}, /jobs/ and /train/, in place of MONAI
Label's.

MONAI Label's versions are ``async def`` routes that run blocking work on the event loop (one
inference froze every route), take a server path or any id as the image, and leave the upload
behind when they fail. These keep its request/response contract (MONAI Label's own client
works unchanged) but run the work in a worker thread behind a bounded queue, accept only ids
the datastore lists, check every parameter first and remove what they wrote on every path.
Each denoising request is a job (`ldct.jobs`): its progress can be read and it can be
cancelled, and a client that goes away cancels it, so the worker stops too. Fine-tuning runs
one at a time in a worker thread, with checked, bounded settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Body,
    File,
    Form,
    HTTPException,
    Request,
    UploadFile,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.interfaces.app import MONAILabelApp
from monailabel.utils.others.generic import remove_file

from ldct.access import caller
from ldct.finetune import check_settings
from ldct.infer_params import parse_params
from ldct.io import CTInputError
from ldct.jobs import DEVICE, JOBS, Job, JobError
from ldct.series_zip import SeriesTooLarge, zip_series
from ldct.server.uploads import check_upload

RETRY_AFTER_S = 30
CT_CHECK_HEADER = "X-CT-Number-Check"  # the CT-number guard's verdict beside a result file
NOISE_HEADER = "X-Noise-Level"  # a target_noise request's match (input/result noise, strength)
DISCONNECT_CHECK_S = 0.5  # how often a waiting request checks that its client is still there
# MONAI Label's answers (ResultType) a denoiser gives: none is its multipart (all), and why the
# others are refused
OUTPUTS = ("image", "json", "all")
REFUSED_OUTPUTS = {
    ResultType.dicom_seg.value: "a denoiser has no segmentation to store as DICOM SEG; ask "
    "output=image for the denoised volume (its format: params.result_extension), or send "
    "write_back: true to store it in the PACS as a derived image series"}


class InferenceQueue:
    """One inference at a time (it uses every core or the GPU), at most ``limit`` requests
    admitted (queued or running); every admitted request is released, whatever happens."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted = 0
        self._device = asyncio.Semaphore(1)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        if self.admitted >= self.limit:
            raise HTTPException(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
                                detail=f"the server is busy ({self.admitted} denoising requests "
                                       f"queued or running); try again in {RETRY_AFTER_S} s")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, function, *args):
        """Run ``function(*args)`` in a worker thread once the device is free."""
        async with self._device:
            return await run_in_threadpool(_on_device, function, *args)


def _on_device(function, *args):
    with DEVICE:  # shared with reader-study creation (`ldct.study.service`)
        return function(*args)


def upload_suffix(filename: str | None) -> str:
    """The upload's format suffix (``.nii.gz``, ``.nrrd``, ...): the only part of the client's
    file name that is used, and only when it is plain letters and digits."""
    suffix = "".join(PurePosixPath((filename or "").replace("\\", "/")).suffixes[-2:]).lower()
    return suffix if re.fullmatch(r"(\.[a-z0-9]{1,8}){1,2}", suffix) else ""


@contextlib.contextmanager
def pacs_errors() -> Iterator[None]:
    """A PACS that refuses or fails a query is a 502 that says what to check, not a 500."""
    try:
        yield
    except requests.RequestException as exc:
        status = getattr(exc.response, "status_code", None)
        hint = (" (it refused the server's credentials: set MONAI_LABEL_DATASTORE_USERNAME and "
                "MONAI_LABEL_DATASTORE_PASSWORD)" if status in (401, 403) else "")
        raise HTTPException(status_code=502, detail=f"the PACS did not answer{hint}: "
                                                    f"{exc}") from exc


def datastore_id(app: MONAILabelApp, image: str) -> str:
    """``image`` if the datastore lists it, else 404: no client string reaches a path."""
    with pacs_errors():
        listed = app.datastore().list_images()
    if image not in listed:
        raise HTTPException(status_code=404, detail=(
            f"no image '{image}' in this server's datastore; GET /datastore/ lists the ids, or "
            "upload the volume as the 'file' field"))
    return image


class TrainingJob:
    """One fine-tuning run in a worker thread: its state, result or error."""

    def __init__(self, model: str, function, *args) -> None:
        self.model, self.state, self.result, self.error = model, "running", None, ""
        self.started = time.time()
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(function, *args), daemon=True,
                         name=f"finetune-{model}").start()

    def _run(self, function, *args) -> None:
        try:
            self.result, self.state = function(*args), "done"
        except Exception as exc:  # noqa: BLE001 - reported in the job's status
            self.error, self.state = str(exc), "failed"
        finally:
            self.done.set()

    def status(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state, "result": self.result,
                "error": self.error, "seconds": round(time.time() - self.started, 1)}


def app_router(app: MONAILabelApp, queue: InferenceQueue) -> APIRouter:
    """/info/, /datastore/, /jobs/, /infer/{model} and /train/ for ``app``; denoising
    requests go through ``queue``."""
    router = APIRouter()
    training: dict[str, TrainingJob] = {}

    @router.get("/train/", summary="Admin: the fine-tuning job and each network's versions")
    def train_status() -> dict[str, Any]:
        job = training.get("job")
        return {"job": job.status() if job else None,
                "models": {name: task.stats() for name, task in app._trainers.items()}}

    @router.post("/train/{model}", summary="Admin: fine-tune a network on the datastore's scans")
    async def train(model: str, run_sync: bool = False,
                    params: dict[str, Any] | None = Body(None)) -> dict[str, Any]:
        _known(model, app._trainers, "network to fine-tune")
        task = app._trainers[model]
        settings = _checked(check_settings, params)
        job = training.get("job")
        if job is not None and job.state == "running":
            raise HTTPException(status_code=409, detail=(
                f"a fine-tuning of {job.model} is running; GET /train/ shows it"))
        job = training["job"] = TrainingJob(model, task, settings, app.datastore())
        if run_sync:
            await run_in_threadpool(job.done.wait)
            if job.state == "failed":
                raise HTTPException(status_code=500, detail=f"fine-tuning failed: {job.error}")
        return job.status()

    @router.get("/info/", summary="The app: its denoisers, their options and model cards")
    def info() -> dict[str, Any]:
        with pacs_errors():  # its datastore part asks the PACS
            return app.info()

    @router.get("/datastore/", summary="The images (ids) this server can denoise by id")
    def datastore(output: str = "stats") -> dict[str, Any]:
        store = app.datastore()
        with pacs_errors():
            return store.json() if output == "all" else store.status()

    @router.get("/datastore/{image}/dicom", summary="A datastore series' DICOM files, zipped")
    def series_dicom(image: str, background: BackgroundTasks) -> FileResponse:
        image = datastore_id(app, image)  # an id the datastore lists, never a path
        with pacs_errors():
            source = Path(app.datastore().get_image_uri(image))
        try:
            archive = zip_series(source)
        except SeriesTooLarge as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"image '{image}': {exc}") from exc
        background.add_task(shutil.rmtree, archive.parent, True)
        return FileResponse(archive, media_type="application/zip", filename="series.zip",
                            background=background)

    @router.get("/jobs/", summary="Your denoising jobs (all of them for an admin)")
    def jobs(http: Request) -> list[dict[str, Any]]:
        owner, admin = _caller(http)
        return JOBS.list(owner, admin)

    @router.get("/jobs/{job}", summary="A denoising job's state and progress")
    def job_status(http: Request, job: str) -> dict[str, Any]:
        return _job(http, job).status()

    @router.delete("/jobs/{job}", summary="Cancel a denoising job (its worker stops)")
    def cancel(http: Request, job: str) -> dict[str, Any]:
        found = _job(http, job)
        found.cancel()
        return found.status()

    @router.post("/infer/{model}", summary="Denoise an uploaded volume or a datastore image")
    async def infer(http: Request, background: BackgroundTasks, model: str, image: str = "",
                    output: str | None = None, job: str = "", session_id: str = "",
                    params: str = Form("{}"), file: UploadFile | None = File(None),
                    label: UploadFile | None = File(None)):
        _known(model, app.configs, "model")  # the served denoisers, without building /info/
        _check_request(output, session_id, label)
        checked = _checked(parse_params, params)
        if file is None and not image:
            raise HTTPException(status_code=422, detail=(
                "nothing to denoise: upload the volume as the 'file' form field, or name a "
                "datastore image with ?image=ID"))
        with queue.admission():
            try:
                work = JOBS.start(_caller(http)[0], model, job)
            except JobError as exc:
                raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
            folder = Path(tempfile.mkdtemp(prefix="ldct-upload-"))
            upload = folder / f"upload{upload_suffix(file.filename if file else '')}"
            try:
                request: dict[str, Any] = {"model": model, "job": work.key,
                                           **checked.as_dict()}
                if file is not None:
                    request["image"] = str(await run_in_threadpool(_save, file, upload))
                    request["image_id"], request["upload_name"] = "", _shown(file.filename)
                else:
                    request["image_id"] = await run_in_threadpool(datastore_id, app, image)
                    with pacs_errors():
                        request["image"] = await run_in_threadpool(
                            app.datastore().get_image_uri, request["image_id"])
                result = await _while_connected(http, work, queue.run(app.infer, request))
            except BaseException as exc:
                shutil.rmtree(folder, ignore_errors=True)
                JOBS.finish(work, "cancelled" if work.stop_requested() else "failed")
                if isinstance(exc, HTTPException) and isinstance(exc.detail, str):
                    shown = _shown(file.filename) if file else "the upload"
                    exc.detail = exc.detail.replace(str(upload), shown).replace(str(folder),
                                                                                "(upload)")
                raise
        JOBS.finish(work, "done")
        background.add_task(shutil.rmtree, folder, True)
        try:
            response = send_response(app.datastore(), result, output, background)
        except BaseException:  # its background clean-up never runs: clean up here
            shutil.rmtree(folder, ignore_errors=True)
            remove_file(result.get("file"))
            raise
        check = result["params"].get("ct_check")
        if check is not None and hasattr(response, "headers"):  # the result file alone, too
            response.headers[CT_CHECK_HEADER] = json.dumps(
                {k: check[k] for k in ("passed", "worst_shift_hu", "threshold_hu", "message")})
        noise = result["params"].get("noise")
        if noise is not None and hasattr(response, "headers"):  # the strength it chose, too
            response.headers[NOISE_HEADER] = json.dumps(noise)
        return response

    return router


def _check_request(output: str | None, session_id: str, label: UploadFile | None) -> None:
    """422 for what MONAI Label's infer takes but a denoiser cannot give or use, saying why."""
    if output in REFUSED_OUTPUTS:
        raise HTTPException(status_code=422, detail=f"output={output} is refused: "
                                                    f"{REFUSED_OUTPUTS[output]}")
    if output is not None and output not in OUTPUTS:
        raise HTTPException(status_code=422, detail=(
            f"output={output} is not an answer this server gives; ask one of "
            f"{', '.join(OUTPUTS)} (none: all, the result file and its params in one "
            "multipart answer)"))
    if session_id:
        raise HTTPException(status_code=422, detail=(
            "this server keeps no sessions: upload the volume as the 'file' form field or name "
            "a datastore image with ?image=ID"))
    if label is not None:
        raise HTTPException(status_code=422, detail=(
            "a denoiser takes no label: send the CT volume alone (the 'file' field or "
            "?image=ID)"))


def _known(name: str, names: Iterable[str], what: str) -> None:
    """404 for a name the server does not serve, listing those it does."""
    if name not in names:
        raise HTTPException(status_code=404, detail=(
            f"no {what} '{name}' on this server; it has {', '.join(sorted(names)) or 'none'}"))


def _checked(check: Callable[[Any], Any], raw: Any) -> Any:
    """``check(raw)``, its ValueError answered 422 with what was wrong."""
    try:
        return check(raw)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


def _caller(http: Request) -> tuple[str, bool]:
    """(the caller's token name, whether it is an admin) as the access guard found them."""
    identity = caller(http.scope)
    return (identity.name, identity.role == "admin") if identity else ("", False)


def _job(http: Request, job: str) -> Job:
    owner, admin = _caller(http)
    try:
        return JOBS.get(job, owner, admin)
    except JobError as exc:
        raise HTTPException(status_code=exc.status, detail=str(exc)) from exc


async def _while_connected(http: Request, job: Job, work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client goes away meanwhile (Slicer's Cancel closes the
    connection), cancel its job so that the worker stops too."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_S)
        if done:
            return task.result()
        if job.state == "cancelled":  # cancelled while queued: it never reaches the device
            task.cancel()
            raise HTTPException(status_code=409, detail="the job was cancelled while queued")
        if not job.stop_requested() and await http.is_disconnected():
            job.cancel()


def _shown(filename: str | None) -> str:
    """The client's file name as messages show it: its last part, short."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name[:64] or "the upload"


def _save(upload: UploadFile, path: Path) -> Path:
    """Store the upload and check its header (`ldct.server.uploads`): the file to read."""
    with open(path, "wb") as sink:
        shutil.copyfileobj(upload.file, sink)
    if path.stat().st_size == 0:
        raise HTTPException(status_code=422, detail=(
            f"the file {_shown(upload.filename)!r} is empty: nothing was uploaded; send the CT "
            "volume (NRRD, NIfTI, MHA, a DICOM file or a zipped DICOM series)"))
    try:
        return check_upload(path, _shown(upload.filename))
    except CTInputError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
