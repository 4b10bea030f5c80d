"""A job and the scene that changes under it, on real MRML (slicer-core): the real Logic and
controller, a server that holds /infer until the test lets it answer.

Two patients' CTs of the same grid (another phase, the normal-dose twin, a second patient
of the same size): whatever the user selects, changes or deletes while A is denoised, the
result is A's, under Patient A, or nothing at all; the panel never stays stuck.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import slicer
from LowDoseCTDenoiseLib import DenoiseController, State, UrlHistory
from LowDoseCTDenoiseLib.logic import LowDoseCTDenoiseLogic
from test_slicer_client import DENOISER_INFO, fake_server  # noqa: F401 - the fixture
from test_slicer_logic import scene  # noqa: F401 - the fixture

SHAPE = (3, 64, 64)


def _patient(scene, name: str, value: int):  # noqa: F811
    """A CT volume under ``Patient <name>`` / ``Patient <name> study``, as the DICOM module
    loads one; every patient's has the same grid."""
    hu = np.full(SHAPE, value, np.int16)
    hu[:, 20:40, 20:40] = value + 60
    node = slicer.util.addVolumeFromArray(hu, name=f"patient {name} CT",
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    node.SetSpacing(0.8, 0.8, 3.0)
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), f"Patient {name}")
    study = sh.CreateStudyItem(patient, f"Patient {name} study")
    item = sh.GetItemByDataNode(node) or sh.CreateItem(study, node)
    sh.SetItemParent(item, study)
    return node, patient, study


@pytest.fixture()
def two_patients(scene, fake_server, tmp_path):  # noqa: F811 - the imported fixture
    """Patients A and B in the scene, a panel connected to a server whose /infer answers
    (when released) with A's volume minus 5 HU: the result of denoising A."""
    url, handler = fake_server
    a, b = _patient(scene, "A", -20), _patient(scene, "B", 40)
    logic = LowDoseCTDenoiseLogic(scene)
    answer = logic.export_input(a[0], tmp_path / "answer.nrrd")
    raw = slicer.util.arrayFromVolume(a[0]).copy()
    answer_volume = slicer.util.addVolumeFromArray(raw - 5, name="tmp")
    answer_volume.SetSpacing(0.8, 0.8, 3.0)
    answer = logic.export_input(answer_volume, tmp_path / "answer.nrrd")
    scene.RemoveNode(answer_volume)
    handler.routes = {"/info/": (200, DENOISER_INFO), "/infer/m": (200, answer.read_bytes())}
    alerts = []
    panel = DenoiseController(logic, UrlHistory(),
                              lambda kind, text: alerts.append(text),
                              temp_root=str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    logic.on_node_removed = panel.node_removed  # as the widget wires them
    panel.connect(url, "")
    assert panel.wait(10)
    panel.poll()
    panel.select_input(a[0])
    yield panel, logic, handler, alerts, a, b
    handler.release.set()
    panel.close()
    logic.cleanup()


def _denoise(panel) -> None:
    panel.denoise()
    if panel.state is State.CONSENT:  # the first volume for this server
        panel.answer_consent(True)


def _finish(panel) -> None:
    assert panel.wait(30)
    panel.poll()


def _volumes(scene) -> list[str]:  # noqa: F811
    kind = "vtkMRMLScalarVolumeNode"
    return sorted(scene.GetNthNodeByClass(k, kind).GetName()
                  for k in range(scene.GetNumberOfNodesByClass(kind)))


def _placed(scene, node) -> tuple[str, str]:  # noqa: F811
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    study = sh.GetItemParent(sh.GetItemByDataNode(node))
    return sh.GetItemName(sh.GetItemParent(study)), sh.GetItemName(study)


def test_b_selected_while_a_is_denoised_the_result_is_as(scene, two_patients):  # noqa: F811
    panel, logic, handler, alerts, (a, *_), (b, *_) = two_patients
    _denoise(panel)
    assert panel.state is State.DENOISING
    assert {"input", "strength"}.isdisjoint(panel.enabled())  # the widget greys them out
    panel.select_input(b)  # what the selector's signal does if it fires anyway
    handler.release.set()
    _finish(panel)
    assert panel.state is State.DONE and not alerts, panel.status
    original, result = logic.pair
    assert original is a and result.GetName() == "patient A CT m s=1"
    assert _placed(scene, result) == ("Patient A", "Patient A study")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result),
                                  slicer.util.arrayFromVolume(a) - 5)
    assert _volumes(scene) == ["patient A CT", "patient A CT m s=1", "patient B CT"]


