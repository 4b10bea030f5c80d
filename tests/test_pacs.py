"""PACS over DICOMweb: a real Orthanc, a real ldct server reading from it and writing back."""

from __future__ import annotations

import ctypes
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from conftest import free_port, monai_client, orthanc_server, running, serve_command
from derived_checks import dciodvfy_errors
from dicomweb_client.api import DICOMwebClient
from monailabel.client.client import MONAILabelClientException

from ldct.io import read_volume, write_dicom_series, write_volume
from ldct.pacs import PacsError, store_derived_series
from ldct.phantom import make_phantom
from ldct.server.decode import read_in_child
from ldct.simulate import LowDoseParams, simulate_low_dose


@pytest.fixture(scope="module")
def uploaded(orthanc, tmp_path_factory):
    """A noisy phantom CT series stored in Orthanc over STOW-RS; returns (series uid, volume)."""
    p = make_phantom(size=256, slices=3, pixel_mm=0.78)
    p.volume.origin = (-50.0, -61.5, 210.25)
    noisy = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=1, progress=False)
    files = write_dicom_series(noisy, tmp_path_factory.mktemp("series"), description="LD abdomen")
    DICOMwebClient(f"{orthanc}/dicom-web").store_instances([pydicom.dcmread(f) for f in files])
    return str(pydicom.dcmread(files[0]).SeriesInstanceUID), read_volume(files[0].parent), p


@pytest.fixture(scope="module")
def oversized(orthanc, tmp_path_factory):
    """A CT series in its own study whose headers declare 17 slices of 4096 x 4096 pixels
    (285,212,672 voxels, over the limit of 512 * 512 * 1024 = 268,435,456) in files of a few
    hundred bytes (no pixel data); removed from the session's Orthanc afterwards."""
    files = write_dicom_series(make_phantom(size=32, slices=17).volume,
                               tmp_path_factory.mktemp("oversized"))
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ds.Rows = ds.Columns = 4096
        del ds.PixelData
    DICOMwebClient(f"{orthanc}/dicom-web").store_instances(datasets)
    yield str(datasets[0].SeriesInstanceUID)
    _delete_study(orthanc, str(datasets[0].StudyInstanceUID))


