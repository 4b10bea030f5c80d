"""Send to PACS from the Slicer panel: the controller and the real Logic on real MRML, the real
ldct server reading a real Orthanc (its own, empty) and writing back to it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import slicer
from conftest import free_port, orthanc_server, running, serve_command
from dicomweb_client.api import DICOMwebClient
from LowDoseCTDenoiseLib import DenoiseController, State, UrlHistory
from LowDoseCTDenoiseLib.logic import LowDoseCTDenoiseLogic
from test_slicer_logic import _ras_matrix, scene  # noqa: F401 - the fixture

from ldct.io import read_volume, write_dicom_series
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose

MODEL, STRENGTH = "ldct-gauss", 0.8


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """(Orthanc's URL, the ldct server's URL reading it, the series UID, its volume): a noisy
    phantom CT series stored in an Orthanc of this module's own."""
    root = tmp_path_factory.mktemp("slicer-pacs")
    with orthanc_server(tmp_path_factory.mktemp("slicer-orthanc")) as orthanc:
        p = make_phantom(size=256, slices=3, pixel_mm=0.78)
        noisy = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=4, progress=False)
        files = write_dicom_series(noisy, root / "series", description="LD abdomen")
        DICOMwebClient(f"{orthanc}/dicom-web").store_instances(
            [pydicom.dcmread(f) for f in files])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with running(serve_command(f"{orthanc}/dicom-web", port, "--models", MODEL),
                     f"{url}/health", root / "server.log",
                     env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(root / "cache")}):
            yield orthanc, url, str(pydicom.dcmread(files[0]).SeriesInstanceUID), read_volume(
                files[0].parent)


def _loaded_from_dicom(scene, volume, series_uid: str):  # noqa: F811 - the fixture
    """The series as Slicer's DICOM module loads it: int16 HU, under its patient and study,
    the series UID and number on its subject-hierarchy item."""
    node = slicer.util.addVolumeFromArray(np.rint(volume.hu).astype(np.int16),
                                          ijkToRAS=_ras_matrix(volume), name="2: LD abdomen",
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Anon"), "CT abdomen")
    item = sh.GetItemByDataNode(node) or sh.CreateItem(study, node)
    sh.SetItemParent(item, study)
    sh.SetItemUID(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName(), series_uid)
    sh.SetItemAttribute(item, "DICOM.SeriesNumber", str(volume.dicom.SeriesNumber))
    return node, sh, study


def _denoised_panel(scene, node, server: str, token: str, tmp_path, exported: list,  # noqa: F811
                    find_instance=None):
    """The panel after Denoise at STRENGTH with the real Logic, as the widget binds them."""
    logic = LowDoseCTDenoiseLogic(scene, find_instance=find_instance)
    alerts = []
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: alerts.append(text),
                              temp_root=str(tmp_path), on_dicom_export=exported.append)
    panel.connect(server, token)
    assert panel.wait(60)
    panel.poll()
    panel.select_input(node)
    panel.select_model(MODEL)
    panel.set_strength(STRENGTH)
    panel.denoise()
    panel.answer_consent(True)
    assert panel.wait(300)
    panel.poll()
    assert panel.state is State.DONE and not alerts, panel.status
    return panel, logic, alerts


def _series_of_study(orthanc: str, study_uid: str) -> set[str]:
    return {pydicom.Dataset.from_json(s).SeriesInstanceUID
            for s in DICOMwebClient(f"{orthanc}/dicom-web").search_for_series(study_uid)}


