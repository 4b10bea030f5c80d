"""Every derived series the project writes says what it is, tag by tag, and passes the DICOM
standard's IOD validator (dciodvfy) when its source does: the writer itself (`ldct.derived`
through `ldct.io`) and `ldct denoise -o FOLDER`. The write-back's series is checked in
test_pacs.py, the Slicer module's in test_slicer_derived.py.

The answer keys come from DICOM PS3.16 (the codes) and PS3.3 (the attributes), and from
hand-computed values: a result 10.6 HU above the source is stored 11 HU above it (rounded;
truncation gives 10), -10.6 HU below as -11.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from derived_checks import SOURCE_DESCRIPTION, dciodvfy_errors, scanner_series

from ldct.derived import denoising
from ldct.io import read_volume, write_dicom_series, write_volume

SHAPE = (3, 64, 64)


@pytest.fixture()
def source(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1000, SHAPE)
    files = scanner_series(tmp_path / "source", hu)
    assert [e for f in files for e in dciodvfy_errors(f)] == []  # a valid source to start from
    return files, hu


def _by_position(files) -> list[pydicom.Dataset]:
    headers = [pydicom.dcmread(f) for f in files]
    return sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))


def test_a_denoised_series_says_what_it_is_tag_by_tag(tmp_path, source):
    files, hu = source
    volume = read_volume(tmp_path / "source")
    change = np.zeros(SHAPE)
    change[:, :, :32], change[:, :, 32:] = 10.6, -10.6
    written = write_dicom_series(volume.with_hu(volume.hu + change), tmp_path / "derived",
                                 made_by=denoising(SOURCE_DESCRIPTION, "vagan",
                                                   "20261207-0430", 0.6))
    originals, derived = _by_position(files), _by_position(written)
    assert len(derived) == 3
    assert len({d.SeriesInstanceUID for d in derived}) == 1
    for k, (src, out) in enumerate(zip(originals, derived)):
        assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        assert out.SOPInstanceUID != src.SOPInstanceUID
        assert out.SeriesInstanceUID != src.SeriesInstanceUID
        for same in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID",
                     "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                     "AcquisitionNumber", "KVP", "Manufacturer", "PatientPosition",
                     "RescaleIntercept", "RescaleSlope"):
            assert out.data_element(same).value == src.data_element(same).value, same
        assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert out.SeriesNumber == 1003  # the source's 3 + 1000
        assert out.SeriesDescription == ("Abdomen 2.5 B30f denoised (vagan 20261207-0430, "
                                         "strength 0.6)")
        assert out.DerivationDescription.startswith(
            "Denoised by ldct model vagan version 20261207-0430 at strength 0.6")
        code = out.DerivationCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "113087", "DCM", "Smoothing")
        ref = out.SourceImageSequence[0]
        assert len(out.SourceImageSequence) == 1
        assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (
            src.SOPClassUID, src.SOPInstanceUID)  # its own source slice, by position
        purpose = ref.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
        equipment = out.ContributingEquipmentSequence[-1]
        assert (equipment.Manufacturer, equipment.ManufacturerModelName,
                equipment.SoftwareVersions) == ("ldct", "vagan", "20261207-0430")
        purpose = equipment.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
        assert "strength 0.6" in equipment.ContributionDescription
        assert 0x00091010 not in out and 0x00090010 not in out  # the vendor's private data
        assert (out.BitsAllocated, out.BitsStored, out.PixelRepresentation) == (16, 16, 1)
        stored = out.pixel_array
        assert stored.dtype == np.int16
        expected_hu = hu[k] + np.where(np.arange(64) < 32, 11, -11)  # rounded, not truncated
        np.testing.assert_array_equal(stored - 1024, expected_hu)
        assert dciodvfy_errors(written[k]) == []


def test_ldct_denoise_writes_a_valid_derived_series(tmp_path, source, ldct_command):
    files, _ = source
    out = tmp_path / "denoised"
    subprocess.run([*ldct_command, "denoise", str(tmp_path / "source"), "--model",
                    "ldct-gauss", "-o", str(out)], check=True, capture_output=True)
    originals, derived = _by_position(files), _by_position(sorted(out.glob("*.dcm")))
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in derived] == [
        o.SOPInstanceUID for o in originals]
    assert derived[0].SeriesDescription == ("Abdomen 2.5 B30f denoised (ldct-gauss baseline, "
                                            "strength 1)")
    assert derived[0].FrameOfReferenceUID == originals[0].FrameOfReferenceUID
    assert [e for f in sorted(out.glob("*.dcm")) for e in dciodvfy_errors(f)] == []


def test_a_series_from_a_volume_file_is_valid_and_claims_no_source(tmp_path, phantom):
    """No DICOM source (an NRRD): placeholders and a new study, nothing referenced."""
    nrrd = read_volume(write_volume(phantom.volume, tmp_path / "v.nrrd"))
    written = write_dicom_series(nrrd, tmp_path / "s",
                                 made_by=denoising("CT", "pan", "shipped", 1.0))
    header = pydicom.dcmread(written[0])
    assert "SourceImageSequence" not in header
    assert list(header.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert [e for f in written for e in dciodvfy_errors(f)] == []


def test_a_cropped_result_points_at_its_own_slices_and_a_resampled_one_at_none(tmp_path,
                                                                               source):
    """Slices 2 and 3 alone still are source slices 2 and 3; a result resampled in plane is
    no slice of the source, and must not claim one."""
    files, _ = source
    volume = read_volume(tmp_path / "source")
    cropped = volume.with_hu(volume.hu)
    cropped.hu = volume.hu[1:]
    cropped.origin = tuple(np.asarray(volume.origin) + volume.direction[:, 2] * volume.spacing[2])
    written = _by_position(write_dicom_series(cropped, tmp_path / "crop"))
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in written] == [
        o.SOPInstanceUID for o in _by_position(files)[1:]]
    resampled = volume.with_hu(volume.hu)
    resampled.hu = volume.hu[:, ::2, ::2]
    resampled.spacing = (1.4, 1.4, volume.spacing[2])
    written = write_dicom_series(resampled, tmp_path / "resampled")
    assert all("SourceImageSequence" not in pydicom.dcmread(f) for f in written)
    assert pydicom.dcmread(written[0]).FrameOfReferenceUID == volume.dicom.FrameOfReferenceUID
