"""The panel's worklist: the real ldct server reading a real Orthanc lists its CT series, a
chosen series comes down as DICOM (a radiologist/admin route), lands in real MRML under its
patient and study and is denoised with the recommended model in one action."""

from __future__ import annotations

import http.client
import json
import zipfile
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
import slicer
from conftest import free_port, orthanc_server, running, serve_command
from dicomweb_client.api import DICOMwebClient
from LowDoseCTDenoiseLib import DenoiseController, ServerError, State, UrlHistory
from LowDoseCTDenoiseLib.logic import LowDoseCTDenoiseLogic
from LowDoseCTDenoiseLib.worklist import WorklistController, WorklistRow, unpack_series
from test_slicer_logic import _matrix, _ras_matrix, scene  # noqa: F401 - the fixture

from ldct.auth import TokenStore
from ldct.io import read_volume, write_dicom_series
from ldct.phantom import make_phantom
from ldct.series_zip import SeriesTooLarge, zip_series
from ldct.simulate import LowDoseParams, simulate_low_dose

RECOMMENDED = "vagan"  # models/recommended.json's "model"
# (patient ID, patient name, study date, series description) of the two series in the PACS
PATIENTS = (("WL-A", "Alpha^Ann", "20240102", "LD abdomen A"),
            ("WL-B", "Beta^Bob", "20231130", "LD liver B"))


@pytest.fixture(scope="module")
def worklist_pacs(tmp_path_factory):
    """(server URL, {patient ID: (series UID, its folder)}, the server's temp folder): two
    patients' noisy phantom series in an Orthanc of this module's own, behind `ldct serve`."""
    root = tmp_path_factory.mktemp("worklist")
    server_tmp = root / "server-tmp"
    server_tmp.mkdir()
    series = {}
    with orthanc_server(tmp_path_factory.mktemp("worklist-orthanc")) as orthanc:
        for seed, (pid, name, date, description) in enumerate(PATIENTS):
            p = make_phantom(size=128, slices=3, seed=seed)
            noisy = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=seed,
                                      progress=False)
            folder = root / pid
            files = write_dicom_series(noisy, folder, description=description)
            study = pydicom.uid.generate_uid()
            for f in files:
                ds = pydicom.dcmread(f)
                ds.PatientID, ds.PatientName, ds.StudyDate = pid, name, date
                ds.StudyInstanceUID = study
                ds.save_as(f)
            DICOMwebClient(f"{orthanc}/dicom-web").store_instances(
                [pydicom.dcmread(f) for f in files])
            series[pid] = (str(pydicom.dcmread(files[0]).SeriesInstanceUID), folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with running(serve_command(f"{orthanc}/dicom-web", port, "--models",
                                   f"ldct-gauss,{RECOMMENDED}"),
                     f"{url}/health", root / "server.log",
                     env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(root / "cache"),
                          "TMPDIR": str(server_tmp)}):
            yield url, series, server_tmp