def test_a_input_moved_to_another_study_during_the_job_keeps_its_study(scene, two_patients):  # noqa: F811
    """The study is captured when the job starts: the result is filed where A was sent from."""
    panel, logic, handler, alerts, (a, _, a_study), (b, _, b_study) = two_patients
    _denoise(panel)
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    sh.SetItemParent(sh.GetItemByDataNode(a), b_study)  # dragged in the Data module
    handler.release.set()
    _finish(panel)
    assert _placed(scene, logic.pair[1]) == ("Patient A", "Patient A study")


def test_deleting_a_during_its_job_cancels_it_creates_nothing_and_the_panel_works(
        scene, two_patients):  # noqa: F811
    panel, logic, handler, alerts, (a, *_), (b, *_) = two_patients
    _denoise(panel)
    scene.RemoveNode(a)  # Data module > Delete
    assert panel.state is State.CANCELLING and panel.input is None
    handler.release.set()
    _finish(panel)
    assert panel.state is State.CANCELLED and not alerts
    assert panel.status == ("'patient A CT' was deleted while it was being denoised: the job "
                            "was cancelled and nothing was created.")
    assert _volumes(scene) == ["patient B CT"]
    assert logic.pair is None and not panel.working
    panel.cancel()  # nothing to cancel: no exception, nothing changes
    panel.select_input(b)  # the panel is usable: B is denoised
    handler.release.clear()
    handler.held = ()
    _denoise(panel)
    _finish(panel)
    assert panel.state is State.DONE and logic.pair[0] is b, panel.status
    assert _placed(scene, logic.pair[1]) == ("Patient B", "Patient B study")


def test_deleting_the_result_or_its_difference_leaves_no_reference(scene, two_patients):  # noqa: F811
    panel, logic, handler, alerts, (a, *_), _ = two_patients
    handler.held = ()
    _denoise(panel)
    _finish(panel)
    panel.show_difference(True)
    difference = logic.pair[1].GetNodeReference("LowDoseCTDenoise.difference")
    scene.RemoveNode(difference)
    assert not logic.difference_shown and panel.state is State.DONE
    assert logic.node_ids(a)["difference"] == ""
    scene.RemoveNode(logic.pair[1])
    assert logic.pair is None and logic._full is None
    assert panel.state is State.READY and panel.status == "'patient A CT m s=1' was deleted."
    assert {"compare", "pacs"}.isdisjoint(panel.enabled())
    state = panel.panel_state()  # what the parameter node keeps
    assert (state.input, state.original, state.result, state.difference) == (a.GetID(), "", "",
                                                                             "")
    logic.save_state(state)  # as the widget does after each render
    parameters = logic.parameter_node()
    assert [parameters.GetNodeReferenceID(role) for role in ("original", "result",
                                                             "difference")] == [None] * 3
    scene.RemoveNode(a)
    assert panel.input is None and "denoise" not in panel.enabled()


def test_the_result_is_read_and_blended_on_the_worker(scene, two_patients):  # noqa: F811
    """The file is decompressed and blended off the GUI thread; the GUI thread only puts the
    worker's image in a node (the very same vtkImageData, no copy)."""
    panel, logic, handler, alerts, (a, *_), _ = two_patients
    reads = []
    read = logic.read_result

    def recorded(path, export, strength):
        reads.append((threading.current_thread() is threading.main_thread(),
                      read(path, export, strength)))
        return reads[-1][1]
    logic.read_result = recorded
    handler.held = ()
    panel.set_strength(0.6)
    _denoise(panel)
    _finish(panel)
    assert panel.state is State.DONE, panel.status
    (on_main, prepared), = reads
    assert not on_main
    result = logic.pair[1]
    assert result.GetImageData() is prepared.shown and prepared.strength == 0.6
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result),
                                  slicer.util.arrayFromVolume(a) - 3)  # 0.6 x -5 = -3 HU


