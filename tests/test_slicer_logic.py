"""The Slicer module's Logic on real MRML scenes (slicer-core), against the real server.

The volume arrives as Slicer builds it from a DICOM series (int16 HU, oblique RAS geometry,
the DICOM window, DICOM.instanceUIDs); the test follows the module's Denoise button: export,
denoise on the server, load the result, show the pair side by side.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
import weakref
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import slicer
import vtk
from conftest import ROOT, SHARED_DATA
from LowDoseCTDenoiseLib import DenoiseClient, DenoiseController, State, UrlHistory
from LowDoseCTDenoiseLib.display import LAYOUT_ID_BASE, LAYOUTS, layout_xml
from LowDoseCTDenoiseLib.logic import LEFT, RIGHT, GeometryMismatch, LowDoseCTDenoiseLogic

from ldct.data import crop_slices, demo_case
from ldct.io import read_volume, write_volume
from ldct.simulate import LowDoseParams, simulate_low_dose

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS_PNG = ROOT / "docs" / "slicer_side_by_side.png"
DICOM_WINDOW = (500.0, 50.0)  # the window the scanner wrote into the DICOM header


def _ras_matrix(volume) -> np.ndarray:
    """IJK -> RAS as Slicer's DICOM reader makes it (ldct geometry is LPS)."""
    lps = np.eye(4)
    lps[:3, :3] = volume.direction * np.asarray(volume.spacing)
    lps[:3, 3] = volume.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _matrix(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


@pytest.fixture(scope="module")
def low_dose_case():
    name, volume, liver = demo_case(SHARED_DATA if SHARED_DATA.exists() else None, slices=3)
    low = simulate_low_dose(volume, LowDoseParams(dose=0.25), seed=5, progress=False)
    low.direction = np.array([[0.9994, -0.0349, 0], [0.0349, 0.9994, 0], [0, 0, 1.0]])
    low.direction /= np.linalg.norm(low.direction, axis=0)
    return name, low


@pytest.fixture()
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene  # what slicer.util's volume helpers use
    yield scene
    scene.Clear(1)


@pytest.fixture()
def dicom_node(scene, low_dose_case):
    name, volume = low_dose_case
    node = slicer.util.addVolumeFromArray(np.rint(volume.hu).astype(np.int16),
                                          ijkToRAS=_ras_matrix(volume), name=f"3: {name}",
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5 1.2.3.6")
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(*DICOM_WINDOW)
    return node


@pytest.fixture()
def client(ldct_server, tokens):
    return DenoiseClient(ldct_server, token=tokens["radiologist"])


def _denoise(logic, node, client, folder: Path, model="vagan"):
    upload = logic.export_input(node, folder / "input.nrrd")
    result = client.denoise(model, upload, folder / "result.nrrd",
                            {"strength": 1.0, "result_dtype": "int16"})
    return logic.load_result(result, node, model)


def test_denoise_shows_original_and_result_side_by_side(scene, dicom_node, client,
                                                        tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    before = slicer.util.arrayFromVolume(dicom_node).copy()
    matrix_before = _matrix(dicom_node)
    result = _denoise(logic, dicom_node, client, tmp_path)
    logic.show_side_by_side(dicom_node, result, "Liver")

    assert result.GetName() == f"{dicom_node.GetName()} vagan s=1"
    assert np.array_equal(_matrix(result), _matrix(dicom_node))  # bit for bit
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(dicom_node), before)  # untouched
    assert np.array_equal(_matrix(dicom_node), matrix_before)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    denoised = slicer.util.arrayFromVolume(result)
    assert denoised.shape == before.shape and denoised.std() > 0
    assert np.abs(np.median(denoised - before)) < 5  # HU kept

    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == LAYOUT_ID_BASE  # "Side by side"
    assert layout.GetLayoutDescription(LAYOUT_ID_BASE) == layout_xml(LAYOUTS["Side by side"])
    assert [logic.slice_node(v).GetLayoutLabel() for v in (LEFT, RIGHT)] == [
        "original", "vagan s=1"]
    left, right = logic.composite_node(LEFT), logic.composite_node(RIGHT)
    assert left.GetBackgroundVolumeID() == dicom_node.GetID()
    assert right.GetBackgroundVolumeID() == result.GetID()
    assert all(c.GetLinkedControl() and c.GetHotLinkedControl() for c in (left, right))
    assert logic.slice_node(RIGHT).GetOrientationString() == "Axial"
    for node in (dicom_node, result):
        display = node.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel()) == (400.0, 40.0)
        assert not display.GetAutoWindowLevel()
    _render(logic, DOCS_PNG if os.environ.get("LDCT_WRITE_DOCS") else tmp_path / "sbs.png")


def test_the_panel_denoises_end_to_end(scene, dicom_node, ldct_server, tokens, tmp_path):
    """The Denoise button's path: the controller, the real Logic and the real server."""
    logic = LowDoseCTDenoiseLogic(scene)
    alerts = []
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: alerts.append(text),
                              temp_root=str(tmp_path))
    logic.on_scene_closed = panel.scene_closed  # as the widget binds them
    panel.connect(ldct_server, tokens["radiologist"])
    assert panel.wait(60)
    panel.poll()
    panel.select_input(dicom_node)
    panel.select_model("ldct-gauss")
    panel.set_strength(0.7)
    panel.denoise()
    assert panel.state is State.CONSENT  # the first volume for this server: asked first
    panel.answer_consent(True)
    assert panel.wait(300)
    panel.poll()
    assert panel.state is State.DONE and not alerts, panel.status
    original, result = logic.pair
    assert original is dicom_node and result.GetName() == f"{dicom_node.GetName()} ldct-gauss s=0.7"
    assert "compare" in panel.enabled() and list(tmp_path.iterdir()) == []
    scene.Clear(0)
    assert logic.pair is None and panel.state is State.READY
    # no input, no result
    assert panel.enabled() == {"connect", "input", "model", "device", "strength"}