def _get(url: str, path: str, token: str) -> tuple[int, bytes]:
    """A raw GET (no client-side path normalisation: ``..`` reaches the server as sent)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _leftovers(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("ldct-series-"))


def test_the_panel_lists_loads_and_denoises_a_pacs_series(scene, worklist_pacs, tokens,  # noqa: F811
                                                           tmp_path):
    url, series, _ = worklist_pacs
    logic = LowDoseCTDenoiseLogic(scene)
    alerts, imported = [], []
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: alerts.append(text),
                              temp_root=str(tmp_path))
    worklist = WorklistController(panel, logic, panel.alert, temp_root=str(tmp_path),
                                  on_dicom_import=imported.append)
    assert worklist.enabled() == frozenset()  # not connected: nothing to list
    panel.connect(url, tokens["radiologist"])
    assert panel.wait(60)
    panel.poll()
    assert worklist.enabled() == {"list"}  # nothing listed yet: nothing to open
    worklist.refresh()
    assert worklist.working and worklist.enabled() == frozenset()  # on the worker
    assert worklist.wait(60)
    worklist.poll()
    assert worklist.enabled() == {"list", "open"}
    assert worklist.rows == [
        WorklistRow(series["WL-A"][0], "WL-A", "2024-01-02", "LD abdomen A"),
        WorklistRow(series["WL-B"][0], "WL-B", "2023-11-30", "LD liver B")], worklist.status
    panel.select_model("ldct-gauss")  # the user's last choice; the worklist uses the server's
    worklist.open(series["WL-B"][0])
    assert worklist.wait(120)
    worklist.poll()
    assert not alerts, alerts
    # loaded, and already being denoised with the recommended model (no consent asked: the
    # voxels go back to the server they came from)
    assert panel.state is State.DENOISING and panel.model == RECOMMENDED, panel.status
    node = panel.input
    expected = read_volume(series["WL-B"][1])  # ldct's own reader as the key
    assert node.GetName() == f"{expected.dicom.SeriesNumber}: LD liver B"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), np.rint(expected.hu))
    np.testing.assert_allclose(_matrix(node), _ras_matrix(expected), atol=1e-6)
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    uid = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName()
    item = sh.GetItemByDataNode(node)
    study = sh.GetItemParent(item)
    patient = sh.GetItemParent(study)
    assert sh.GetItemUID(item, uid) == series["WL-B"][0]
    assert sh.GetItemUID(study, uid) == str(expected.dicom.StudyInstanceUID)
    assert (sh.GetItemName(patient), sh.GetItemUID(patient, uid)) == ("Beta^Bob", "WL-B")
    assert sh.GetItemParent(patient) == sh.GetSceneItemID()
    assert node.GetAttribute("DICOM.instanceUIDs").split() == [
        str(pydicom.dcmread(f).SOPInstanceUID) for f in sorted(
            series["WL-B"][1].iterdir(), key=lambda f: float(
                pydicom.dcmread(f).ImagePositionPatient[2]))]
    assert len(imported) == 1 and len(list(imported[0].glob("*.dcm"))) == 3
    assert panel.wait(300)
    panel.poll()
    assert panel.state is State.DONE and not alerts, panel.status
    original, result = logic.pair  # the comparison is shown
    assert original is node and sh.GetItemParent(sh.GetItemByDataNode(result)) == study
    assert result.GetAttribute("LowDoseCTDenoise.model") == RECOMMENDED
    assert np.abs(slicer.util.arrayFromVolume(result) - np.rint(expected.hu)).max() > 5
    # the same series again, while the user starts another Denoise (its consent question
    # open) before it arrives: loaded under the same patient and study items, not denoised
    worklist.open(series["WL-B"][0])
    panel.denoise()
    assert panel.state is State.CONSENT
    assert worklist.wait(120)
    worklist.poll()
    assert panel.state is State.CONSENT and panel.input is node  # the user's job untouched
    again = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
             if n.GetName() == node.GetName() and n is not node]
    assert len(again) == 1 and sh.GetItemParent(sh.GetItemByDataNode(again[0])) == study
    assert "not denoised" in worklist.status


def test_only_a_radiologist_or_admin_downloads_a_listed_series(worklist_pacs, tokens,
                                                               tmp_path):
    url, series, server_tmp = worklist_pacs
    path = f"/datastore/{series['WL-A'][0]}/dicom"
    reader = TokenStore().replace_reader("s1", "r1")
    for role, token in (("coordinator", tokens["coordinator"]), ("reader", reader)):
        status, body = _get(url, path, token)
        assert status == 403 and b"needs the role radiologist or admin" in body, (role, body)
    status, body = _get(url, path, tokens["admin"])
    assert status == 200
    (tmp_path / "s.zip").write_bytes(body)
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        archive.extractall(tmp_path / "s")
    assert np.array_equal(read_volume(tmp_path / "s").hu, read_volume(series["WL-A"][1]).hu)
    for _ in range(200):  # the zip is removed once the answer is sent (a background task)
        if not _leftovers(server_tmp):
            break
        _get(url, "/info/", tokens["admin"])  # gives the server's event loop a turn
    assert _leftovers(server_tmp) == []


@pytest.mark.parametrize("image", ["1.2.3.4.5", "..", "..%2F..%2Fetc%2Fpasswd",
                                   "%2Fetc%2Fpasswd", "cache"])
def test_an_unknown_or_traversal_id_is_refused_and_nothing_is_written(worklist_pacs, tokens,
                                                                      image):
    url, _, server_tmp = worklist_pacs
    before = sorted(server_tmp.iterdir())
    status, body = _get(url, f"/datastore/{image}/dicom", tokens["radiologist"])
    assert status == 404, body
    detail = json.loads(body)["detail"]
    assert "datastore" in detail or "not served" in detail
    assert sorted(server_tmp.iterdir()) == before


def test_a_series_zip_is_dicom_only_and_bounded(tmp_path):
    """The zip function alone: DICOM files only, the size checked before a byte is
    written, nothing left when refused."""
    noisy = make_phantom(size=64, slices=2).volume
    files = write_dicom_series(noisy, tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not DICOM")
    archive = zip_series(tmp_path / "series")
    try:
        with zipfile.ZipFile(archive) as z:
            assert z.namelist() == ["00000.dcm", "00001.dcm"]
    finally:
        archive.unlink()
        archive.parent.rmdir()
    size = sum(f.stat().st_size for f in files)
    with pytest.raises(SeriesTooLarge, match="MiB"):
        zip_series(tmp_path / "series", limit=size - 1)
    with pytest.raises(ValueError, match="not stored as DICOM"):
        zip_series(tmp_path / "series" / "notes.txt")


def test_a_local_datastore_is_listed_and_its_non_dicom_image_refused(ldct_server, tokens,
                                                                     tmp_path):
    """A folder datastore (an NRRD "phantom"): listed by id; its download says why not."""
    panel = DenoiseController(None, UrlHistory(), lambda kind, text: None)
    panel.url, panel.token = ldct_server, tokens["radiologist"]  # as connect leaves them
    worklist = WorklistController(panel, None, panel.alert, temp_root=str(tmp_path))
    worklist.refresh()
    assert worklist.wait(60)
    worklist.poll()
    assert worklist.rows == [WorklistRow("phantom", "", "", "phantom")], worklist.status
    status, body = _get(ldct_server, "/datastore/phantom/dicom", tokens["radiologist"])
    assert status == 422 and "not stored as DICOM" in json.loads(body)["detail"]


@pytest.mark.parametrize("member", ["../evil.dcm", "sub/evil.dcm", "/tmp/evil.dcm"])
def test_an_archive_entry_with_a_folder_is_refused_before_writing(tmp_path, member):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("00000.dcm", b"x")
        z.writestr(member, b"x")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ServerError, match="unexpected entries"):
        unpack_series(archive, target)
    assert list(target.iterdir()) == [] and list(tmp_path.glob("evil*")) == []
