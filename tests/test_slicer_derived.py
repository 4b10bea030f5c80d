"""Send to PACS from Slicer, the path that does not go through the server: the Logic writes
the result shown as a derived DICOM series (the shared `ldct.derived` writer), read back tag
by tag, validated by dciodvfy and stored in a real Orthanc next to its original.

Never Slicer's generic scalar-volume exporter, which writes ORIGINAL\\PRIMARY, a new Frame of
Reference and truncated values (the defect this replaces).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import slicer
from derived_checks import SOURCE_DESCRIPTION, dciodvfy_errors, scanner_series
from dicomweb_client.api import DICOMwebClient
from LowDoseCTDenoiseLib.logic import INSTANCE_UIDS, LowDoseCTDenoiseLogic
from test_slicer_logic import scene  # noqa: F401 - the fixture

from ldct.io import CTVolume, write_volume

SHAPE, SPACING = (3, 64, 64), (0.7, 0.7, 2.5)


@pytest.fixture()
def loaded(scene, tmp_path):  # noqa: F811
    """A scanner's series on disk and as Slicer's DICOM module loads it: int16 HU, its
    IJK->RAS from the headers, the instance UIDs on the node."""
    hu = np.random.default_rng(3).integers(-1000, 400, SHAPE).astype(np.int16)
    files = scanner_series(tmp_path / "source", hu, SPACING)
    headers = [pydicom.dcmread(f) for f in files]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array(
        [[SPACING[0], 0, 0, -20.0], [0, SPACING[1], 0, -30.0], [0, 0, SPACING[2], 100.0],
         [0, 0, 0, 1]])
    node = slicer.util.addVolumeFromArray(hu, ijkToRAS=ras, name="3: Abdomen",
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    node.SetAttribute(INSTANCE_UIDS, " ".join(h.SOPInstanceUID for h in headers))
    files_by_uid = {h.SOPInstanceUID: str(f) for h, f in zip(headers, files)}
    return node, hu, files, headers, files_by_uid


def _result(logic, node, tmp_path, hu, strength: float):
    """The server's full-strength result (the input + 7.3 HU, whole HU as the server sends
    int16) loaded and blended at ``strength`` as the panel shows it."""
    volume = CTVolume(hu=(hu + 7.3).astype(np.float32), spacing=SPACING,
                      origin=(-20.0, -30.0, 100.0))
    path = write_volume(volume, tmp_path / "full.nrrd", dtype="int16")
    result = logic.load_result(path, node, "vagan", strength, version="20261207-0430")
    logic.show_side_by_side(node, result)
    return result


def test_the_result_shown_is_written_as_a_true_derived_series(scene, loaded, tmp_path,  # noqa: F811
                                                               orthanc):
    node, hu, files, headers, files_by_uid = loaded
    logic = LowDoseCTDenoiseLogic(scene, find_instance=files_by_uid.get)
    result = _result(logic, node, tmp_path, hu, 0.6)
    shown = slicer.util.arrayFromVolume(result).copy()
    series = logic.write_derived(tmp_path / "derived")
    assert series.name == "3: Abdomen vagan s=0.6" and len(series.files) == 3
    derived = sorted((pydicom.dcmread(f) for f in series.files),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    sources = sorted(headers, key=lambda d: float(d.ImagePositionPatient[2]))
    for k, (out, src) in enumerate(zip(derived, sources)):
        assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        for same in ("StudyInstanceUID", "PatientID", "FrameOfReferenceUID",
                     "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert out.data_element(same).value == src.data_element(same).value, same
        assert out.SeriesInstanceUID != src.SeriesInstanceUID
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert out.SeriesDescription == (f"{SOURCE_DESCRIPTION} denoised (vagan "
                                         "20261207-0430, strength 0.6)")
        equipment = out.ContributingEquipmentSequence[-1]
        assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == (
            "vagan", "20261207-0430")
        stored_hu = out.pixel_array.astype(np.int32) - 1024  # the source's intercept
        np.testing.assert_array_equal(stored_hu, shown[k])  # what the views show, exactly
        exact = hu[k] + 0.6 * (np.rint(hu[k] + 7.3) - hu[k])  # 0.6 x 7 HU = 4.2 HU
        assert np.abs(stored_hu - exact).max() <= 0.5  # rounded (truncation is off by 0.2)
        assert np.array_equal(stored_hu, hu[k] + 4)
    assert [e for f in series.files for e in dciodvfy_errors(f)] == []
    web = DICOMwebClient(f"{orthanc}/dicom-web")  # what the DICOM module's Send does
    web.store_instances([pydicom.dcmread(f) for f in files])
    web.store_instances([pydicom.dcmread(f) for f in series.files])
    listed = {pydicom.Dataset.from_json(s).SeriesInstanceUID: pydicom.Dataset.from_json(s)
              for s in web.search_for_series(str(sources[0].StudyInstanceUID))}
    assert set(listed) == {sources[0].SeriesInstanceUID, derived[0].SeriesInstanceUID}
    assert listed[derived[0].SeriesInstanceUID].SeriesDescription == derived[0].SeriesDescription


def test_a_volume_not_from_dicom_or_not_its_slices_is_refused_with_the_reason(
        scene, loaded, tmp_path):  # noqa: F811
    node, hu, files, headers, files_by_uid = loaded
    logic = LowDoseCTDenoiseLogic(scene, find_instance=files_by_uid.get)
    _result(logic, node, tmp_path, hu, 1.0)
    missing = LowDoseCTDenoiseLogic(scene, find_instance=lambda uid: "")
    missing.pair, missing._full = logic.pair, logic._full
    with pytest.raises(ValueError, match="no longer in Slicer's DICOM database"):
        missing.write_derived(tmp_path / "a")
    node.SetAttribute(INSTANCE_UIDS, " ".join(h.SOPInstanceUID for h in headers[:2]))
    with pytest.raises(ValueError, match="1 of 3 slices have no source instance"):
        logic.write_derived(tmp_path / "b")
    node.RemoveAttribute(INSTANCE_UIDS)
    with pytest.raises(ValueError, match="was not loaded from DICOM"):
        logic.write_derived(tmp_path / "c")
    assert not any((tmp_path / name).exists() and any((tmp_path / name).iterdir())
                   for name in "abc")
