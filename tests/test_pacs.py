"""PACS over DICOMweb: a real Orthanc, a real ldct server reading from it and writing back."""

from __future__ import annotations

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
def pacs_cache(tmp_path_factory):
    """The server's DICOM cache folder (series fetched from the PACS)."""
    return tmp_path_factory.mktemp("dicomweb-cache")


@pytest.fixture(scope="module")
def pacs_server(orthanc, uploaded, pacs_cache):
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
