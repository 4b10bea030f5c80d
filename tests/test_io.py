"""CT I/O: every format round-trips HU and geometry; bad input gets a clear error."""

from __future__ import annotations

import zipfile

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ldct.io import CTInputError, CTVolume, read_volume, write_dicom_series, write_volume


def _oblique(volume: CTVolume) -> CTVolume:
    """The phantom with a non-trivial origin and a rotated (but orthonormal) direction."""
    angle = np.deg2rad(7.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    return CTVolume(hu=volume.hu.copy(), spacing=(0.7421875, 0.7421875, 1.6),
                    origin=(-172.6484375, -190.25, 1012.5), direction=rot)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz", ".nii"])
def test_itk_formats_round_trip(tmp_path, phantom, suffix):
    volume = _oblique(phantom.volume)
    volume.hu[0, 0, :5] = [-1000.25, 12.5, 3071.0, -3024.0, 0.001]  # non-integer HU survive
    back = read_volume(write_volume(volume, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.hu, volume.hu)
    # NIfTI keeps geometry in float32 (its header format); NRRD and MHA keep it in full.
    atol = 1e-4 if suffix.startswith(".nii") else 1e-12
    assert back.same_geometry(volume, atol=atol), (back.spacing, back.origin, back.direction)


def test_dicom_series_round_trip_keeps_hu_geometry_and_study(tmp_path, phantom):
    volume = _oblique(phantom.volume)
    source = pydicom.Dataset()
    source.PatientName, source.PatientID = "Doe^Jane", "P-17"
    source.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    source.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    source.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    volume.dicom = source
    files = write_dicom_series(volume, tmp_path / "series", description="denoised (test)")
    assert len(files) == volume.hu.shape[0]
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.hu, volume.hu)  # the phantom is integer HU
    assert back.same_geometry(volume, atol=1e-9)
    headers = [pydicom.dcmread(f) for f in files]
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == len(files)
    first = headers[0]
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.SeriesDescription == "denoised (test)"
    assert (first.PatientName, first.PatientID) == ("Doe^Jane", "P-17")
    assert first.StudyInstanceUID == source.StudyInstanceUID
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert first.SeriesInstanceUID != source.get("SeriesInstanceUID")
    # one header for the whole volume: no slice is said to come from that one instance
    assert "SourceImageSequence" not in first
    assert first.pixel_array.dtype == np.int16 and first.Modality == "CT"
    assert float(first.RescaleSlope) == 1.0


def test_dicom_written_values_are_rounded_to_whole_hu(tmp_path, phantom):
    volume = phantom.volume.with_hu(phantom.volume.hu + 0.4)
    write_dicom_series(volume, tmp_path / "s")
    back = read_volume(tmp_path / "s")
    assert np.abs(back.hu - volume.hu).max() <= 0.5


def test_a_series_without_a_source_header_is_one_study_and_one_frame(tmp_path, phantom):
    """Every slice of a new series must share the study and frame of reference UIDs."""
    files = write_dicom_series(phantom.volume.with_hu(phantom.volume.hu), tmp_path / "s")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert len({h.SeriesInstanceUID for h in headers}) == 1


def test_dicom_refuses_to_mix_into_existing_series(tmp_path, phantom):
    write_dicom_series(phantom.volume, tmp_path / "s")
    with pytest.raises(FileExistsError):
        write_dicom_series(phantom.volume, tmp_path / "s")


def test_single_dicom_file_and_zip(tmp_path, phantom):
    files = write_dicom_series(phantom.volume, tmp_path / "s")
    one = read_volume(files[2])
    assert one.hu.shape == (1, *phantom.volume.hu.shape[1:])
    np.testing.assert_array_equal(one.hu[0], phantom.volume.hu[2])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f"nested/{f.name}")
    np.testing.assert_array_equal(read_volume(archive).hu, phantom.volume.hu)


def _retag(files, **tags):
    for f in files:
        ds = pydicom.dcmread(f)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(f)


def test_non_ct_dicom_is_refused(tmp_path, phantom):
    files = write_dicom_series(phantom.volume, tmp_path / "s")
    _retag(files, Modality="MR")
    with pytest.raises(CTInputError, match="modality is MR, not CT"):
        read_volume(tmp_path / "s")


