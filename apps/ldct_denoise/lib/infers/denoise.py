"""The one infer task every denoiser shares: a thin shell over `ldct.infer.denoise`.

Reads the request's image with `ldct.io` (NRRD, NIfTI, a zipped DICOM series or a DICOM
folder), denoises it in HU, measures the CT-number shift of the result (`ldct.ct_guard`, in the
response as ``ct_check``), and writes the result with exactly the input geometry in the format,
voxel type and compression MONAI Label's ``result_extension``, ``result_dtype`` and
``result_compress`` ask (`ldct.infer_params`) - our own writer, much faster than the stock one.
``target_noise`` (HU, or a name of the server's noise levels resolved for the scan's kernel)
picks the strength; the response then says the measured input noise, strength and result noise.
``write_back: true`` stores the result in the PACS (the app's ``store``) from the volumes in
memory: the source is decoded once, in the decoding child, with its slice headers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from ldct import registry
from ldct.ct_guard import check_ct_numbers
from ldct.infer import DenoiseCancelled, denoise, denoise_to_noise
from ldct.infer_params import PARAMS, DenoiseParams, json_schema, parse_params, task_config
from ldct.io import CTInputError, CTVolume, write_volume
from ldct.jobs import JOBS, Job
from ldct.noise_level import LEVELS_ENV, NoiseLevels, scan_kernel
from ldct.pacs import PacsError
from ldct.server.decode import DecodeCancelled, read_in_child

# stores (source, result, model, strength, version) as a derived series; returns its UID
WriteBack = Callable[[CTVolume, CTVolume, str, float, str], str]


class DenoiseInfer(InferTask):
    """Denoise a CT volume with one registered model (`InferType.OTHERS`)."""

    def __init__(self, model: str, store: WriteBack | None = None) -> None:
        info = registry.get(model)
        super().__init__(type=InferType.OTHERS, labels=None, dimension=3,
                         description=f"{info.title} - {info.paper}, {info.supervision}",
                         config=task_config(info.default_strength))
        self.model = model
        self.store = store  # the PACS's write-back; None: the datastore is not a PACS
        self.levels = NoiseLevels.load(os.environ.get(LEVELS_ENV) or None)  # `serve --noise-levels`

    def info(self) -> dict[str, Any]:
        details = super().info()
        details["ldct"] = registry.get(self.model).summary()  # method, paper, card
        # every parameter, ours and MONAI Label's
        details["params"] = json_schema(registry.get(self.model).default_strength)
        details["ldct"]["noise_levels"] = self.levels.levels  # target_noise names, HU per kernel
        return details

    def is_valid(self) -> bool:
        return registry.get(self.model).available()

    def _write_back(self, params: DenoiseParams, job: Job | None, volume: CTVolume,
                    result: CTVolume, strength: float, version: str) -> dict[str, str]:
        """The result stored in the PACS as a derived series when asked (and not cancelled)."""
        if not params.write_back:
            return {}
        if job is not None and job.stop_requested():
            raise HTTPException(status_code=409, detail="the job was cancelled before its "
                                                        "result was stored in the PACS")
        try:
            return {"written_back_series": self.store(volume, result, self.model, strength,
                                                      version or "baseline")}
        except PacsError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``request`` holds the image's file and the parameters the route checked
        (`ldct.infer_params`) and its job's id (progress and cancel, `ldct.jobs`)."""
        params = parse_params({p.name: request[p.name] for p in PARAMS if p.name in request})
        start = time.perf_counter()
        info = registry.get(self.model)
        weights = info.weights if info.kind == "network" else None  # fixed for this request
        version = "" if weights is None else info.version_of(weights)
        job = JOBS.find(request.get("job", ""))
        if params.write_back and (self.store is None or not request.get("image_id")):
            raise HTTPException(status_code=422, detail=(
                "write_back needs a series from a PACS: start the server with "
                "--studies http://HOST:PORT/dicom-web and send a datastore image id."))
        try:
            if job is not None and not job.claim():
                raise DenoiseCancelled("cancelled before it started")
            volume = read_in_child(request["image"], request.get("upload_name")
                                   or request.get("image_id") or "the image",
                                   stop=job.stop_requested if job else None,
                                   slice_headers=params.write_back)
            model_start = time.perf_counter()
            options = {"device": params.device, "weights": weights, "ensemble": params.ensemble,
                       "stop": job.stop_requested if job else None,
                       "batch_done": job.progress if job else None}
            if params.target_noise is None:
                strength = info.strength_or_default(params.strength)
                result = denoise(volume, self.model, strength=strength, **options)
                noise = {}
            else:
                target = params.target_noise if not isinstance(params.target_noise, str) else \
                    self.levels.resolve(params.target_noise, scan_kernel(volume.dicom))
                result, match = denoise_to_noise(volume, self.model, target, **options)
                strength, noise = match.strength, {"noise": {**match.as_dict(),
                                                             "level": params.target_noise}}
        except (DenoiseCancelled, DecodeCancelled) as exc:
            raise HTTPException(status_code=409, detail=f"the job was cancelled ({exc})") from exc
        except (CTInputError, ValueError) as exc:  # the client gets the reason, not a 500
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        model_s = time.perf_counter() - model_start
        ct_check = check_ct_numbers(volume.hu, result.hu).as_dict()
        handle, out = tempfile.mkstemp(prefix="ldct-result-", suffix=params.extension)
        os.close(handle)
        try:
            write_volume(result, out, dtype=params.written_dtype, compress=params.result_compress)
            # the PACS last: a result that cannot be answered, or a job cancelled meanwhile,
            # stores nothing there (a client's retry would store a second derived series)
            written = self._write_back(params, job, volume, result, strength, version)
        except BaseException:
            os.unlink(out)
            raise
        return out, {"model": self.model, "version": version, "strength": strength, **noise,
                     "ensemble": params.ensemble, "device": params.device, **written,
                     "result_extension": params.extension,
                     "result_dtype": params.written_dtype,
                     "result_compress": params.result_compress, "notes": list(params.notes),
                     "shape": list(volume.hu.shape),
                     "job": job.id if job else "", "ct_check": ct_check,
                     "model_seconds": round(model_s, 3),
                     "total_seconds": round(time.perf_counter() - start, 3)}