def test_the_compressed_upload_round_trip_is_bit_exact(scene, dicom_node, client, tmp_path):
    """The upload, a gzip NRRD written from the node's own int16 voxels, reaches the real
    server as exactly the node's HU and geometry: at strength 0 the server sends its input
    back, and every voxel, the spacing, origin and axes are the node's bit for bit."""
    logic = LowDoseCTDenoiseLogic(scene)
    hu = slicer.util.arrayFromVolume(dicom_node)
    upload = logic.export_input(dicom_node, tmp_path / "input.nrrd")
    assert upload.stat().st_size < 0.8 * hu.nbytes  # compressed
    back = read_volume(client.denoise("ldct-gauss", upload, tmp_path / "back.nrrd",
                                      {"strength": 0.0, "result_dtype": "int16"}))
    np.testing.assert_array_equal(back.hu, hu)
    assert np.array_equal(_ras_matrix(back), _matrix(dicom_node))  # oblique, too
    spacing = dicom_node.GetSpacing()
    assert back.spacing == spacing and back.origin == (-dicom_node.GetOrigin()[0],
                                                       -dicom_node.GetOrigin()[1],
                                                       dicom_node.GetOrigin()[2])


def test_an_integer_volume_is_exported_without_a_full_size_copy(scene, tmp_path):
    """int16 voxels are compressed where they lie (no NaN scan, no deep copy, no float32):
    the memory the export allocates (numpy, zlib, Python) does not grow with the volume and
    stays under 5 % of it (a float32 copy alone is 200 %)."""
    logic = LowDoseCTDenoiseLogic(scene)
    peaks = {}
    for slices in (40, 160):
        hu = np.random.default_rng(1).integers(-1000, 1500, (slices, 256, 256)).astype(np.int16)
        node = slicer.util.addVolumeFromArray(hu, name=f"int16 CT {slices}")
        tracemalloc.start()
        try:
            logic.export_input(node, tmp_path / f"{slices}.nrrd")
            peaks[slices] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(read_volume(tmp_path / f"{slices}.nrrd").hu, hu)
    assert peaks[160] - peaks[40] < hu[0].nbytes, peaks  # not even a slice more
    assert peaks[160] < 0.05 * hu.nbytes, peaks


