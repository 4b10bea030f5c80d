"""Helpers for the derived-DICOM tests: a scanner-like source series (valid for the DICOM
standard's validator) and that validator, `dciodvfy` (dicom3tools), run on a file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOURCE_DESCRIPTION = "Abdomen 2.5 B30f"


def scanner_series(folder: Path, hu: np.ndarray, spacing=(0.7, 0.7, 2.5)) -> list[Path]:
    """``hu`` as a CT series the way a scanner writes one: unsigned 12-bit stored values with
    intercept -1024, every Type 1 and 2 attribute of the CT Image IOD; files in reverse
    order of position (so nothing relies on file order)."""
    study, frame, series = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, plane in enumerate(hu):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
        ds.PatientName, ds.PatientID = "Doe^Jane", "P-17"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study, "20260101", "101010"
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", "A-1"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", series, 3
        ds.SeriesDescription, ds.PatientPosition = SOURCE_DESCRIPTION, "HFS"
        ds.BodyPartExamined = "ABDOMEN"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.Manufacturer, ds.ManufacturerModelName = "ACME", "CT-9000"
        ds.InstanceNumber, ds.AcquisitionNumber, ds.KVP = k + 1, 1, "120"
        ds.ContentDate, ds.ContentTime = "20260101", "101010"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, -30.0, 100.0 + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.add_new(0x00090010, "LO", "ACME 1.1")  # a private block, as scanners add
        ds.add_new(0x00091010, "LO", "vendor data")
        ds.PixelData = (np.asarray(plane) + 1024).astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        path = folder / f"src{len(hu) - k:03d}.dcm"
        pydicom.dcmwrite(path, ds, write_like_original=False)
        files.append(path)
    return files


def dciodvfy_errors(path: Path) -> list[str]:
    """The errors the DICOM standard's IOD validator finds in one file (warnings aside)."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    run = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
