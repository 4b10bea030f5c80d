"""The PACS as the batch sees it: a DICOMweb client that retries, series fetched to a folder,
and the derived series a model already stored for a source (so nothing is stored twice).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ldct.pacs import PacsError

# the server's PACS credentials, so that a site configures them once
USER_ENV, PASSWORD_ENV = "MONAI_LABEL_DATASTORE_USERNAME", "MONAI_LABEL_DATASTORE_PASSWORD"
# a PACS that is busy or restarting: 5 tries, 0.5 s doubling (0.5 + 1 + 2 + 4 s between them)
RETRY = Retry(total=5, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
              allowed_methods=None, raise_on_status=False, respect_retry_after_header=True)
PAGE = 500  # QIDO results per request


def client(url: str, retry: Retry = RETRY, credentials: bool = True) -> DICOMwebClient:
    """A DICOMweb client whose requests are retried with exponential backoff; logs in with
    $MONAI_LABEL_DATASTORE_USERNAME/PASSWORD when they are set and ``credentials`` is True
    (the operator named the URL; a URL from a file someone else wrote gets none)."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if credentials and user and password:
        session.auth = (user, password)
    return DICOMwebClient(url, session=session)


def _pacs_call(what: str, url: str, call, *args, **kwargs):
    """Run a DICOMweb call, turning transport errors into a PacsError that says what failed."""
    try:
        return call(*args, **kwargs)
    except requests.HTTPError as exc:
        raise PacsError(f"the PACS refused to {what} (HTTP {exc.response.status_code}): "
                        f"{exc.response.text[:300]}") from exc
    except (requests.ConnectionError, requests.exceptions.RetryError) as exc:
        raise PacsError(f"the PACS at {url} cannot be reached to {what}: {exc}") from exc


def search_series(pacs: DICOMwebClient, filters: dict[str, str]) -> Iterator[pydicom.Dataset]:
    """Every series matching the QIDO ``filters``, page by page."""
    offset = 0
    while True:
        page = _pacs_call("search series", pacs.base_url, pacs.search_for_series,
                          search_filters=filters, offset=offset, limit=PAGE,
                          fields=["StudyInstanceUID", "SeriesDescription", "Modality"])
        yield from (pydicom.Dataset.from_json(found) for found in page)
        if len(page) < PAGE:
            return
        offset += len(page)


def fetch_series(pacs: DICOMwebClient, study: str, series: str, folder: Path) -> None:
    """Save the series' instances (WADO-RS) as files in ``folder``."""
    instances = _pacs_call(f"send series {series}", pacs.base_url, pacs.retrieve_series,
                           study, series)
    if not instances:
        raise PacsError(f"the PACS holds no instances of series {series}")
    for k, ds in enumerate(instances):
        ds.save_as(folder / f"{k:05d}.dcm", write_like_original=False)


def find_derived(pacs: DICOMwebClient, study: str, description: str, sources: set[str],
                 slices: int, exclude: set[str]) -> str | None:
    """The series of ``study`` described ``description`` whose instances were made from the
    ``sources`` instances, unless in ``exclude``; None when there is none. A partial one (fewer
    than ``slices`` instances: a write cut off) raises, since storing again would double it."""
    found = _pacs_call("search series", pacs.base_url, pacs.search_for_series, study,
                       fields=["SeriesDescription"])
    for candidate in map(pydicom.Dataset.from_json, found):
        uid = str(candidate.SeriesInstanceUID)
        if uid in exclude or str(candidate.get("SeriesDescription", "")) != description:
            continue
        metadata = _pacs_call(f"describe series {uid}", pacs.base_url,
                              pacs.retrieve_series_metadata, study, uid)
        headers = [pydicom.Dataset.from_json(m) for m in metadata]
        referenced = {str(ref.ReferencedSOPInstanceUID) for ds in headers
                      for ref in ds.get("SourceImageSequence", [])}
        if not referenced & sources:
            continue
        if len(headers) != slices:
            raise PacsError(f"derived series {uid} in the PACS has {len(headers)} of {slices} "
                            "instances (a write was cut off); delete it in the PACS and run "
                            "again.")
        return uid
    return None