def test_a_float_volume_is_sent_as_whole_hu(scene, tmp_path):
    """A float volume (a resampled CT) is rounded to int16 HU a slice at a time."""
    hu = np.random.default_rng(2).normal(0, 300, (3, 64, 80)).astype(np.float32)
    node = slicer.util.addVolumeFromArray(hu, name="float CT")
    node.SetSpacing(0.7, 0.8, 3.0)
    sent = read_volume(LowDoseCTDenoiseLogic(scene).export_input(node, tmp_path / "in.nrrd"))
    np.testing.assert_array_equal(sent.hu, np.rint(hu))
    assert sent.spacing == (0.7, 0.8, 3.0)


def test_a_result_with_other_geometry_is_refused(scene, dicom_node, tmp_path):
    """What the server sends back is checked before the input's geometry is put on it: a
    shifted origin, another spacing or a missing slice are refused and nothing is loaded."""
    logic = LowDoseCTDenoiseLogic(scene)
    exported = read_volume(logic.export_input(dicom_node, tmp_path / "input.nrrd"))
    origin = np.asarray(exported.origin)
    spacing = np.asarray(exported.spacing)
    wrong = {"origin": exported.with_hu(exported.hu), "spacing": exported.with_hu(exported.hu),
             "slices": crop_slices(exported, exported.hu.shape[0] - 1)[0]}
    wrong["origin"].origin = tuple(origin + np.array([0.0, 0.0, 2.0]))
    wrong["spacing"].spacing = tuple(spacing * np.array([1.0, 1.0, 1.01]))
    before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    for kind, volume in wrong.items():
        path = write_volume(volume, tmp_path / f"{kind}.nrrd", dtype="int16")
        with pytest.raises(GeometryMismatch, match="another geometry"):
            logic.load_result(path, dicom_node, "vagan")
        assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before, kind
    same = write_volume(exported, tmp_path / "same.nrrd", dtype="int16")
    assert logic.load_result(same, dicom_node, "vagan") is not None  # the right one loads


