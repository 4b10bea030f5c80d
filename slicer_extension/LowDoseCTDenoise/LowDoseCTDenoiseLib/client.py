"""Client of the ldct denoising server (MONAI Label), on the standard library only, so it runs
in Slicer's Python. Uploads are streamed in chunks with progress and cancellation."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlencode

from .connection import CHUNK, CancelToken, Progress, ServerConnection
from .errors import ModelMissing, NotMonaiLabel, ServerTimeout, ServerUnreachable


@dataclass
class ModelEntry:
    """One denoiser the server offers, with what the UI shows about it."""

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    recommended: bool = False  # the server's first choice (best on its worst kernel)
    default_strength: float = 1.0  # the strength that leaves about the normal dose's noise
    noise_levels: dict[str, Any] = field(default_factory=dict)  # name -> HU (or per kernel)

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
        quality = card.get("task_based_quality") or {}  # `ldct qa` on phantoms
        if quality.get("dose_reduction_median") is not None:
            losses = len(quality.get("detectability_losses") or [])
            lines.append(f"Phantom QA: dose-reduction estimate "
                         f"{100 * quality['dose_reduction_median']:.0f} %; " + (
                             f"LOSES low-contrast detectability in {losses} condition(s) at "
                             "dose >= 25 %" if losses else "no detectability loss at dose >= 25 %"))
        return "\n".join(lines)


CT_CHECK_HEADER = "X-CT-Number-Check"
NOISE_HEADER = "X-Noise-Level"  # a target_noise request's match, beside the result file


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def noise_of(header: Optional[str]) -> dict[str, Any]:
    """The server's noise match of a target_noise result (input and result noise, the
    strength it chose, reached); empty when it sent none or none that makes sense."""
    try:
        noise = json.loads(header or "")
    except ValueError:
        return {}
    numbers = ("target_noise", "input_noise", "result_noise")
    return noise if (isinstance(noise, dict) and _fraction(noise.get("strength"))
                     and all(isinstance(noise.get(k), (int, float)) for k in numbers)) else {}


def ct_check_of(header: Optional[str]) -> dict[str, Any]:
    """The server's CT-number check of a result (passed, worst shift, message); a server
    that sent none gets a message saying the CT numbers were not verified."""
    try:
        check = json.loads(header or "")
    except ValueError:
        check = None
    if not isinstance(check, dict) or "message" not in check:
        return {"passed": None, "message": "The server sent no CT-number check: CT numbers of "
                                           "this result are not verified."}
    return check


class DenoiseClient(ServerConnection):
    """The denoising server: its models and the denoise request (``ct_check``: the server's
    CT-number check of the last result)."""

    ct_check: dict[str, Any] = {}
    noise: dict[str, Any] = {}  # the last result's noise match (target_noise requests)

    # -- public calls -------------------------------------------------------------------
    def info(self, cancel: Optional[CancelToken] = None) -> dict[str, Any]:
        """``GET /info/``, checked to come from a MONAI Label server (retried)."""
        info = self._request_json("GET", "/info/", retry=True, cancel=cancel)
        if not isinstance(info, dict) or not isinstance(info.get("models"), dict):
            raise NotMonaiLabel(f"{self.url} answered, but not as a MONAI Label server (no model "
                                "list in /info/). Check the URL and port of the ldct server.")
        return info

    def models(self, cancel: Optional[CancelToken] = None) -> list[ModelEntry]:
        """The denoisers the server offers, with their model cards: only the /info/ entries
        the ldct app marks with its ``ldct`` summary (a segmentation model that another MONAI
        Label server offers is no denoiser and is left out)."""
        entries = []
        for name, model in self.info(cancel)["models"].items():
            details = model.get("ldct") if isinstance(model, dict) else None
            if not isinstance(details, dict):
                continue
            card = {**(details.get("card") or {}),  # a baseline has no weights: its kind
                    "version": details.get("version") or details.get("kind", ""),
                    "task_based_quality": details.get("task_based_quality") or {}}
            default = details.get("default_strength", 1.0)
            levels = details.get("noise_levels")
            entries.append(ModelEntry(name, model.get("description", name),
                                      model.get("config") or {}, card,
                                      details.get("recommended") is True,
                                      float(default) if _fraction(default) else 1.0,
                                      levels if isinstance(levels, dict) else {}))
        return entries

    def datastore(self, cancel: Optional[CancelToken] = None) -> dict[str, Any]:
        """The server's datastore listing: image id -> its entry (``image.info``: with a PACS
        behind it, patient, study date and series description of each CT series)."""
        listing = self._request_json("GET", "/datastore/?output=all", retry=True, cancel=cancel)
        objects = listing.get("objects") if isinstance(listing, dict) else None
        if not isinstance(objects, dict):
            raise NotMonaiLabel(f"{self.url}/datastore/ did not list images: is this the ldct "
                                "server?")
        return objects

    def datastore_ids(self, cancel: Optional[CancelToken] = None) -> set[str]:
        """The image ids the server denoises by id: with a PACS behind it (``ldct serve
        --studies http://.../dicom-web``), the SeriesInstanceUIDs of the PACS's CT series."""
        return set(self.datastore(cancel))

    def download_series(self, image: str, output: str | Path,
                        cancel: Optional[CancelToken] = None,
                        progress: Optional[Progress] = None) -> Path:
        """The DICOM files of the datastore image ``image``, as one zip at ``output``."""
        return self._download(f"/datastore/{quote(image, safe='')}/dicom", output, cancel,
                              progress)

    def write_back(self, model: str, image: str, params: dict[str, Any],
                   cancel: Optional[CancelToken] = None, job: str = "") -> str:
        """Denoise the datastore image ``image`` (a PACS series) with ``model`` on the server,
        which stores the result in the series' study as a derived series (its write-back);
        returns the new series' SeriesInstanceUID. A cancel closes the connection, which
        cancels the server's job (``job``: its id)."""
        query = urlencode({"image": image, "output": "json", **({"job": job} if job else {})})
        answer = self._request_json("POST", f"/infer/{quote(model)}?{query}", cancel=cancel,
                                    form={"params": json.dumps({**params, "write_back": True})})
        series = answer.get("written_back_series") if isinstance(answer, dict) else None
        if not series:
            raise NotMonaiLabel(f"{self.url} denoised '{image}' but stored nothing in its PACS: "
                                "is this the ldct server?")
        return str(series)

    def denoise(self, model: str, volume: str | Path, output: str | Path,
                params: Optional[dict[str, Any]] = None, cancel: Optional[CancelToken] = None,
                progress: Optional[Progress] = None, job: str = "") -> Path:
        """Upload ``volume``, run ``model`` and stream the result to ``output``.

        The result is written to a temporary name and renamed when complete, so a failed or
        cancelled request never leaves a partial file. ``job``: the id the server gives the
        request (so it can be followed and cancelled); a cancel closes the connection, which
        also cancels the server's job.
        """
        cancel = cancel or CancelToken()
        progress = progress or (lambda phase, fraction: None)
        if model not in {m.name for m in self.models(cancel)}:
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
        query = {"output": "image", **({"job": job} if job else {})}
        path = f"/infer/{quote(model)}?{urlencode(query)}"
        conn = self._connect(cancel)
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
            self.ct_check = ct_check_of(response.getheader(CT_CHECK_HEADER))
            self.noise = noise_of(response.getheader(NOISE_HEADER))
            self._stream_response(response, output, cancel, progress)
            progress("done", 1.0)
            return output
        except (socket.timeout, TimeoutError) as exc:
            cancel.check()
            raise ServerTimeout(f"The server at {self.url} did not answer within "
                                f"{self.read_timeout:g} s. A large volume on a CPU server can "
                                "take longer: choose Device 'cuda' if the server has a GPU, or "
                                "crop the volume to the slices you need (Crop Volume module)."
                                ) from exc
        except (OSError, http.client.HTTPException) as exc:
            cancel.check()  # a cancelled request ends with its socket shut down
            raise ServerUnreachable(f"The connection to {self.url} broke: {exc}") from exc
        finally:
            conn.close()

