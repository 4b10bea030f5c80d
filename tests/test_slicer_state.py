"""The panel's state kept with the scene (parameter node), the Logic's observers and the
views' labels, on real MRML scenes (slicer-core); the state's string round trip in pure
Python."""

from __future__ import annotations

import math

import pytest
import slicer
import vtk
from LowDoseCTDenoiseLib import DenoiseController, State, UrlHistory
from LowDoseCTDenoiseLib.display import LAYOUT_ID_BASE
from LowDoseCTDenoiseLib.logic import LEFT, RIGHT, LowDoseCTDenoiseLogic
from LowDoseCTDenoiseLib.state import NODE_ROLES, PanelState
from test_slicer_logic import (  # noqa: F401 - the fixtures
    _server_result,
    dicom_node,
    low_dose_case,
    scene,
)

STATE = PanelState("vagan", 0.35, "Liver narrow", "Axial + coronal", "vtkMRMLScalarVolumeNode1",
                   "vtkMRMLScalarVolumeNode1", "vtkMRMLScalarVolumeNode2",
                   "vtkMRMLScalarVolumeNode3")


def test_the_state_round_trips_through_strings_as_a_parameter_node_holds_them():
    strings = STATE.to_strings()
    assert all(isinstance(v, str) for v in strings.values()) and strings["strength"] == "0.35"
    assert PanelState.from_strings(strings) == STATE
    assert PanelState.from_strings({}) == PanelState()  # a scene without the module's node


@pytest.mark.parametrize("field, value", [("strength", "strong"), ("strength", "1.5"),
                                          ("strength", "nan"), ("window", "Brain"),
                                          ("layout", "Four up")])
def test_a_value_not_understood_keeps_its_default(field, value):
    """A scene from another version or an edited file: the rest is still restored."""
    restored = PanelState.from_strings({**STATE.to_strings(), field: value})
    assert getattr(restored, field) == getattr(PanelState(), field)
    assert restored.model == "vagan" and restored.result == STATE.result


def test_a_real_parameter_node_holds_the_state_as_the_wrapper_stores_it(scene):  # noqa: F811
    """One singleton vtkMRMLScriptedModuleNode; strings as parameters, nodes as an empty
    parameter plus a node reference of the same name (Slicer's parameterNodeWrapper)."""
    logic = LowDoseCTDenoiseLogic(scene)
    volumes = [scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode") for _ in range(3)]
    ids = [v.GetID() for v in volumes]
    state = PanelState("vagan", 0.35, "Liver narrow", "Axial + coronal", ids[0], ids[0],
                       ids[1], ids[2])
    logic.save_state(state)
    node = logic.parameter_node()
    assert node is logic.parameter_node() and node.GetSingletonTag() == "LowDoseCTDenoise"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    assert node.GetModuleName() == "LowDoseCTDenoise"
    assert (node.GetParameter("strength"), node.GetParameter("window")) == ("0.35",
                                                                            "Liver narrow")
    assert node.GetParameter("result") == "" and node.GetNodeReferenceID("result") == ids[1]
    assert logic.load_state() == state
    logic.save_state(PanelState("vagan", input=ids[0]))  # a node no longer shown: no reference
    assert node.GetNodeReferenceID("result") is None and logic.load_state().result == ""
    logic.cleanup()


def _saved_scene(scene) -> str:  # noqa: F811 - the fixture's scene
    scene.SetSaveToXMLString(1)
    assert scene.Commit()
    return scene.GetSceneXMLString()


def test_scene_save_and_load_restore_the_panel(scene, dicom_node, tmp_path):  # noqa: F811
    """The panel shows a result with its difference; the scene is saved, closed and loaded
    again: the parameter node brings back model, strength, window, layout, input and the
    pair with its difference (the panel restores itself from the Logic's load event)."""
    logic = LowDoseCTDenoiseLogic(scene)
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: None,
                              temp_root=str(tmp_path))
    logic.on_scene_closed = panel.scene_closed
    logic.on_scene_loaded = lambda: panel.restore(logic.load_state())  # as the widget binds
    panel.module_shown(True)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan", 0.4)
    logic.show_side_by_side(dicom_node, result, "Abdomen", "Axial + coronal")
    logic.show_difference(True)
    panel.select_input(dicom_node)
    panel.select_model("pan")
    panel.strength, panel.window, panel.layout = 0.4, "Abdomen", "Axial + coronal"
    before = panel.panel_state()
    assert before.result == result.GetID() and before.difference != ""
    logic.save_state(before)
    xml = _saved_scene(scene)
    names = {role: scene.GetNodeByID(getattr(before, role)).GetName() for role in NODE_ROLES}

    scene.Clear(0)
    assert logic.pair is None and logic.load_state() == PanelState()
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    scene.Import()

    after = panel.panel_state()
    assert (after.model, after.strength, after.window, after.layout) == (
        "pan", 0.4, "Abdomen", "Axial + coronal")
    assert {role: scene.GetNodeByID(getattr(after, role)).GetName()
            for role in NODE_ROLES} == names
    assert panel.state is State.DONE and panel.status.startswith("Restored from the scene")
    assert panel.input.GetName() == dicom_node.GetName()
    original, shown = logic.pair
    assert logic.difference_shown and panel.view().difference
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == after.difference
    assert logic.composite_node(LEFT).GetBackgroundVolumeID() == original.GetID()
    assert logic.slice_node("Green2").GetLayoutLabel() == "difference"
    assert shown.GetDisplayNode().GetWindow() == 350.0  # Abdomen
    panel.set_strength(0.6)  # the full-strength voxels are not in a scene: said, not crashed
    assert "denoise again" in panel.status and panel.state is State.DONE
    logic.cleanup()