def test_windows_stay_in_sync_and_presets_apply_to_both(scene, dicom_node, client,
                                                        tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    result = _denoise(logic, dicom_node, client, tmp_path, model="ldct-gauss")
    logic.show_side_by_side(dicom_node, result, "Abdomen")
    assert result.GetDisplayNode().GetWindow() == 350.0
    dicom_node.GetDisplayNode().SetWindowLevel(150.0, 60.0)  # the user drags the left window
    assert (result.GetDisplayNode().GetWindow(), result.GetDisplayNode().GetLevel()) == (150, 60)
    result.GetDisplayNode().SetWindowLevel(380.0, 20.0)  # ... or the right one
    assert dicom_node.GetDisplayNode().GetWindow() == 380.0
    logic.apply_window("Liver narrow")  # where lesion conspicuity and noise are judged
    for node in (dicom_node, result):
        assert (node.GetDisplayNode().GetWindow(), node.GetDisplayNode().GetLevel()) == (150, 60)
    logic.apply_window("Volume")  # the window that came with the DICOM series
    for node in (dicom_node, result):
        assert (node.GetDisplayNode().GetWindow(),
                node.GetDisplayNode().GetLevel()) == DICOM_WINDOW
    logic.cleanup()
    dicom_node.GetDisplayNode().SetWindowLevel(100.0, 0.0)
    assert result.GetDisplayNode().GetWindow() == DICOM_WINDOW[0]  # no longer linked


def test_difference_view_and_flicker(scene, dicom_node, client, tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    result = _denoise(logic, dicom_node, client, tmp_path, model="ldct-gauss")
    logic.show_side_by_side(dicom_node, result)
    diff = logic.show_difference(True)
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == diff.GetID()
    np.testing.assert_allclose(slicer.util.arrayFromVolume(diff),
                               slicer.util.arrayFromVolume(result).astype(np.float32)
                               - slicer.util.arrayFromVolume(dicom_node))
    assert diff.GetDisplayNode().GetLevel() == 0.0 and diff.GetDisplayNode().GetWindow() >= 20
    assert np.array_equal(_matrix(diff), _matrix(dicom_node))
    assert logic.show_difference(True).GetID() == diff.GetID()  # made once
    logic.show_difference(False)
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == result.GetID()
    assert logic.flicker() == "denoised"
    assert logic.composite_node(LEFT).GetBackgroundVolumeID() == result.GetID()
    assert logic.flicker() == "original"
    assert logic.composite_node(LEFT).GetBackgroundVolumeID() == dicom_node.GetID()


def test_axial_and_coronal_layout_with_view_labels(scene, dicom_node, tmp_path):
    """2x2: original | denoised axial on top, coronal below, each view labelled with what it
    shows; strength, flicker and difference keep every view and label right."""
    logic = LowDoseCTDenoiseLogic(scene)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan", 0.8)
    logic.show_side_by_side(dicom_node, result, "Liver", "Axial + coronal")
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == LAYOUT_ID_BASE + 1

    def views() -> dict:
        return {view: (logic.slice_node(view).GetOrientationString(),
                       logic.composite_node(view).GetBackgroundVolumeID(),
                       logic.slice_node(view).GetLayoutLabel())
                for view in ("Red", "Yellow", "Green", "Green2")}

    original, denoised = dicom_node.GetID(), result.GetID()
    assert views() == {"Red": ("Axial", original, "original"),
                       "Yellow": ("Axial", denoised, "pan s=0.8"),
                       "Green": ("Coronal", original, "original"),
                       "Green2": ("Coronal", denoised, "pan s=0.8")}
    assert all(logic.composite_node(v).GetHotLinkedControl() for v in ("Green", "Green2"))
    logic.set_strength(0.5)
    assert views()["Green2"] == ("Coronal", denoised, "pan s=0.5")
    assert logic.flicker() == "denoised"
    assert views()["Red"][1:] == views()["Green"][1:] == (denoised, "pan s=0.5")
    logic.flicker()
    difference = logic.show_difference(True).GetID()
    assert views()["Yellow"][1:] == views()["Green2"][1:] == (difference, "difference")
    assert views()["Green"][1:] == (original, "original")
    logic.set_layout("Side by side")  # what is shown stays
    assert layout.GetViewArrangement() == LAYOUT_ID_BASE
    assert views()["Yellow"][1:] == (difference, "difference")
    with pytest.raises(ValueError, match="unknown layout"):
        logic.set_layout("Four up")


def _server_result(logic, node, folder: Path, name: str, offset: float):
    """A full-strength result as the server writes it (int16, the input's geometry): the
    input with a known change, so every blend has a known value."""
    exported = read_volume(logic.export_input(node, folder / f"{name}-in.nrrd"))
    rng = np.random.default_rng(len(name))
    changed = exported.hu + offset + rng.normal(0, 30, exported.hu.shape)
    path = write_volume(exported.with_hu(changed), folder / f"{name}.nrrd", dtype="int16")
    return path, read_volume(path).hu


def test_strength_is_blended_here_and_names_carry_model_and_strength(scene, dicom_node,
                                                                     tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    original = slicer.util.arrayFromVolume(dicom_node).astype(np.float32)
    path, full = _server_result(logic, dicom_node, tmp_path, "pan", 7.0)
    result = logic.load_result(path, dicom_node, "pan", 0.8)
    logic.show_side_by_side(dicom_node, result)
    name = dicom_node.GetName()
    assert result.GetName() == f"{name} pan s=0.8"
    blended = slicer.util.arrayFromVolume(result)
    assert blended.dtype == np.int16  # whole HU, as the derived DICOM series stores it
    np.testing.assert_allclose(blended, original + np.float32(0.8) * (full - original),
                               atol=0.5)  # rounded, not truncated (that is up to 1 HU)
    assert logic.set_strength(0.3) == f"{name} pan s=0.3"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(result),
                               original + np.float32(0.3) * (full - original), atol=0.5)
    logic.set_strength(1.0)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result), full)
    again = logic.load_result(path, dicom_node, "pan", 1.0)  # the same model and strength
    assert again.GetName() == f"{name} pan s=1_1" and result.GetName() == f"{name} pan s=1"
    assert np.array_equal(_matrix(again), _matrix(dicom_node))