def _delete_study(orthanc: str, study_uid: str) -> None:
    """Remove a study from Orthanc (its REST API: the UID looked up to Orthanc's id)."""
    found = requests.post(f"{orthanc}/tools/lookup", data=study_uid, timeout=10).json()
    for item in found:
        requests.delete(f"{orthanc}/studies/{item['ID']}", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def pacs_cache(tmp_path_factory):
    """The server's DICOM cache folder (series fetched from the PACS)."""
    return tmp_path_factory.mktemp("dicomweb-cache")


@pytest.fixture(scope="module")
def pacs_server(orthanc, uploaded, oversized, pacs_cache):
    """`ldct serve --studies <orthanc>/dicom-web`, its cache in a temporary folder."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cache = pacs_cache
    with running(serve_command(f"{orthanc}/dicom-web", port, "--models", "vagan,ldct-gauss"),
                 f"{url}/health", cache / "server.log",
                 env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(cache)}):
        yield url


def _series_of_study(orthanc: str, study_uid: str) -> list[dict]:
    return DICOMwebClient(f"{orthanc}/dicom-web").search_for_series(study_uid)


def test_the_pacs_series_is_listed_and_denoised_by_id(pacs_server, uploaded, tmp_path, tokens):
    series_uid, source, phantom = uploaded
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    assert series_uid in client.datastore()["objects"]
    result_file, params = client.infer("vagan", series_uid, {"strength": 1.0})
    result = read_volume(result_file)
    assert result.same_geometry(source, atol=1e-9)
    liver = phantom.masks["liver"]
    assert (result.hu - phantom.volume.hu)[liver].std() < 0.9 * (
        source.hu - phantom.volume.hu)[liver].std()
    assert "written_back_series" not in params  # nothing is stored unless asked


def test_write_back_stores_a_derived_series_in_the_same_study(pacs_server, orthanc, uploaded,
                                                               tmp_path, tokens):
    series_uid, source, _ = uploaded
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    result_file, params = client.infer("vagan", series_uid,
                                       {"write_back": True, "strength": 0.8})
    new_uid = params["written_back_series"]
    study_uid = str(source.dicom.StudyInstanceUID)
    listed = {pydicom.Dataset.from_json(s).SeriesInstanceUID for s in
              _series_of_study(orthanc, study_uid)}
    assert listed == {series_uid, new_uid}  # next to the original, in the same study
    web = DICOMwebClient(f"{orthanc}/dicom-web")
    instances = web.retrieve_series(study_uid, new_uid)
    folder = tmp_path / "back"
    folder.mkdir()
    for k, ds in enumerate(instances):
        ds.save_as(folder / f"{k}.dcm", write_like_original=False)
    stored = read_volume(folder)
    assert stored.same_geometry(source, atol=1e-6)
    np.testing.assert_array_equal(stored.hu, np.rint(read_volume(result_file).hu))
    sources = {float(h.ImagePositionPatient[2]): h.SOPInstanceUID for h in source.sources}
    for ds in instances:  # each slice points at the PACS instance it was computed from
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == sources[float(ds.ImagePositionPatient[2])]
    errors = [e for f in sorted(folder.glob("*.dcm")) for e in dciodvfy_errors(f)]
    assert errors == []  # its source is valid (uploaded by the fixture): so is it
    header = instances[0]
    equipment = header.ContributingEquipmentSequence[-1]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("vagan", "shipped")
    assert header.PatientID == source.dicom.PatientID
    assert header.FrameOfReferenceUID == source.dicom.FrameOfReferenceUID
    assert list(header.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert header.SeriesDescription == "LD abdomen denoised (vagan shipped, strength 0.8)"
    assert int(header.SeriesNumber) == int(source.dicom.SeriesNumber) + 1000
    listing = client.datastore()["objects"][new_uid]["image"]["info"]  # the PACS listing
    assert listing == {"SeriesInstanceUID": new_uid, "StudyInstanceUID": study_uid,
                       "PatientID": str(source.dicom.PatientID),
                       "StudyDate": str(source.dicom.StudyDate),
                       "SeriesDescription": "LD abdomen denoised (vagan shipped, strength 0.8)",
                       "Modality": "CT"}
    assert len(web.retrieve_series(study_uid, series_uid)) == source.hu.shape[0]  # untouched


IN_OPEN = 0x20  # inotify(7): a file in the watched folder was opened


class OpenCounter:
    """The files in ``folder`` that are opened, by any process, and how often (Linux inotify:
    the kernel queues the event inside open(), so the count is complete once the opener has
    answered; an open just like the one before it, still unread, is merged into it, so
    compare counts of the same work)."""

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        watch = libc.inotify_add_watch(self.fd, str(folder).encode(), IN_OPEN) \
            if self.fd >= 0 else -1
        assert watch >= 0, f"inotify: {os.strerror(ctypes.get_errno())}"

    def take(self) -> Counter:
        """The opens since the last call, by file name."""
        opened: Counter = Counter()
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return opened
            at = 0
            while at < len(data):  # struct inotify_event: wd, mask, cookie, len, name
                _, mask, _, size = struct.unpack_from("iIII", data, at)
                name = data[at + 16:at + 16 + size].rstrip(b"\0").decode()
                if name:  # the folder itself is opened to list it: not a file
                    opened[name] += 1
                at += 16 + size

    def close(self) -> None:
        os.close(self.fd)


def test_write_back_reads_the_source_no_more_than_the_denoising_does(
        pacs_server, pacs_cache, orthanc, uploaded, tmp_path, tokens):
    """The source is decoded once, by the infer's decoding child (killable, time-boxed,
    within the limits): the write-back stores the volume that child returned, and the server
    process opens none of the series' files again."""
    series_uid, source, _ = uploaded
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    client.infer("ldct-gauss", series_uid, {})  # the series is in the server's cache now
    folder, = pacs_cache.glob(f"*/{series_uid}")
    files = {p.name for p in folder.glob("*.dcm")}
    assert len(files) == source.hu.shape[0]
    counter = OpenCounter(folder)
    try:
        client.infer("ldct-gauss", series_uid, {})
        denoising = counter.take()
        _, params = client.infer("ldct-gauss", series_uid, {"write_back": True})
        writing_back = counter.take()
    finally:
        counter.close()
    assert set(denoising) == files  # every slice is read to denoise it ...
    assert writing_back == denoising  # ... and not once more to write the result back
    stored = DICOMwebClient(f"{orthanc}/dicom-web").retrieve_series(
        str(source.dicom.StudyInstanceUID), params["written_back_series"])
    sources = {float(h.ImagePositionPatient[2]): h.SOPInstanceUID for h in source.sources}
    assert len(stored) == len(sources)
    for ds in stored:  # the headers came from the child: each slice still points at its source
        assert (ds.SourceImageSequence[0].ReferencedSOPInstanceUID
                == sources[float(ds.ImagePositionPatient[2])])
    _delete_series(orthanc, params["written_back_series"])  # the study as the other tests know it


