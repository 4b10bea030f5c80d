"""The panel's Worklist section: the server's datastore (local or PACS) as a list, and one
action that loads a chosen series into the scene as DICOM and denoises it.

No Qt and no ``slicer`` import (tested with pytest). Listing and downloading run on the
worker thread (:class:`BackgroundCall`), polled like every other server call; reading the
DICOM files runs there too (``logic.read_series``); only the node is made on the GUI thread
(``logic.add_series``). Denoising is the Denoise section's own job, with the server's
recommended model.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .client import DenoiseClient
from .controller import SETTLED, Alert, DenoiseController, State, _Worker
from .errors import ServerError
from .job import BackgroundCall

MAX_UNPACKED_BYTES = 2 * 1024**3  # the server sends at most this much (ldct.series_zip)
MEMBER = re.compile(r"[0-9A-Za-z_.-]{1,64}")  # a file name, no folder (the server's: 00000.dcm)


@dataclass(frozen=True)
class WorklistRow:
    """One datastore image as the list shows it."""

    image: str  # the datastore id (a PACS series: its SeriesInstanceUID)
    patient: str
    study_date: str  # YYYY-MM-DD when the datastore gives a DICOM date
    description: str


def worklist_rows(objects: dict[str, Any]) -> list[WorklistRow]:
    """The datastore listing (``GET /datastore/?output=all``'s objects) as rows, by patient
    then newest study first; a local datastore's images without DICOM details show their id."""
    rows = []
    for image, entry in objects.items():
        info = (entry.get("image") or {}).get("info") or {} if isinstance(entry, dict) else {}
        date = str(info.get("StudyDate", ""))
        if re.fullmatch(r"\d{8}", date):
            date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        rows.append(WorklistRow(str(image), str(info.get("PatientID", "")), date,
                                str(info.get("SeriesDescription", "")) or str(image)))
    rows.sort(key=lambda row: row.study_date, reverse=True)
    return sorted(rows, key=lambda row: row.patient)


def unpack_series(archive: Path, folder: Path, limit: int = MAX_UNPACKED_BYTES) -> list[Path]:
    """The files of the server's series zip, written flat into ``folder``: a member name with
    a folder or odd characters, or more than ``limit`` bytes in all, is refused before a byte
    is written."""
    with zipfile.ZipFile(archive) as source:
        members = source.infolist()
        bad = [m.filename for m in members if not MEMBER.fullmatch(m.filename)]
        if bad or not members:
            raise ServerError(f"The server's series archive has unexpected entries "
                              f"({', '.join(bad[:3]) or 'none'}); nothing was loaded.")
        if sum(m.file_size for m in members) > limit:
            raise ServerError(f"The series is larger than {limit / 1024**2:.0f} MiB; load it "
                              "from the PACS with Slicer's DICOM module.")
        files = []
        for member in members:
            with source.open(member) as data, open(folder / member.filename, "wb") as sink:
                shutil.copyfileobj(data, sink)
            files.append(folder / member.filename)
    return files


class WorklistController(_Worker):
    """Refresh (list the server's datastore) and Load and denoise (a chosen row) for the
    Denoise section ``panel``, whose server, token and models it uses.

    ``logic``: ``read_series(files)`` (worker thread) and ``add_series(series)`` (the node,
    under its patient and study). ``on_dicom_import(folder)``: the downloaded files, for the
    widget to add to Slicer's DICOM database (it removes the folder).
    """

    def __init__(self, panel: DenoiseController, logic: Any, alert: Alert,
                 temp_root: Optional[str] = None,
                 on_dicom_import: Optional[Any] = None) -> None:
        super().__init__(alert)
        self.panel, self.logic, self.temp_root = panel, logic, temp_root
        self.on_dicom_import = on_dicom_import
        self.rows: list[WorklistRow] = []
        self.status = "Connect to a server, then Refresh."

    def enabled(self) -> frozenset:
        """``list`` (Refresh list) and ``open`` (Load and denoise) when they may be clicked now."""
        if not self.panel.url or self.working:
            return frozenset()
        on = {"list"}
        if self.rows and self.panel.state in SETTLED and self.panel.models:
            on.add("open")
        return frozenset(on)

    def refresh(self) -> None:
        """List the server's datastore on the worker; the list keeps its rows meanwhile."""
        if "list" not in self.enabled():
            return
        client = DenoiseClient(self.panel.url, token=self.panel.token)
        self.status = f"Listing the images of {self.panel.url}..."
        self._start(BackgroundCall(lambda: worklist_rows(client.datastore())), self._listed)

    def _listed(self, call: BackgroundCall) -> None:
        if call.error is not None:
            self.status = f"Could not list the server's images: {call.error}"
            return
        self.rows = call.result
        self.status = (f"{len(self.rows)} images on {self.panel.url}." if self.rows else
                       f"{self.panel.url} has no images in its datastore.")

    def open(self, image: str) -> None:
        """Download ``image``'s DICOM files and read them (worker), then load the series under
        its patient and study and denoise it with the recommended model (comparison shown)."""
        row = next((r for r in self.rows if r.image == image), None)
        if "open" not in self.enabled() or row is None:
            return
        folder = Path(tempfile.mkdtemp(prefix="ldct-worklist-", dir=self.temp_root))
        client = DenoiseClient(self.panel.url, token=self.panel.token)
        self.status = f"Loading '{row.description}' ({row.patient or 'no patient ID'})..."
        call = BackgroundCall(_download_and_read, client, image, folder, self.logic)
        self._start(call, lambda done: self._loaded(done, row, folder))

    def _loaded(self, call: BackgroundCall, row: WorklistRow, folder: Path) -> None:
        if call.error is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self.status = f"Could not load '{row.description}': {call.error}"
            self.alert("error", self.status)
            return
        try:
            node = self.logic.add_series(call.result)
        finally:
            if self.on_dicom_import is not None:
                self.on_dicom_import(folder)
            else:
                shutil.rmtree(folder, ignore_errors=True)
        recommended = [m.name for m in self.panel.models if m.recommended]
        if recommended:
            self.panel.select_model(recommended[0])
        self.panel.select_input(node)
        self.panel.denoise(from_server=True)
        if self.panel.input is node and self.panel.state == State.DENOISING:
            self.status = f"Loaded '{node.GetName()}'; denoising with {self.panel.model}."
        else:  # another job started meanwhile: the series stays loaded, nothing else runs
            self.status = (f"Loaded '{node.GetName()}' under its patient and study; not "
                           "denoised (the Denoise section was busy): select it and press "
                           "Denoise.")

    def _crashed(self, exc: Exception) -> None:
        self.status = f"Unexpected error ({exc!r}); the worklist can be used again."
        self.alert("error", self.status)


def _download_and_read(client: DenoiseClient, image: str, folder: Path, logic: Any) -> Any:
    archive = client.download_series(image, folder / "series.zip")
    try:
        files = unpack_series(archive, folder)
    finally:
        archive.unlink(missing_ok=True)
    return logic.read_series(files)