def test_local_strength_matches_the_servers_blend(scene, dicom_node, client, tmp_path):
    """The panel asks the server once for the full-strength result (int16) and blends any
    strength here; the server's own blend at that strength (float32) is within 0.5 HU."""
    logic = LowDoseCTDenoiseLogic(scene)
    upload = logic.export_input(dicom_node, tmp_path / "input.nrrd")
    full = client.denoise("vagan", upload, tmp_path / "full.nrrd",
                         {"strength": 1.0, "result_dtype": "int16"})
    result = logic.load_result(full, dicom_node, "vagan", 1.0)
    logic.show_side_by_side(dicom_node, result)
    for strength in (0.6, 0.25):
        server = read_volume(client.denoise("vagan", upload, tmp_path / f"s{strength}.nrrd",
                                            {"strength": strength,
                                             "result_dtype": "float32"}))
        logic.set_strength(strength)
        local = slicer.util.arrayFromVolume(result)
        gap = np.abs(local - server.hu).max()
        assert gap <= 0.5 * strength + 0.5 + 0.01, (strength, gap)  # both int16 roundings
        # the blend differs from the input, so a gap this small is not trivially met
        assert np.abs(server.hu - slicer.util.arrayFromVolume(dicom_node)).max() > 5


def test_each_result_shows_its_own_difference(scene, dicom_node, tmp_path):
    """Two results of one model at two strengths: each difference is its own result's (a
    difference found by name showed the first one next to the second result)."""
    logic = LowDoseCTDenoiseLogic(scene)
    original = slicer.util.arrayFromVolume(dicom_node).astype(np.float32)
    path, full = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    first = logic.load_result(path, dicom_node, "pan", 1.0)
    logic.show_side_by_side(dicom_node, first)
    first_diff = logic.show_difference(True)
    second = logic.load_result(path, dicom_node, "pan", 0.5)
    logic.show_side_by_side(dicom_node, second)
    second_diff = logic.show_difference(True)
    assert second_diff.GetID() != first_diff.GetID()
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == second_diff.GetID()
    np.testing.assert_allclose(slicer.util.arrayFromVolume(second_diff),
                               np.float32(0.5) * (full - original), atol=0.5)
    name = dicom_node.GetName()
    assert (first_diff.GetName(), second_diff.GetName()) == (
        f"{name} pan s=1 difference", f"{name} pan s=0.5 difference")
    assert second.GetNodeReference("LowDoseCTDenoise.difference").GetID() == second_diff.GetID()
    logic.set_strength(0.2)  # the difference shown follows the result's strength
    np.testing.assert_allclose(slicer.util.arrayFromVolume(second_diff),
                               np.float32(0.2) * (full - original), atol=0.5)
    assert second_diff.GetName() == f"{name} pan s=0.2 difference"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(first_diff), full - original,
                               atol=1e-3)  # the first pair's is untouched