def test_two_series_in_one_folder_are_named(tmp_path, phantom):
    write_dicom_series(phantom.volume, tmp_path / "a")
    write_dicom_series(phantom.volume, tmp_path / "b")
    with pytest.raises(CTInputError, match="holds 2 series"):
        read_volume(tmp_path)


def test_raw_values_without_rescale_are_refused(tmp_path, phantom):
    volume = phantom.volume.with_hu(phantom.volume.hu + 1024)  # stored values, no intercept
    path = write_volume(volume, tmp_path / "raw.nrrd")
    with pytest.raises(CTInputError, match="not a CT volume in Hounsfield units"):
        read_volume(path)


def test_nan_volume_is_refused(tmp_path, phantom):
    hu = phantom.volume.hu.copy()
    hu[1, 5, 5] = np.nan
    path = write_volume(phantom.volume.with_hu(hu), tmp_path / "nan.nrrd")
    with pytest.raises(CTInputError, match="1 voxels are NaN"):
        read_volume(path)


def test_pictures_and_tiny_and_colour_images_are_refused(tmp_path):
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkUInt8), str(png))
    with pytest.raises(CTInputError, match="2D picture"):
        read_volume(png)
    tiny = tmp_path / "tiny.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 8, 8), -1000, np.float32)), str(tiny))
    with pytest.raises(CTInputError, match="too small"):
        read_volume(tiny)
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 32, 32, 3), np.float32),
                                           isVector=True), str(rgb))
    with pytest.raises(CTInputError, match="components per voxel"):
        read_volume(rgb)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(CTInputError, match="no such file"):
        read_volume(tmp_path / "nope.nrrd")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(CTInputError, match="unrecognised file type"):
        read_volume(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CTInputError, match="no DICOM images"):
        read_volume(empty)


def test_a_dicom_file_is_known_by_its_marker_after_the_preamble(tmp_path, phantom):
    """PS3.10 7.1: a DICOM file is a 128-byte preamble, "DICM", then the data set. A slice
    as written reads; the same bytes without the preamble and marker are refused (pydicom
    reads no file without them), as a file with "DICM" at the start instead of byte 128."""
    write_dicom_series(CTVolume(hu=phantom.volume.hu[:1], spacing=phantom.volume.spacing),
                       tmp_path / "series")
    (one,) = sorted((tmp_path / "series").iterdir())
    assert read_volume(one).hu.shape[0] == 1
    data = one.read_bytes()
    assert data[128:132] == b"DICM"
    for name, changed in (("bare.dcm", data[132:]), ("early.dcm", b"DICM" + data[132:])):
        (tmp_path / name).write_bytes(changed)
        with pytest.raises(CTInputError, match="unrecognised file type"):
            read_volume(tmp_path / name)


def test_a_2d_nrrd_reads_as_one_slice(tmp_path, phantom):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(phantom.volume.hu[0]), str(path))
    assert read_volume(path).hu.shape == (1, *phantom.volume.hu.shape[1:])


@pytest.mark.realdata
def test_real_dicom_series_match_their_description(shared_data):
    ircad = read_volume(shared_data / "ct/ircadb17/dicom")
    assert ircad.hu.shape == (119, 512, 512)
    assert ircad.spacing[0] == pytest.approx(0.743, abs=1e-3)
    assert ircad.spacing[2] == pytest.approx(1.6, abs=1e-3)
    assert ircad.hu.min() >= -1024 and ircad.hu.max() <= 1023
    j2k = read_volume(shared_data / "ct/totalseg_j2k/dicom")
    assert j2k.hu.shape == (20, 512, 512)
    assert j2k.spacing[2] == pytest.approx(2.0, abs=1e-3)
    # decoded JPEG 2000 agrees with GDCM's independent decoder (lossless: exactly)
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(shared_data / "ct/totalseg_j2k/dicom"))
    reader.SetFileNames(names)
    reference = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)
    assert reference.shape == j2k.hu.shape
    np.testing.assert_array_equal(np.sort(reference.ravel()), np.sort(j2k.hu.ravel()))
