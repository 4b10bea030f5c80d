"""A datastore image's DICOM files as one zip, for a client that loads the series itself
(the Slicer panel's worklist).

The source is what the datastore resolved for an id it lists (a cached PACS series folder or
a local file), never a client's path. Only DICOM files (the ``DICM`` marker) of that folder
are sent, flat, under names of their index; the size is summed before a byte is written.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from pydicom.misc import is_dicom

MAX_SERIES_BYTES = 2 * 1024**3  # a 1000-slice 512x512 CT is about 0.5 GiB


class SeriesTooLarge(ValueError):
    """The series is larger than the server sends in one answer."""


def dicom_files(source: Path) -> list[Path]:
    """The DICOM files of ``source`` (a file, or a folder's regular files, not links)."""
    candidates = [source] if source.is_file() else sorted(
        p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    return [p for p in candidates if is_dicom(str(p))]


def zip_series(source: Path, limit: int = MAX_SERIES_BYTES) -> Path:
    """``source``'s DICOM files zipped in a new temp folder (the caller removes
    ``result.parent``). ValueError when there is none, `SeriesTooLarge` above ``limit``
    bytes; nothing is left behind either way."""
    files = dicom_files(source)
    if not files:
        raise ValueError("this image is not stored as DICOM files; only DICOM series (a PACS "
                         "datastore's, or DICOM files in a local datastore) can be downloaded")
    size = sum(p.stat().st_size for p in files)
    if size > limit:
        raise SeriesTooLarge(f"the series has {size / 1024**2:.0f} MiB of DICOM files, more "
                             f"than the {limit / 1024**2:.0f} MiB the server sends at once; "
                             "load it from the PACS directly")
    folder = Path(tempfile.mkdtemp(prefix="ldct-series-"))
    try:
        with zipfile.ZipFile(folder / "series.zip", "w", zipfile.ZIP_STORED) as archive:
            for index, path in enumerate(files):
                archive.write(path, f"{index:05d}.dcm")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder / "series.zip"
