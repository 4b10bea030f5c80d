"""Store a denoised volume back in a PACS, next to its original, as a derived DICOM series.

The series is written by :func:`ldct.io.write_dicom_series` (`ldct.derived`: each slice keeps
its source slice's patient, study and frame of reference and points at it; new series and
instance UIDs, DERIVED\\SECONDARY, model, version and strength) and sent with STOW-RS, so a
radiologist finds it in the same study as the original.
"""

from __future__ import annotations

import re
import tempfile
from urllib.parse import urlsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from ldct.derived import denoising
from ldct.io import CTVolume, write_dicom_series

# a DICOM UID (PS3.5 9.1): numbers joined by dots, at most 64 characters. Checked before a UID
# goes into a query or a WADO-RS path, where a PACS may match wildcards or lists, or '/' and
# '..' would reach another resource.
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_UID = 64


class PacsError(RuntimeError):
    """The PACS refused or could not be reached; the message says which and what to check."""


def is_uid(text: str) -> bool:
    return len(text) <= MAX_UID and UID.fullmatch(text) is not None


def is_dicomweb_url(text: str) -> bool:
    """An http(s) URL with a host: what a DICOMweb service is (never a file or another
    scheme)."""
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def store_derived_series(client: DICOMwebClient, source: CTVolume, result: CTVolume,
                         model: str, strength: float, version: str = "") -> str:
    """STOW-RS ``result`` as a new series in ``source``'s study; returns its SeriesInstanceUID."""
    if source.dicom is None:
        raise PacsError("the source volume was not read from DICOM, so there is no study to "
                        "store the result in; write it to a file instead.")
    if not source.same_geometry(result, atol=1e-6):
        raise PacsError("the result does not cover the source's voxels; refusing to store it.")
    made_by = denoising(str(source.dicom.get("SeriesDescription", "CT")), model, version,
                        strength)
    with tempfile.TemporaryDirectory(prefix="ldct-stow-") as folder:
        files = write_dicom_series(source.with_hu(result.hu), folder, made_by=made_by)
        datasets = [pydicom.dcmread(path) for path in files]
        try:
            client.store_instances(datasets)
        except requests.HTTPError as exc:
            raise PacsError(f"the PACS refused the derived series (HTTP "
                            f"{exc.response.status_code}): {exc.response.text[:300]}") from exc
        except requests.ConnectionError as exc:
            raise PacsError(f"the PACS at {client.base_url} cannot be reached: {exc}") from exc
    return str(datasets[0].SeriesInstanceUID)

