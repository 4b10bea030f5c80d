"""The one infer task every denoiser shares: a thin shell over `ldct.infer.denoise`.

Reads the request's image with `ldct.io` (NRRD, NIfTI, a zipped DICOM series or a DICOM
folder), denoises it in HU, measures the CT-number shift of the result (`ldct.ct_guard`, in the
response as ``ct_check``), and writes the result as NRRD with exactly the input geometry, in
float32 or int16 as `result_dtype` asks - our own writer, much faster than the stock one.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from ldct import registry
from ldct.ct_guard import check_ct_numbers
from ldct.infer import DEFAULT_ENSEMBLE, DenoiseCancelled, denoise
from ldct.infer_params import DEVICES, RESULT_DTYPES, DenoiseParams, parse_params
from ldct.io import CTInputError, write_volume
from ldct.jobs import JOBS
from ldct.server.decode import DecodeCancelled, read_in_child


class DenoiseInfer(InferTask):
    """Denoise a CT volume with one registered model (`InferType.OTHERS`)."""

    def __init__(self, model: str) -> None:
        info = registry.get(model)
        super().__init__(type=InferType.OTHERS, labels=None, dimension=3,
                         description=f"{info.title} - {info.paper}, {info.supervision}",
                         config={"strength": 1.0, "ensemble": DEFAULT_ENSEMBLE,
                                 "device": list(DEVICES),
                                 "result_dtype": list(RESULT_DTYPES), "write_back": False})
        self.model = model

    def info(self) -> dict[str, Any]:
        details = super().info()
        details["ldct"] = registry.get(self.model).summary()  # method, paper, card
        return details

    def is_valid(self) -> bool:
        return registry.get(self.model).available()

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``request`` holds the image's file and the parameters the route checked
        (`ldct.infer_params`) and its job's id (progress and cancel, `ldct.jobs`)."""
        params = parse_params({k: request[k] for k in DenoiseParams.__dataclass_fields__
                               if k in request})
        start = time.perf_counter()
        info = registry.get(self.model)
        weights = info.weights if info.kind == "network" else None  # fixed for this request
        version = "" if weights is None else info.version_of(weights)
        job = JOBS.find(request.get("job", ""))
        try:
            if job is not None and not job.claim():
                raise DenoiseCancelled("cancelled before it started")
            volume = read_in_child(request["image"], request.get("upload_name")
                                   or request.get("image_id") or "the image",
                                   stop=job.stop_requested if job else None)
            model_start = time.perf_counter()
            result = denoise(volume, self.model, strength=params.strength, device=params.device,
                             weights=weights, ensemble=params.ensemble,
                             stop=job.stop_requested if job else None,
                             batch_done=job.progress if job else None)
        except (DenoiseCancelled, DecodeCancelled) as exc:
            raise HTTPException(status_code=409, detail=f"the job was cancelled ({exc})") from exc
        except (CTInputError, ValueError) as exc:  # the client gets the reason, not a 500
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        model_s = time.perf_counter() - model_start
        ct_check = check_ct_numbers(volume.hu, result.hu).as_dict()
        out = tempfile.NamedTemporaryFile(suffix=".nrrd", delete=False).name
        write_volume(result, out, dtype=params.result_dtype)
        return out, {"model": self.model, "version": version, "strength": params.strength,
                     "ensemble": params.ensemble, "device": params.device,
                     "result_dtype": params.result_dtype, "shape": list(volume.hu.shape),
                     "job": job.id if job else "", "ct_check": ct_check,
                     "model_seconds": round(model_s, 3),
                     "total_seconds": round(time.perf_counter() - start, 3)}
