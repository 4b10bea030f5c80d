"""A processed CT written as the DICOM standard says a derived image must be written.

Every derived series the project writes goes through here: ``ldct denoise -o FOLDER``, the
server's write-back to PACS (`ldct.pacs`) and the 3D Slicer module's "Send to PACS" (the
module's Lib loads this very file: it needs only numpy and pydicom, which Slicer ships). Each
slice keeps its source slice's header (patient, study, frame of reference, equipment,
position), gets new series and instance UIDs, ``ImageType DERIVED\\SECONDARY``, a
DerivationDescription and Derivation Code Sequence, a Source Image Sequence pointing at its
source instance, and a Contributing Equipment entry that names the model, its version and the
strength. Pixels are int16, rounded (never truncated), with the source's rescale.

Why Contributing Equipment and not a private block: it is a standard attribute (PS3.3
C.12.1, "Contributing Equipment Sequence", purpose 109102 "Processing Equipment") that any
DICOM toolkit, PACS and viewer reads without knowing our private creator, and that
de-identification profiles keep; private tags are dropped by many archives and anonymisers.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SOFTWARE = "ldct"
DENOISED_BY = f"Denoised by {SOFTWARE}"  # how a denoised series' DerivationDescription starts
# (code value, coding scheme, meaning), from DICOM PS3.16
SMOOTHING = ("113087", "DCM", "Smoothing")  # CID 7203 Image Derivation
SOURCE_FOR_PROCESSING = ("121322", "DCM", "Source image for image processing operation")  # 7202
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")  # CID 7005
DERIVED_SERIES_OFFSET = 1000  # a derived series' number: the source's + 1000
POSITION_TOLERANCE_MM = 0.01  # a source slice and a result slice at the same place

# What a source header says about its own pixels or its own identity, never copied: the
# derived slice gets its own (new UIDs, int16 pixels, no padding value of another encoding).
NOT_COPIED = {
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "LargestImagePixelValue",
    "SmallestImagePixelValue", "LargestPixelValueInSeries", "SmallestPixelValueInSeries",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "IconImageSequence", "DataSetTrailingPadding",
    "SOPInstanceUID", "SeriesInstanceUID", "SourceImageSequence", "DerivationCodeSequence",
    "DerivationDescription", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate",
    "SeriesTime", "ContentDate", "ContentTime", "SeriesDescription", "SeriesNumber",
    "ImageType", "NumberOfFrames",
}


@dataclass(frozen=True)
class Derivation:
    """What made a derived series, as its header says it."""

    description: str  # SeriesDescription (DICOM keeps 64 characters)
    text: str  # DerivationDescription
    model: str = ""  # the contributing equipment's model name: the network, or the tool
    version: str = ""  # its version (weights version)
    code: Optional[tuple[str, str, str]] = None  # the Derivation Code Sequence's code


def denoising(source_description: str, model: str, version: str, strength: float
              ) -> Derivation:
    """A denoised series: model, version and strength in the description (the source's
    description is shortened, never the model), the derivation and the equipment entry."""
    tail = f" denoised ({model} {version or 'unknown'}, strength {strength:g})"
    description = f"{source_description[:max(0, 64 - len(tail))]}{tail}"[-64:]
    text = (f"{DENOISED_BY} model {model} version {version or 'unknown'} at strength "
            f"{strength:g} (original + strength x (network output - original)), rounded to "
            "whole HU; not an acquired image.")
    return Derivation(description.strip(), text, model, version or "unknown", SMOOTHING)


def is_denoised(header: Dataset) -> bool:
    """Whether a DICOM header is one of our denoised results (not a source to denoise again)."""
    return str(header.get("DerivationDescription", "")).startswith(DENOISED_BY)


def _code(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def match_sources(headers: Sequence[Dataset], origin: Sequence[float], axes: np.ndarray,
                  count: int) -> list[Dataset]:
    """The source header of each result slice k, found by position: voxel (i, j, k) of the
    result lies at ``origin + axes @ (i, j, k)`` (LPS mm; ``axes``' columns are the steps
    along columns, rows and slices). Raises ValueError when a slice has no source at its place
    or its source is oriented or spaced otherwise (another series, a crop, a resampling)."""
    origin, axes = np.asarray(origin, float), np.asarray(axes, float)
    step = axes[:, 2]
    by_slice: dict[int, Dataset] = {}
    for header in headers:
        offset = np.asarray(header.ImagePositionPatient, float) - origin
        k = int(round(float(offset @ step) / float(step @ step)))
        if 0 <= k < count and np.linalg.norm(offset - k * step) <= POSITION_TOLERANCE_MM:
            by_slice[k] = header
    missing = [k for k in range(count) if k not in by_slice]
    if missing:
        raise ValueError(f"{len(missing)} of {count} slices have no source instance at their "
                         f"position (first: slice {missing[0]}); the result is not a "
                         "slice-for-slice copy of that series.")
    for header in by_slice.values():
        orientation = np.asarray(header.ImageOrientationPatient, float)
        spacing = [float(v) for v in header.PixelSpacing]  # row spacing, column spacing
        expected = np.concatenate([axes[:, 0] / spacing[1], axes[:, 1] / spacing[0]])
        if np.abs(orientation - expected).max() > 1e-4:
            raise ValueError("the result's rows and columns are not its source slices' "
                             "(another orientation or pixel spacing); it is not a "
                             "slice-for-slice copy of that series.")
    return [by_slice[k] for k in range(count)]


def derived_slice(source: Dataset, hu: np.ndarray, made_by: Derivation, series_uid: str,
                  series_number: int, now: datetime.datetime, reference: bool = True
                  ) -> Dataset:
    """One derived CT slice: ``source``'s header (private tags dropped) with ``hu`` (whole HU)
    as int16 stored values under the source's rescale. ``reference``: the source is a real
    instance that the Source Image Sequence may point at."""
    slope = float(source.get("RescaleSlope", 1) or 1)
    intercept = float(source.get("RescaleIntercept", 0) or 0)
    stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError(f"values {hu.min():g}..{hu.max():g} HU do not fit int16 with the "
                         f"source's rescale (slope {slope:g}, intercept {intercept:g}).")
    ds = Dataset()
    for element in source:
        if element.tag.group != 0x0002 and not element.tag.is_private \
                and element.keyword not in NOT_COPIED:
            ds.add(copy.deepcopy(element))
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, series_number
    ds.SeriesDescription = made_by.description[:64]
    kind = list(source.get("ImageType", []))[2:3] or ["AXIAL"]
    ds.ImageType = ["DERIVED", "SECONDARY", *kind]
    ds.DerivationDescription = made_by.text[:1024]
    if made_by.code is not None:
        ds.DerivationCodeSequence = [_code(made_by.code)]
    if reference and "SOPInstanceUID" in source:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.get("SOPClassUID", CT_IMAGE_STORAGE)
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ref.PurposeOfReferenceCodeSequence = [_code(SOURCE_FOR_PROCESSING)]
        ds.SourceImageSequence = [ref]
    equipment = Dataset()
    equipment.Manufacturer = SOFTWARE
    equipment.ManufacturerModelName = made_by.model or SOFTWARE
    equipment.SoftwareVersions = made_by.version or "unknown"
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = made_by.text[:1024]
    equipment.PurposeOfReferenceCodeSequence = [_code(PROCESSING_EQUIPMENT)]
    ds.ContributingEquipmentSequence = [*source.get("ContributingEquipmentSequence", []),
                                        equipment]
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.SeriesDate = ds.ContentDate = date
    ds.InstanceCreationTime = ds.SeriesTime = ds.ContentTime = time
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope = source.get("RescaleSlope", "1")
    ds.RescaleIntercept = source.get("RescaleIntercept", "0")
    ds.PixelData = stored.astype("<i2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return ds


def write_derived_series(hu: np.ndarray, sources: Sequence[Dataset], folder: str | Path,
                         made_by: Derivation, series_number: Optional[int] = None,
                         reference: bool = True) -> list[Path]:
    """``hu`` (slices, rows, columns; whole HU) as a derived series in the empty ``folder``,
    slice k from ``sources[k]``'s header; returns the files written. The series number is
    the source's + 1000 unless given."""
    if len(sources) != hu.shape[0]:
        raise ValueError(f"{hu.shape[0]} slices but {len(sources)} source headers")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob("*.dcm")):
        raise FileExistsError(f"{folder} already holds DICOM files; write to an empty folder.")
    if series_number is None:
        number = str(sources[0].get("SeriesNumber", "") or "0")
        series_number = DERIVED_SERIES_OFFSET + (int(number) if number.isdigit() else 0)
    series_uid, now = generate_uid(), datetime.datetime.now()
    written = []
    for k, source in enumerate(sources):
        ds = derived_slice(source, hu[k], made_by, series_uid, series_number, now, reference)
        path = folder / f"IM{k + 1:05d}.dcm"
        pydicom.dcmwrite(path, ds, write_like_original=False)
        written.append(path)
    return written