def _delete_series(orthanc: str, series_uid: str) -> None:
    found = requests.post(f"{orthanc}/tools/lookup", data=series_uid, timeout=10).json()
    for item in found:
        requests.delete(f"{orthanc}/series/{item['ID']}", timeout=10).raise_for_status()


def test_write_back_of_a_series_over_the_limits_is_refused_and_the_server_goes_on(
        pacs_server, pacs_cache, orthanc, oversized, uploaded, tmp_path, tokens):
    series_uid, _, _ = uploaded
    before = requests.get(f"{orthanc}/series", timeout=5).json()
    answer = requests.post(f"{pacs_server}/infer/ldct-gauss", params={"image": oversized},
                           data={"params": '{"write_back": true}'}, timeout=120,
                           headers={"Authorization": f"Bearer {tokens['radiologist']}"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "285,212,672 voxels" in detail and "limit of 268,435,456" in detail, detail
    assert "(17, 4096, 4096)" in detail, detail
    assert detail.startswith(f"{oversized}: ") and str(pacs_cache) not in detail  # no path
    assert requests.get(f"{orthanc}/series", timeout=5).json() == before  # nothing stored
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    result_file, params = client.infer("ldct-gauss", series_uid, {})  # the next request
    assert read_volume(result_file).hu.shape == uploaded[1].hu.shape


def test_the_decoding_child_returns_each_slices_header_when_asked(tmp_path):
    """What the write-back needs to point at each source instance comes from the child, as
    the files hold it (DICOM JSON), and only when asked (a plain denoising does not pay)."""
    volume = make_phantom(size=32, slices=4).volume
    volume.origin = (-50.0, -61.5, 210.123456)  # decimals that must survive the trip
    volume.spacing = (0.78, 0.78, 2.5)
    files = write_dicom_series(volume, tmp_path / "series", description="LD abdomen")
    on_disk = {str(ds.SOPInstanceUID): ds for ds in
               (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    decoded = read_in_child(tmp_path / "series", "the series", slice_headers=True)
    assert sorted(str(h.SOPInstanceUID) for h in decoded.sources) == sorted(on_disk)
    for header in decoded.sources:
        assert header == on_disk[str(header.SOPInstanceUID)]  # every element, value for value
    assert [float(h.ImagePositionPatient[2]) for h in decoded.sources] == [
        210.123456, 212.623456, 215.123456, 217.623456]  # in slice order, 2.5 mm apart
    assert read_in_child(tmp_path / "series", "the series").sources == ()


def test_a_header_value_json_cannot_carry_does_not_stop_the_write_back(tmp_path):
    """A scanner's slice with an InstanceNumber of 'x' (pydicom reads it; DICOM JSON cannot
    carry it) and a private element: the child still returns every slice's header, without
    the private element (no derived slice copies it) and without the bad value."""
    volume = make_phantom(size=32, slices=4).volume
    files = write_dicom_series(volume, tmp_path / "series", description="LD abdomen")
    odd = pydicom.dcmread(files[2])
    odd.private_block(0x0019, "ACME 1.0", create=True).add_new(0x01, "LO", "vendor data")
    odd.save_as(files[2])
    raw = Path(files[2]).read_bytes()  # InstanceNumber (0020,0013) IS: its value made 'x'
    at = raw.index(b"\x20\x00\x13\x00IS") + 6
    length = int.from_bytes(raw[at:at + 2], "little")
    Path(files[2]).write_bytes(raw[:at + 2] + b"x".ljust(length) + raw[at + 2 + length:])
    decoded = read_in_child(tmp_path / "series", "the series", slice_headers=True)
    assert len(decoded.sources) == 4
    assert not any(element.tag.is_private for h in decoded.sources for element in h)
    numbers = sorted(str(h.get("InstanceNumber", "-")) for h in decoded.sources)
    assert numbers.count("-") == 1 and len(set(numbers)) == 4


def test_write_back_of_an_upload_is_refused_with_the_reason(pacs_server, tmp_path, uploaded,
                                                            tokens):
    _, source, _ = uploaded
    path = write_volume(source, tmp_path / "upload.nrrd")
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    with pytest.raises(MONAILabelClientException, match="write_back needs a series from a PACS"):
        client.infer("ldct-gauss", "", {"write_back": True}, file=str(path))


def test_a_dead_pacs_gives_a_clear_error(uploaded):
    _, source, _ = uploaded
    dead = DICOMwebClient(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(PacsError, match="cannot be reached"):
        store_derived_series(dead, source, source, "vagan", 1.0)


def test_a_result_with_other_geometry_is_never_stored(orthanc, uploaded):
    _, source, _ = uploaded
    moved = source.with_hu(source.hu)
    moved.origin = (0.0, 0.0, 0.0)
    before = requests.get(f"{orthanc}/series", timeout=5).json()
    with pytest.raises(PacsError, match="does not cover"):
        store_derived_series(DICOMwebClient(f"{orthanc}/dicom-web"), source, moved, "vagan", 1.0)
    assert requests.get(f"{orthanc}/series", timeout=5).json() == before


def test_the_pacs_is_not_open_through_the_server(pacs_server, orthanc, uploaded, tokens):
    """The review's PACS probes: listing, MONAI Label's DICOMweb proxy (QIDO/WADO/STOW with
    the server's PACS credentials) and write-back, anonymously and as admin."""
    series_uid, _, _ = uploaded
    before = requests.get(f"{orthanc}/instances", timeout=5).json()
    assert requests.get(f"{pacs_server}/datastore/", params={"output": "all"},
                        timeout=30).status_code == 401  # PatientIDs only with a token
    anonymous = requests.post(f"{pacs_server}/infer/ldct-gauss", timeout=60,
                              params={"image": series_uid}, data={"params": '{"write_back": true}'})
    assert anonymous.status_code == 401
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    for method, path in [("GET", "/proxy/dicom/qido/studies"),
                         ("GET", f"/proxy/dicom/wado/studies/x/series/{series_uid}"),
                         ("POST", "/proxy/dicom/stow/studies")]:
        for headers in ({}, admin):
            answer = requests.request(method, pacs_server + path, headers=headers,
                                      data=b"forged" if method == "POST" else None, timeout=30)
            assert answer.status_code == (404 if headers else 401), (path, answer.status_code)
    assert requests.get(f"{orthanc}/instances", timeout=5).json() == before  # nothing stored


def test_only_ct_series_are_listed_and_a_series_is_fetched_once(pacs_server, pacs_cache,
                                                                orthanc, uploaded, tmp_path,
                                                                tokens):
    series_uid, _, _ = uploaded
    mr = write_dicom_series(make_phantom(size=128, slices=2).volume, tmp_path / "mr")
    datasets = [pydicom.dcmread(f) for f in mr]
    for ds in datasets:
        ds.Modality = "MR"
    DICOMwebClient(f"{orthanc}/dicom-web").store_instances(datasets)
    client = monai_client(pacs_server, tmp_path, tokens["radiologist"])
    listed = client.datastore()["objects"]
    assert series_uid in listed and str(datasets[0].SeriesInstanceUID) not in listed
    assert all(o["image"]["info"]["Modality"] == "CT" for o in listed.values())
    def cached() -> dict[str, int]:  # the series' files in the cache (one folder per PACS)
        return {p.name: p.stat().st_mtime_ns for p in pacs_cache.glob(f"*/{series_uid}/*.dcm")}

    client.infer("ldct-gauss", series_uid, {})
    fetched = cached()
    client.infer("ldct-gauss", series_uid, {})
    again = cached()
    assert fetched and again == fetched  # the second request read the cached series


def test_a_pacs_that_needs_credentials(tmp_path, tokens):
    """The server logs in with MONAI_LABEL_DATASTORE_USERNAME/PASSWORD; without them, the
    listing is a 502 that says to set them (not a bare 500)."""
    users = {"ldct": "pacs-secret"}
    with orthanc_server(tmp_path, users) as pacs:
        files = write_dicom_series(make_phantom(size=128, slices=2).volume, tmp_path / "ct")
        session = requests.Session()
        session.auth = ("ldct", "pacs-secret")
        DICOMwebClient(f"{pacs}/dicom-web", session=session).store_instances(
            [pydicom.dcmread(f) for f in files])
        series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
        auth = {"Authorization": f"Bearer {tokens['radiologist']}"}
        for env, status in [({"MONAI_LABEL_DATASTORE_USERNAME": "ldct",
                              "MONAI_LABEL_DATASTORE_PASSWORD": "pacs-secret"}, 200), ({}, 502)]:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cache = tmp_path / f"cache-{status}"
            with running(serve_command(f"{pacs}/dicom-web", port, "--models", "ldct-gauss"),
                         f"{url}/health", tmp_path / f"server-{status}.log",
                         env={**env, "MONAI_LABEL_DATASTORE_CACHE_PATH": str(cache)}):
                answer = requests.get(f"{url}/datastore/", params={"output": "all"},
                                      headers=auth, timeout=60)
                assert answer.status_code == status, answer.text
                if status == 200:
                    assert series_uid in answer.json()["objects"]
                else:
                    assert "MONAI_LABEL_DATASTORE_USERNAME" in answer.json()["detail"]