def test_a_series_of_the_servers_pacs_goes_back_through_the_server(scene, pacs, tokens,  # noqa: F811
                                                                   tmp_path):
    """The input came from the server's PACS: Send to PACS runs on the worker (busy bar,
    Cancel) and the server stores its own result of that series at the result's model and
    strength as a DERIVED series of the input's study, within 1 HU of what Slicer shows."""
    orthanc, server, series_uid, volume = pacs
    node, *_ = _loaded_from_dicom(scene, volume, series_uid)
    exported = []
    panel, logic, alerts = _denoised_panel(scene, node, server, tokens["radiologist"],
                                           tmp_path, exported)
    study_uid = str(volume.dicom.StudyInstanceUID)
    before = _series_of_study(orthanc, study_uid)
    panel.send_to_pacs()
    assert panel.state is State.SENDING and "cancel" in panel.enabled()
    assert panel.view().progress is None  # the server works: a busy bar
    assert panel.wait(300)
    panel.poll()
    assert panel.state is State.DONE and not alerts and not exported, panel.status
    added = _series_of_study(orthanc, study_uid) - before
    assert len(added) == 1 and f"({next(iter(added))})" in panel.status
    stored = DICOMwebClient(f"{orthanc}/dicom-web").retrieve_series(study_uid, *added)
    for k, ds in enumerate(stored):
        ds.save_as(tmp_path / f"{k}.dcm", write_like_original=False)
    back = read_volume(tmp_path)
    header = stored[0]
    assert list(header.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert header.SeriesDescription == (f"LD abdomen denoised ({MODEL} baseline, strength "
                                        f"{STRENGTH:g})")
    assert header.PatientID == volume.dicom.PatientID
    shown = slicer.util.arrayFromVolume(logic.pair[1])
    assert np.abs(back.hu - shown).max() <= 1.0  # the server's blend, stored as whole HU
    assert np.abs(back.hu - volume.hu).max() > 5  # ... which is not the input


def test_the_server_refuses_a_token_without_the_role_and_says_why(scene, pacs, tokens,  # noqa: F811
                                                                  tmp_path):
    orthanc, server, series_uid, volume = pacs
    node, *_ = _loaded_from_dicom(scene, volume, series_uid)
    panel, _, alerts = _denoised_panel(scene, node, server, tokens["radiologist"], tmp_path, [])
    panel.connect(server, tokens["coordinator"])  # may list models, may not denoise
    assert panel.wait(60)
    panel.poll()
    before = _series_of_study(orthanc, str(volume.dicom.StudyInstanceUID))
    panel.send_to_pacs()
    assert panel.wait(120)
    panel.poll()
    assert panel.state is State.ERROR and alerts == [panel.status]
    assert "needs the role radiologist or admin" in panel.status
    assert _series_of_study(orthanc, str(volume.dicom.StudyInstanceUID)) == before


def test_a_series_the_server_does_not_have_is_written_here_as_a_derived_series(
        scene, pacs, tokens, tmp_path):  # noqa: F811
    """Another series (not in the server's PACS; here: its UID changed): nothing is stored by
    the server; the Logic writes the derived series from the input's DICOM headers (as
    Slicer's DICOM database holds them) and hands its folder to the widget, which adds it to
    that database for the DICOM module's Send."""
    orthanc, server, _, volume = pacs
    node, sh, study = _loaded_from_dicom(scene, volume, "1.2.826.0.1.3680043.99.1")
    node.SetAttribute("DICOM.instanceUIDs", " ".join(h.SOPInstanceUID for h in volume.sources))
    database = tmp_path / "database"
    database.mkdir()
    for header in volume.sources:  # the input's files in Slicer's DICOM database
        pydicom.dcmwrite(database / f"{header.SOPInstanceUID}.dcm", header,
                         write_like_original=False)
    exported = []
    panel, logic, alerts = _denoised_panel(
        scene, node, server, tokens["radiologist"], tmp_path, exported,
        find_instance=lambda uid: str(database / f"{uid}.dcm"))
    before = _series_of_study(orthanc, str(volume.dicom.StudyInstanceUID))
    panel.send_to_pacs()
    assert panel.wait(60)
    panel.poll()
    result = logic.pair[1]
    assert panel.state is State.DONE and not alerts and len(exported) == 1, panel.status
    written = sorted(exported[0].glob("*.dcm"))
    headers = [pydicom.dcmread(f) for f in written]
    assert len(headers) == 3
    assert {h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in headers} == {
        h.SOPInstanceUID for h in volume.sources}
    assert {int(h.SeriesNumber) for h in headers} == {int(volume.dicom.SeriesNumber) + 1000}
    assert panel.status.startswith(f"{server} does not have the input's series in its PACS. "
                                   f"'{result.GetName()}' was written as a derived DICOM "
                                   f"series ('LD abdomen denoised ({MODEL} baseline, "
                                   "strength 0.8)'")
    assert _series_of_study(orthanc, str(volume.dicom.StudyInstanceUID)) == before


def test_a_volume_outside_any_study_cannot_be_exported_and_says_what_to_do(scene, pacs,  # noqa: F811
                                                                         tokens, tmp_path):
    _, server, _, volume = pacs
    node = slicer.util.addVolumeFromArray(np.rint(volume.hu).astype(np.int16),
                                          ijkToRAS=_ras_matrix(volume), name="dragged in",
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    exported = []
    panel, _, alerts = _denoised_panel(scene, node, server, tokens["radiologist"], tmp_path,
                                       exported)
    panel.send_to_pacs()  # not from DICOM: decided here, no server call
    assert not panel.working and panel.state is State.ERROR and not exported
    assert alerts == [panel.status] and "was not loaded from DICOM" in panel.status
    assert "load the CT with the DICOM module" in panel.status