def test_hidden_differences_and_removed_results_leave_nothing_behind(scene, two_patients):  # noqa: F811
    """A display node left in the scene keeps its volume's voxels alive (its pipeline holds
    them): hiding the difference and removing results take their display nodes too."""
    panel, logic, handler, alerts, (a, *_), _ = two_patients
    handler.held = ()

    def counts() -> tuple[int, int]:
        return (scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"),
                scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeDisplayNode"))
    inputs = counts()
    _denoise(panel)
    _finish(panel)
    shown = counts()
    assert shown == (inputs[0] + 1, inputs[1] + 1)
    panel.show_difference(True)
    assert counts() == (shown[0] + 1, shown[1] + 1)
    panel.show_difference(False)
    assert counts() == shown
    panel.remove_results()
    assert counts() == inputs and panel.status == "Removed 1 result of 'patient A CT'."


def _held_blends(logic) -> tuple[threading.Event, list]:
    """Every blend the panel starts waits on its worker until the gate opens, then records
    (strength, whether it ran on the main thread, what it made)."""
    gate, ran = threading.Event(), []
    make = logic.blend_job

    def blend_job(strength):
        run = make(strength)

        def held():
            assert gate.wait(30), "the test never opened the gate"
            on_main = threading.current_thread() is threading.main_thread()
            ran.append((strength, on_main, run()))
            return ran[-1][2]
        return held
    logic.blend_job = blend_job
    return gate, ran


def _shown_with_held_blends(panel, logic, handler) -> tuple:
    """A's result shown at full strength: (its node, its image, the gate, the blends run)."""
    handler.held = ()
    _denoise(panel)
    _finish(panel)
    result = logic.pair[1]
    return (result, result.GetImageData(), *_held_blends(logic))


def test_strength_moves_are_blended_on_the_worker_and_the_latest_wins(scene, two_patients):  # noqa: F811
    """Quick slider moves while a blend runs: nothing is computed on the GUI thread (the
    difference shown neither), the blend of an older strength is dropped and only the latest
    strength is shown."""
    panel, logic, handler, alerts, (a, *_), _ = two_patients
    result, full, gate, ran = _shown_with_held_blends(panel, logic, handler)
    panel.show_difference(True)
    shown = result.GetNodeReference("LowDoseCTDenoise.difference")
    assert set(np.unique(slicer.util.arrayFromVolume(shown))) == {-5}
    for strength in (0.2, 0.4, 0.6):  # one blend runs; the others wait for it
        panel.set_strength(strength)
    assert panel.blending and result.GetImageData() is full and "pacs" not in panel.enabled()
    gate.set()
    _finish(panel)  # the 0.2 blend ends: dropped, the latest (0.6) starts
    assert result.GetImageData() is full and panel.blending
    _finish(panel)
    assert [r[:2] for r in ran] == [(0.2, False), (0.6, False)]
    assert not panel.blending and not alerts
    made = ran[-1][2]  # the worker's images are the nodes' own: no work left on the GUI thread
    assert result.GetImageData() is made.image and shown.GetImageData() is made.difference
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result),
                                  slicer.util.arrayFromVolume(a) - 3)  # 0.6 x -5 = -3 HU
    assert set(np.unique(slicer.util.arrayFromVolume(shown))) == {-3}
    assert shown.GetName() == "patient A CT m s=0.6 difference"
    assert panel.status == "Strength 0.6 blended locally: 'patient A CT m s=0.6'."
    assert "pacs" in panel.enabled()


def test_a_result_deleted_while_it_is_blended_gets_nothing_and_the_panel_works(
        scene, two_patients):  # noqa: F811
    panel, logic, handler, alerts, (a, *_), _ = two_patients
    result, full, gate, ran = _shown_with_held_blends(panel, logic, handler)
    panel.set_strength(0.6)
    scene.RemoveNode(result)  # Data module > Delete, while the worker blends
    assert panel.state is State.READY
    gate.set()
    _finish(panel)
    assert [r[:2] for r in ran] == [(0.6, False)] and not panel.blending and not alerts
    assert result.GetImageData() is full and logic.pair is None
    assert _volumes(scene) == ["patient A CT", "patient B CT"]
    assert panel.status == ("'patient A CT m s=1' was deleted or replaced while strength 0.6 "
                            "was blended: nothing was changed.")
    _denoise(panel)  # the panel is usable
    _finish(panel)
    assert panel.state is State.DONE and logic.pair[0] is a, panel.status
