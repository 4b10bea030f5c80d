"""The Slicer reader-study panel's logic: the pure-Python session against a real server, the
blinded A/B views on real MRML."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from conftest import free_port, running, serve_command
from LowDoseCTDenoiseLib import (
    AuthenticationFailed,
    DenoiseController,
    ReaderSession,
    StudyClient,
    StudyController,
    StudyState,
    UrlHistory,
)
from LowDoseCTDenoiseLib.logic import LEFT, RIGHT, LowDoseCTDenoiseLogic

from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose
from ldct.study.definition import parse
from ldct.study.service import StudyService


@pytest.fixture(scope="module")
def study_url(tmp_path_factory):
    """A server whose study root holds a prepared pairs study for readers r1, r2 and r3."""
    folder = tmp_path_factory.mktemp("slicer-study")
    root = folder / "studies"
    noisy = simulate_low_dose(make_phantom(size=256, slices=2, pixel_mm=0.78).volume,
                              LowDoseParams(dose=0.1),
                              seed=3, progress=False)
    write_volume(noisy, folder / "c.nrrd", dtype="int16")
    definition = parse({
        "name": "Panel study", "seed": 1, "presentation": "pairs", "readers": ["r1", "r2", "r3"],
        "window": {"width": 350, "level": 50},
        "cases": [{"id": "c", "image": str(folder / "c.nrrd")}],
        "conditions": [{"name": "original"}, {"name": "smooth", "model": "ldct-gauss"},
                       {"name": "half", "model": "ldct-gauss", "strength": 0.5}],
        "criteria": [{"name": "noise", "question": "Noise", "anchors": {1: "bad", 5: "good"}}]})
    readers = StudyService(root).create(definition)["reader_tokens"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(str(folder), port, "--models", "ldct-gauss", "--study-root",
                               str(root)), f"{url}/health", folder / "server.log"):
        yield url, readers


@pytest.fixture()
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)


def test_reader_panel_scores_blinded_items_and_resumes(study_url, scene, tmp_path):
    url, readers = study_url
    client = StudyClient(url, token=readers["r1"])
    assert [s["study"] for s in client.studies()] == ["panel-study"]
    session = ReaderSession(client, "panel-study", "r1")
    assert session.progress_text() == "Item 1 of 2" and session.forced_choice
    assert session.window == (350.0, 50.0)
    logic = LowDoseCTDenoiseLogic(scene)
    files = session.load_next(tmp_path)
    a, b = logic.show_study_item(files, session.window)
    assert (a.GetName(), b.GetName()) == ("A", "B")
    assert logic.composite_node(LEFT).GetBackgroundVolumeID() == a.GetID()
    assert logic.composite_node(RIGHT).GetBackgroundVolumeID() == b.GetID()
    assert all(logic.composite_node(v).GetHotLinkedControl() for v in (LEFT, RIGHT))
    for node in (a, b):
        assert (node.GetDisplayNode().GetWindow(), node.GetDisplayNode().GetLevel()) == (350, 50)
    with pytest.raises(ValueError, match="Choose which image"):
        session.answer({"A": {"noise": 4}, "B": {"noise": 2}})
    with pytest.raises(ValueError, match="missing B: noise"):
        session.answer({"A": {"noise": 4}}, "A")
    ack = session.answer({"A": {"noise": 4}, "B": {"noise": 2}}, "A")
    assert ack["acknowledged"] and session.progress_text() == "Item 2 of 2"

    resumed = ReaderSession(StudyClient(url, token=readers["r1"]), "panel-study", "r1")  # a break
    assert (resumed.done, resumed.total) == (1, 2)
    files = resumed.load_next(tmp_path)
    nodes = logic.show_study_item(files, resumed.window)
    assert [n.GetName() for n in nodes] == ["A", "B"]
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    assert volumes == 2  # the previous item's volumes are gone
    assert not np.array_equal(slicer.util.arrayFromVolume(nodes[0]),
                              slicer.util.arrayFromVolume(nodes[1]))
    resumed.answer({"A": {"noise": 3}, "B": {"noise": 3}}, "B")
    assert resumed.finished and resumed.load_next(tmp_path) == {}


def test_unknown_reader_gets_the_reason(study_url):
    url, readers = study_url
    with pytest.raises(AuthenticationFailed, match="HTTP 403.*not reader 'someone'"):
        ReaderSession(StudyClient(url, token=readers["r1"]), "panel-study", "someone")
    with pytest.raises(AuthenticationFailed, match="HTTP 401.*needs a token"):
        ReaderSession(StudyClient(url), "panel-study", "r1")
    with pytest.raises(ValueError, match="reader id"):
        ReaderSession(StudyClient(url, token=readers["r1"]), "panel-study", "  ")


def test_reader_panel_clicks_run_off_the_gui_thread(study_url, scene, tmp_path):
    """The panel's Reader study section (StudyController) with reader r2: each click returns
    while its worker talks to the server; an incomplete answer is refused before sending."""
    url, readers = study_url
    alerts, items = [], []
    logic = LowDoseCTDenoiseLogic(scene)
    panel = StudyController(logic, lambda kind, text: alerts.append(text), tmp_path,
                            on_item=items.append)

    def settle():
        assert panel.wait(60)
        panel.poll()

    panel.start(url, readers["r2"], "", "r2")
    assert alerts == ["Refresh the studies and pick one first."] and not panel.working
    panel.refresh(url, readers["r2"])
    settle()
    assert panel.view().studies == (("Panel study", "panel-study"),)
    panel.start(url, readers["r2"], "panel-study", "r2")
    assert panel.state is StudyState.LOADING and panel.enabled() == frozenset()
    settle()
    assert panel.state is StudyState.SCORING and panel.view().progress == "Item 1 of 2"
    assert len(items) == 1 and "submit" in panel.enabled()
    assert sorted(n.GetName() for n in slicer.util.getNodesByClass(
        "vtkMRMLScalarVolumeNode")) == ["A", "B"]
    panel.submit({"A": {"noise": 4}}, "A")  # B not scored: refused here, nothing sent
    assert "missing B: noise" in alerts[-1] and panel.state is StudyState.SCORING
    assert panel.session.done == 0
    for choice in ("A", "B"):
        panel.submit({"A": {"noise": 4}, "B": {"noise": 2}}, choice)
        settle()
    assert panel.state is StudyState.FINISHED and len(items) == 2
    assert panel.view().progress == "All 2 items scored. Thank you."
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_a_study_item_is_blinded_from_compare_tools_and_a_closed_scene_resets_the_panel(
        study_url, scene, tmp_path):
    """While A/B is scored, no compare tool of the Denoise panel may act on it (a difference
    or a flicker shows which side is processed); closing the scene resets the study panel
    (no Submit on an item that is gone), and Start resumes where the server has it."""
    url, readers = study_url
    logic = LowDoseCTDenoiseLogic(scene)
    alerts = []
    study = StudyController(logic, lambda kind, text: alerts.append(text), tmp_path)
    denoise = DenoiseController(logic, UrlHistory(), lambda kind, text: alerts.append(text),
                                temp_root=str(tmp_path))
    logic.on_scene_closed = lambda: (denoise.scene_closed(), study.scene_closed())  # the widget
    study.start(url, readers["r3"], "panel-study", "r3")
    assert study.wait(60)
    study.poll()
    assert study.state is StudyState.SCORING and logic.pair is not None
    assert {"compare", "pacs", "remove"}.isdisjoint(denoise.enabled())
    shown = logic.composite_node("Yellow").GetBackgroundVolumeID()
    denoise.show_difference(True)
    denoise.flicker()
    denoise.press("Space")
    denoise.set_auto_flicker(True)
    assert logic.composite_node("Yellow").GetBackgroundVolumeID() == shown
    assert logic.composite_node("Red").GetBackgroundVolumeID() != shown
    assert not logic.difference_shown and not denoise.auto_flicker
    scene.Clear(0)
    assert study.state is StudyState.IDLE and "submit" not in study.enabled()
    assert study.session is None and study.progress.startswith("The scene was closed")
    study.start(url, readers["r3"], "panel-study", "r3")
    assert study.wait(60)
    study.poll()
    assert study.state is StudyState.SCORING and not alerts
