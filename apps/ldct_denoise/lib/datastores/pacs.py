"""The PACS datastore: CT series from a DICOMweb server, and results stored back beside them.

MONAI Label's DICOMweb datastore, with two changes for an image-to-image app: series are
handed to the infer task as the downloaded DICOM folder (read by `ldct.io`, integer HU and
geometry exact, no NIfTI round trip) and the DICOM-SEG tools are never downloaded (we write
images, not segmentations, and the server may be offline).
"""

from __future__ import annotations

from dicomweb_client.session_utils import create_session_from_user_pass
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from pydicom import Dataset

from ldct.io import CTVolume
from ldct.pacs import store_derived_series

SERIES_FIELDS = ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "StudyDate",
                 "SeriesDescription", "Modality")


class PacsDatastore(DICOMWebDatastore):
    """CT series of a DICOMweb server (Orthanc, dcm4chee, ...), cached as DICOM folders."""

    def __init__(self, url: str) -> None:
        user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
        password = (settings.MONAI_LABEL_DATASTORE_PASSWORD
                    or settings.MONAI_LABEL_DICOMWEB_PASSWORD)
        session = create_session_from_user_pass(user, password) if user and password else None
        client = DICOMwebClientX(url=url, session=session,
                                 qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        cache = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH
                 or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH).strip()
        super().__init__(client=client, search_filter=settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
                         cache_path=cache or None, convert_to_nifti=False)

    def json(self) -> dict:
        """Every CT series of the PACS (the stock store lists only what it has cached)."""
        objects = {}
        for found in self._client.search_for_series(search_filters=self._search_filter):
            ds = Dataset.from_json(found)
            info = {key: str(ds.get(key, "")) for key in SERIES_FIELDS}
            objects[info["SeriesInstanceUID"]] = {"image": {"info": info}, "labels": {}}
        return {"name": self.name(), "objects": objects}

    def write_back(self, source: CTVolume, result: CTVolume, model: str, strength: float,
                   version: str = "") -> str:
        """Store ``result`` as a new series in the study of ``source`` (a series of this PACS
        as the infer decoded it, with its slice headers: nothing is read again here)."""
        series_uid = store_derived_series(self._client, source, result, model, strength,
                                          version)
        self.list_images.cache_clear()  # the new series is listed at once
        return series_uid
