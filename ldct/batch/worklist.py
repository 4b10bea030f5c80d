"""What a batch denoises: a worklist of series from a DICOMweb query, a folder of series, or
a CSV of datastore ids. Items carry references only (UIDs, paths): workers fetch the pixels.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ldct.batch import dicomweb
from ldct.messages import clip
from ldct.pacs import is_uid

VOLUME_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".zip", ".dcm")


@dataclass(frozen=True)
class Item:
    """One series to denoise: a PACS series (``study`` + ``series``) or a local ``path``."""

    key: str  # the ledger's name for it: the SeriesInstanceUID, or the absolute path
    name: str  # its output folder's name
    study: str = ""
    series: str = ""
    path: str = ""
    pacs: str = ""  # the DICOMweb URL a PACS series is read from ('': the job's source_pacs)


class WorklistError(ValueError):
    """The source cannot be read as a worklist; the message says why and what to give."""


def from_query(url: str, study_date: str = "", description: str = "",
               exclude: set[str] = frozenset()) -> Iterator[Item]:
    """CT series of the PACS at ``url``: StudyDate ``study_date`` (DICOM form, e.g.
    ``20260101-20260131``), SeriesDescription ``description`` (``*`` wildcards); series in
    ``exclude`` (results of earlier runs) are left out."""
    filters = {"Modality": "CT"}
    if study_date:
        filters["StudyDate"] = study_date
    wanted = described(description or "*")
    for ds in dicomweb.search_series(dicomweb.client(url), filters):
        uid = str(ds.SeriesInstanceUID)
        if uid not in exclude and wanted.fullmatch(str(ds.get("SeriesDescription", ""))):
            yield Item(key=uid, name=uid, study=str(ds.StudyInstanceUID), series=uid)


def described(pattern: str) -> re.Pattern:
    """A DICOM wildcard pattern (``*`` any run, ``?`` one character; case-sensitive) as a
    regular expression. Matched here, not by the PACS: Orthanc 1.10 does not decode
    percent-encoded query values, so a description with a space or ``*`` would match nothing."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)


def from_folder(folder: str | Path) -> Iterator[Item]:
    """Each entry of ``folder``: a sub-folder holding one DICOM series, or a volume file."""
    folder = Path(folder)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        lower = entry.name.lower()
        suffix = next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)
        if entry.is_dir() or suffix:
            name = entry.name[: -len(suffix)] if suffix else entry.name
            yield Item(key=str(entry.resolve()), name=name, path=str(entry.resolve()))


def from_csv(table: str | Path, pacs: str | None = None, datastore: str | Path | None = None
             ) -> Iterator[Item]:
    """The ``id`` column (else the first) of a CSV: series UIDs of the PACS at ``pacs`` (a
    PACS-backed server's datastore ids), or image ids of the local datastore folder
    ``datastore`` (file names without extension). Ids name items; they never become paths."""
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise WorklistError(f"{table}: no rows; give a CSV with a header line and an 'id' column")
    column = "id" if "id" in rows[0] else next(iter(rows[0]))
    ids = [row[column].strip() for row in rows if row[column] and row[column].strip()]
    if pacs:
        for number, uid in enumerate(ids, start=1):
            if not is_uid(uid):
                raise WorklistError(f"{table}: id {clip(uid)!r} (id {number}) is not a DICOM "
                                    "series UID (numbers joined by dots, at most 64 "
                                    "characters); with --pacs each id is a SeriesInstanceUID")
        client = dicomweb.client(pacs)
        for uid in ids:
            found = list(dicomweb.search_series(client, {"SeriesInstanceUID": uid}))
            if not found:
                raise WorklistError(f"{table}: series {uid} is not in the PACS at {pacs}")
            yield Item(key=uid, name=uid, study=str(found[0].StudyInstanceUID), series=uid)
        return
    if datastore is None:
        raise WorklistError("a CSV of datastore ids needs --pacs URL (series UIDs of a PACS) "
                            "or --datastore DIR (ids of a local datastore folder)")
    images = {item.name: item for item in from_folder(datastore)}
    for image_id in ids:
        if image_id not in images:
            raise WorklistError(f"{table}: id {image_id!r} is not an image of the datastore "
                                f"{datastore}")
        yield images[image_id]