def _observed(logic) -> set[tuple[str, int]]:
    return {(obj.GetClassName(), event) for obj, event, *_ in logic.Observations}


def test_observers_are_removed_on_scene_close_and_cleanup(scene, dicom_node, tmp_path):  # noqa: F811
    logic = LowDoseCTDenoiseLogic(scene)
    closes = []
    logic.on_scene_closed = lambda: closes.append(True)
    scene_events = {("vtkMRMLScene", slicer.vtkMRMLScene.EndCloseEvent),
                    ("vtkMRMLScene", slicer.vtkMRMLScene.EndImportEvent),
                    ("vtkMRMLScene", slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent)}
    assert _observed(logic) == scene_events
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan")
    logic.show_side_by_side(dicom_node, result)
    displays = [n.GetDisplayNode() for n in (dicom_node, result)]
    assert _observed(logic) == scene_events | {
        ("vtkMRMLScalarVolumeDisplayNode", vtk.vtkCommand.ModifiedEvent)}
    assert {id(obj) for obj, *_ in logic.Observations} >= {id(d) for d in displays}
    logic.show_side_by_side(dicom_node, result)  # shown again: no second observer
    assert len(logic.Observations) == 5  # 3 on the scene, 2 windows
    scene.Clear(0)
    assert _observed(logic) == scene_events and closes == [True]
    logic.cleanup()
    assert logic.Observations == []
    scene.Clear(0)
    assert closes == [True]  # no longer following the scene


def test_view_labels_are_put_back_when_leaving_the_module(scene, dicom_node, tmp_path):  # noqa: F811
    logic = LowDoseCTDenoiseLogic(scene)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    logic.show_side_by_side(dicom_node, logic.load_result(path, dicom_node, "pan", 0.8))
    own = {view: logic.slice_node(view).GetLayoutLabel() for view in (LEFT, RIGHT)}
    assert own == {LEFT: "original", RIGHT: "pan s=0.8"}
    logic.set_layout("Axial + coronal")  # the module's own views get labels too
    logic.restore_view_labels()  # the module is left
    labels = {view: logic.slice_node(view).GetLayoutLabel() for view in (LEFT, RIGHT)}
    assert labels == {LEFT: "R", RIGHT: "Y"}  # Slicer's own
    logic.module_entered()  # shown again
    assert logic.slice_node(RIGHT).GetLayoutLabel() == "pan s=0.8"
    assert logic.slice_node("Green").GetLayoutLabel() == "original"
    scene.Clear(0)  # a closed scene's views say nothing of the module's
    assert all(logic.slice_node(view).GetLayoutLabel() in ("R", "Y", "G")
               for view in (LEFT, RIGHT, "Green") if logic._find(view, "vtkMRMLSliceNode"))
    logic.cleanup()


def test_a_new_result_is_shown_without_its_difference(scene, dicom_node, tmp_path):  # noqa: F811
    """'Show difference' follows: ticked for the first result, unticked for the next."""
    logic = LowDoseCTDenoiseLogic(scene)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    logic.show_side_by_side(dicom_node, logic.load_result(path, dicom_node, "pan", 0.8))
    logic.show_difference(True)
    assert logic.difference_shown
    second = logic.load_result(path, dicom_node, "pan", 0.5)
    logic.show_side_by_side(dicom_node, second)
    assert not logic.difference_shown
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == second.GetID()
    assert math.isclose(float(second.GetAttribute("LowDoseCTDenoise.strength")), 0.5)
    logic.cleanup()


def test_the_users_layout_and_views_come_back_on_exit(scene, dicom_node, tmp_path):  # noqa: F811
    """Entering keeps the user's layout, orientations and links; leaving puts them back;
    a scene loaded while the module is hidden does not switch the layout until it is shown."""
    logic = LowDoseCTDenoiseLogic(scene)
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: None,
                              temp_root=str(tmp_path))
    logic.on_scene_loaded = lambda: panel.restore(logic.load_state())
    logic._layout_node().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    yellow = logic.slice_node(RIGHT)
    yellow.SetOrientation("Coronal")  # the user's own choices
    logic.composite_node(RIGHT).SetLinkedControl(False)
    user_matrix = [yellow.GetSliceToRAS().GetElement(i, j) for i in range(4) for j in range(4)]
    logic.module_entered()
    panel.module_shown(True)
    path, _ = _server_result(logic, dicom_node, tmp_path, "pan", 5.0)
    result = logic.load_result(path, dicom_node, "pan", 0.4)
    logic.show_side_by_side(dicom_node, result, "Abdomen", "Side by side")
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == LAYOUT_ID_BASE
    assert yellow.GetOrientationString() == "Axial"
    panel.module_shown(False)
    logic.module_left()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert yellow.GetOrientationString() == "Coronal"
    assert [yellow.GetSliceToRAS().GetElement(i, j)
            for i in range(4) for j in range(4)] == user_matrix
    assert not logic.composite_node(RIGHT).GetLinkedControl()
    assert yellow.GetLayoutLabel() == "Y"
    panel.panel_state()
    logic.save_state(panel.panel_state())
    xml = _saved_scene(scene)
    scene.Clear(0)
    layout = logic._layout_node()
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    scene.Import()  # loaded while the user is in another module
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert logic.pair is None and layout.GetViewArrangement() != LAYOUT_ID_BASE
    logic.module_entered()
    panel.module_shown(True)  # shown: now the pair comes back
    assert logic.pair is not None and layout.GetViewArrangement() == LAYOUT_ID_BASE
    logic.cleanup()