def test_results_live_in_the_inputs_study_ready_for_dicom_export(scene, dicom_node,
                                                                 tmp_path):
    """Slicer's DICOM export takes a series' parent as its study and the study's parent as
    its patient ("Unable to get study for series" otherwise): result and difference go
    under the input's study, marked as derived series."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anon^Patient")
    study = sh.CreateStudyItem(patient, "CT abdomen")
    series = sh.GetItemByDataNode(dicom_node) or sh.CreateItem(study, dicom_node)
    sh.SetItemParent(series, study)  # as the DICOM module loads a series
    sh.SetItemAttribute(series, "DICOM.Modality", "CT")
    logic = LowDoseCTDenoiseLogic(scene)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan", 0.8)
    logic.show_side_by_side(dicom_node, result)
    difference = logic.show_difference(True)
    for node in (result, difference):
        item = sh.GetItemByDataNode(node)
        assert sh.GetItemParent(item) == study and sh.GetItemLevel(study) == "Study"
        assert sh.GetItemParent(study) == patient and sh.GetItemLevel(patient) == "Patient"
        assert sh.GetItemAttribute(item, "DICOM.Modality") == "CT"
        assert sh.GetItemAttribute(item, "DICOM.ImageType") == "DERIVED\\SECONDARY"
    item = sh.GetItemByDataNode(result)
    assert sh.GetItemAttribute(item, "DICOM.DerivationDescription") == (
        "Denoised with pan (s=0.8) by ldct")
    logic.set_strength(0.4)
    assert sh.GetItemAttribute(item, "DICOM.SeriesDescription") == result.GetName()
    assert "(s=0.4)" in sh.GetItemAttribute(item, "DICOM.DerivationDescription")
    assert "s=0.4 difference" in sh.GetItemAttribute(sh.GetItemByDataNode(difference),
                                                     "DICOM.SeriesDescription")


def test_scene_close_drops_every_reference(scene, dicom_node, tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    closed = []
    logic.on_scene_closed = lambda: closed.append(True)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan", 0.8)
    logic.show_side_by_side(dicom_node, result)
    logic.show_difference(True)
    full = weakref.ref(logic._full[1])  # the downloaded voxels, kept for local blends
    scene.Clear(0)
    assert closed == [True] and logic.pair is None and logic.own_windows == {}
    gc.collect()
    assert full() is None
    for action in (logic.flicker, lambda: logic.set_strength(0.5),
                   lambda: logic.show_difference(True)):
        with pytest.raises(RuntimeError, match="Denoise a volume first"):
            action()
    logic.cleanup()
    scene.Clear(0)
    assert closed == [True]  # a closed module no longer follows the scene


def test_bad_volumes_are_refused_before_any_upload(scene, tmp_path):
    logic = LowDoseCTDenoiseLogic(scene)
    with pytest.raises(ValueError, match="Select a CT volume"):
        logic.export_input(None, tmp_path / "x.nrrd")
    small = slicer.util.addVolumeFromArray(np.zeros((1, 32, 32), np.int16), name="thumb")
    with pytest.raises(ValueError, match="not a CT volume"):
        logic.export_input(small, tmp_path / "x.nrrd")
    nan = slicer.util.addVolumeFromArray(np.full((2, 64, 64), np.nan, np.float32), name="nan")
    with pytest.raises(ValueError, match="NaN"):
        logic.export_input(nan, tmp_path / "x.nrrd")
    assert not (tmp_path / "x.nrrd").exists()
    with pytest.raises(RuntimeError, match="Denoise a volume first"):
        logic.flicker()


def _render(logic: LowDoseCTDenoiseLogic, path: Path) -> None:
    """What the two views show (their background volumes, middle axial slice, each through its
    display node's window), as one PNG: original | denoised."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4), facecolor="black")
    for ax, view in zip(axes, (LEFT, RIGHT)):
        node = logic.scene.GetNodeByID(logic.composite_node(view).GetBackgroundVolumeID())
        display = node.GetDisplayNode()
        array = slicer.util.arrayFromVolume(node)
        width, level = display.GetWindow(), display.GetLevel()
        ax.imshow(array[array.shape[0] // 2], cmap="gray",  # rows: anterior at the top
                  vmin=level - width / 2, vmax=level + width / 2)
        ax.set_title(f"{view}: {node.GetName()}\nW{width:g} / L{level:g}", color="white",
                     fontsize=10)
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
    assert path.stat().st_size > 10_000
