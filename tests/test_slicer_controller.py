"""The Slicer panel's state machine (pure Python) against real HTTP servers on 127.0.0.1.

Each state is reached by clicks, as a user reaches it; then every control is clicked: the
enabled ones do what they say (tested one by one below), the others change nothing. Servers
that hold a request (never answer until the test releases them) show that no click waits for
the network: the call returns while its worker is still waiting for the server.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from LowDoseCTDenoiseLib import (
    CONTROLS,
    LAYOUTS,
    SHORTCUTS,
    VOLUME_PRESET,
    WINDOW_PRESETS,
    DenoiseController,
    State,
    StudyController,
    StudyState,
    UrlHistory,
)
from LowDoseCTDenoiseLib.logic import DerivedSeries, ShownResult
from test_slicer_client import DENOISER_INFO, fake_server  # noqa: F401 - the fixture

QUICK_S = 0.5  # a click that returns within this did not wait for a server that never answers


class _Node:
    """A result node as the controller sees it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def GetName(self) -> str:  # noqa: N802 - MRML's spelling
        return self.name


class _Export:
    """A checked input as the Logic hands it over; the worker writes it (after ``gate``, when
    given, is set: a large volume still being compressed)."""

    def __init__(self, name: str, gate: threading.Event | None) -> None:
        self.name, self.gate, self.started, self.thread = name, gate, threading.Event(), None

    def write(self, path: Path, on_slice) -> Path:
        self.thread = threading.current_thread()
        on_slice(0.5)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        on_slice(1.0)
        Path(path).write_bytes(b"volume")
        return Path(path)


class FakeLogic:
    """The Logic's interface; records what the controller asks of the scene."""

    def __init__(self) -> None:
        self.pair = None
        self.difference_shown = False
        self.calls: list[tuple] = []
        self.refuse = ""  # when set, prepare_export and set_strength raise with this message
        self.exports: list[_Export] = []
        self.gate: threading.Event | None = None  # holds the worker's export until set
        self.series = ""  # the input's DICOM series UID
        self.no_study = ""  # when set, write_derived raises with this message
        self.removed: set = set()  # nodes deleted from the scene
        self.results: dict = {}  # input -> its result names
        self.reads: list[tuple] = []  # (strength, blended) of each result read
        self.released = 0  # release_full calls that freed something
        self.crash_blend = ""  # when set, apply_blend raises an unexpected error with it

    @property
    def shows_result(self) -> bool:
        return self.pair is not None and not str(self.pair[0]).startswith("study")

    def study_of(self, node) -> str:
        return f"study of {node}"

    def in_scene(self, node) -> bool:
        return node not in self.removed

    def results_of(self, node) -> list:
        return self.results.get(node, [])

    def remove_results(self, node) -> int:
        self.calls.append(("remove", node))
        if self.pair is not None and self.pair[0] == node:
            self.pair = None
        return len(self.results.pop(node, []))

    def prepare_export(self, node) -> _Export:
        self.calls.append(("export", node))
        if self.refuse:
            raise ValueError(self.refuse)
        self.exports.append(_Export(node, self.gate))
        return self.exports[-1]

    def read_result(self, path: Path, export: _Export, strength: float,
                    blended: bool = False) -> Path:
        self.reads.append((strength, blended))  # on the worker thread
        return path  # the worker's reading: the real Logic's is tested on MRML

    def load_result(self, path: Path, node, model: str, strength: float, study: str,
                    replace: bool, version: str) -> _Node:
        self.calls.append(("load", Path(path).read_bytes(), node, model, strength, study,
                           replace, version))
        result = _Node(f"{node} {model} s={strength:g}")
        self.results[node] = [result.name] + ([] if replace else self.results.get(node, []))
        return result

    def release_full(self) -> bool:
        self.released += 1
        return True

    def show_side_by_side(self, original, result, window, layout) -> None:
        self.calls.append(("show", original, result.GetName(), window, layout))
        self.pair, self.difference_shown = (original, result), False

    def set_layout(self, name: str) -> None:
        self.calls.append(("layout", name))

    def blend_job(self, strength: float):
        self.calls.append(("strength", strength))
        if self.refuse:
            raise RuntimeError(self.refuse)
        return lambda: strength  # the real blend is tested on MRML (test_slicer_jobs.py)

    def apply_blend(self, strength: float) -> str:
        self.calls.append(("applied", strength))
        if self.crash_blend:
            raise ValueError(self.crash_blend)
        return f"blend {strength:g}"

    def apply_window(self, preset) -> None:
        self.calls.append(("window", preset))

    def show_difference(self, on: bool) -> None:
        self.calls.append(("difference", on))
        self.difference_shown = on

    def shown_result(self) -> ShownResult:
        self.calls.append(("shown result",))
        return ShownResult(self.pair[1].GetName(), "m", 0.6, self.series)

    def write_derived(self, folder: Path) -> DerivedSeries:
        self.calls.append(("dicom export",))
        if self.no_study:
            raise ValueError(self.no_study)
        (folder / "IM1.dcm").write_bytes(b"dicom")
        return DerivedSeries(folder, [folder / "IM1.dcm"], self.pair[1].GetName(),
                             "CT denoised (m shipped, strength 1)")

    def flicker(self) -> str:
        self.calls.append(("flicker",))
        return "denoised"

    def show_study_item(self, files, window) -> None:
        self.calls.append(("study item", sorted(files), window))

    def clear_study_item(self) -> None:
        self.calls.append(("clear study",))


@pytest.fixture()
def panel(fake_server, tmp_path):  # noqa: F811 - the imported fixture
    url, handler = fake_server
    handler.routes = {"/info/": (200, DENOISER_INFO), "/infer/m": (200, b"denoised volume")}
    logic, alerts, shown, saved = FakeLogic(), [], [], []
    controller = DenoiseController(
        logic, UrlHistory(), lambda kind, text: alerts.append((kind, text)),
        save_history=lambda history: saved.append(list(history.urls)),
        on_shown=lambda: shown.append(True), temp_root=str(tmp_path), info_timeout=5,
        on_dicom_export=lambda item: shown.append(item))
    yield controller, url, handler, logic, alerts, shown, saved
    handler.release.set()
    controller.close()


def _settle(controller) -> None:
    """The worker's outcome, taken as the widget's timer does once the worker has ended."""
    assert controller.wait(30), "the worker did not end"
    controller.poll()


def _click_denoise(controller) -> None:
    """Denoise, agreeing to send when the panel asks (the first volume to this server)."""
    controller.denoise()
    if controller.state is State.CONSENT:
        controller.answer_consent(True)


def _reach(state: State, controller, url: str, handler) -> None:
    """Drive the panel to ``state`` by clicks."""
    if state is State.IDLE:
        return
    if state is State.CONNECTING:
        handler.held = ("/info/",)
        controller.connect(url, "")
        return
    controller.connect(url, "")
    _settle(controller)
    controller.select_input("CT")
    if state is State.READY:
        return
    if state is State.CONSENT:
        controller.denoise()
        return
    if state in (State.DONE, State.ERROR):
        if state is State.ERROR:
            handler.routes["/infer/m"] = (500, b'{"detail": "out of memory"}')
        handler.held = ()
        _click_denoise(controller)
        _settle(controller)
        return
    if state is State.SENDING:  # from a result shown, the server holds /datastore/
        handler.held = ()
        _click_denoise(controller)
        _settle(controller)
        handler.held, controller.logic.series = ("/datastore/",), "1.2.3"
        controller.send_to_pacs()
        return
    _click_denoise(controller)  # the server holds /infer
    if state is State.DENOISING:
        return
    controller.cancel()
    if state is State.CANCELLED:
        _settle(controller)


SETTLED = {"connect", "input", "model", "device", "strength", "denoise"}
ENABLED = {State.IDLE: {"connect", "input", "model", "device", "strength"},
           State.CONNECTING: set(),
           State.READY: SETTLED, State.CONSENT: set(), State.DENOISING: {"cancel"},
           State.SENDING: {"cancel", "compare"}, State.CANCELLING: set(),
           State.CANCELLED: SETTLED, State.DONE: SETTLED | {"compare", "pacs", "remove"},
           State.ERROR: SETTLED}


def test_every_control_is_enabled_in_some_state():
    assert set().union(*ENABLED.values()) == set(CONTROLS)


@pytest.mark.parametrize("state", list(State), ids=[s.name for s in State])
def test_every_click_in_every_state(panel, state):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(state, controller, url, handler)
    view = controller.view()
    assert view.state is state
    assert view.enabled == ENABLED[state]
    clicks = {"connect": [lambda: controller.connect(url, "")],
              "input": [lambda: controller.select_input("another CT")],
              "strength": [lambda: controller.set_strength(0.5)],
              "remove": [controller.remove_results],
              "denoise": [controller.denoise], "cancel": [controller.cancel],
              "consent": [] if state is State.CONSENT else [
                  lambda: controller.answer_consent(True, remember=True)],
              "compare": [lambda: controller.set_window("Abdomen"),
                          lambda: controller.set_layout("Side by side"),
                          lambda: controller.press("1"), lambda: controller.press("Space"),
                          lambda: controller.show_difference(True), controller.flicker,
                          lambda: controller.set_auto_flicker(True)],
              "pacs": [controller.send_to_pacs]}
    for control, actions in clicks.items():
        if control in view.enabled:
            continue
        for action in actions:
            before = (controller.state, controller.status, controller.connection,
                      len(handler.hits), len(logic.calls), len(alerts), controller.working,
                      list(controller.history.consented), controller.input,
                      controller.strength)
            action()
            assert (controller.state, controller.status, controller.connection,
                    len(handler.hits), len(logic.calls), len(alerts), controller.working,
                    list(controller.history.consented), controller.input,
                    controller.strength) == before, (state, control)
            assert not controller.auto_flicker


def test_connect_lists_only_denoisers_and_remembers_the_server(panel):
    controller, url, handler, _, alerts, _, saved = panel
    handler.routes["/info/"] = (200, json.dumps({"models": {
        "spleen": {"type": "segmentation", "description": "Spleen"},
        "m": {"type": "others", "description": "Gaussian", "ldct": {"kind": "baseline"}}}}
    ).encode())
    controller.connect(url + "/", "tok")
    assert controller.view().progress is None  # busy bar while the server answers
    assert controller.view().connection == f"Connecting to {url}..."
    _settle(controller)
    view = controller.view()
    assert view.state is State.READY and [m.name for m in view.models] == ["m"]
    assert view.connection == f"Connected to {url}: 1 denoisers"
    assert controller.model == "m" and saved == [[url]] and not alerts
    assert controller.server_changed("http://other:1") == ""  # another server: not connected
    assert controller.state is State.IDLE and controller.models == ()
    assert controller.server_changed(url) == "tok"  # its remembered token


def test_the_servers_recommended_denoiser_is_the_default(panel):
    controller, url, handler, *_ = panel
    handler.routes["/info/"] = (200, json.dumps({"models": {
        "a": {"type": "others", "ldct": {"kind": "network", "recommended": False}},
        "b": {"type": "others", "ldct": {"kind": "network", "recommended": True}}}}).encode())
    controller.connect(url, "tok")
    _settle(controller)
    assert [m.name for m in controller.models] == ["a", "b"] and controller.model == "b"


def test_connection_errors_leave_the_panel_not_connected(panel):
    controller, url, handler, *_ = panel
    controller.connect("127.0.0.1:8000", "")  # no scheme: said at once, nothing sent
    assert controller.state is State.IDLE and "not a server URL" in controller.connection
    assert not controller.working and handler.hits == []
    handler.routes["/info/"] = (401, b'{"detail": "Not authenticated"}')
    controller.connect(url, "wrong")
    _settle(controller)
    assert controller.state is State.IDLE and "HTTP 401" in controller.connection
    assert "denoise" not in controller.enabled()


def test_denoise_shows_the_result_then_strength_is_blended_locally(panel):
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.READY, controller, url, handler)
    controller.set_strength(0.6)  # before any result: only remembered
    controller.set_window("Liver narrow")
    controller.set_layout("Axial + coronal")
    assert logic.calls == []
    handler.held = ()
    _click_denoise(controller)
    assert controller.state is State.DENOISING and controller.working
    _settle(controller)
    assert controller.state is State.DONE and controller.view().progress == 100
    assert logic.calls == [("export", "CT"),
                           ("load", b"denoised volume", "CT", "m", 0.6, "study of CT", True,
                            "baseline"),
                           ("show", "CT", "CT m s=0.6", "Liver narrow", "Axial + coronal")]
    assert shown == [True] and not alerts
    assert controller.status.startswith("Loaded 'CT m s=0.6'. The server sent no CT-number")
    uploads = [h for h in handler.hits if h.startswith("/infer")]
    controller.set_strength(0.3)  # a result exists: blended here, nothing sent
    assert logic.calls[-1] == ("strength", 0.3) and controller.blending
    _settle(controller)
    assert logic.calls[-1] == ("applied", 0.3) and "blend 0.3" in controller.status
    assert [h for h in handler.hits if h.startswith("/infer")] == uploads
    controller.set_auto_flicker(True)
    assert controller.view().auto_flicker
    assert list(Path(controller.temp_root).iterdir()) == []  # upload and result removed


def test_the_volume_is_compressed_on_the_worker_and_cancel_stops_it(panel):
    """Compressing a large CT takes seconds: it runs on the worker (the click returns and the
    bar counts it); Cancel between two slices ends it before anything is uploaded."""
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.READY, controller, url, handler)
    logic.gate = threading.Event()
    _click_denoise(controller)
    export = logic.exports[-1]
    assert export.started.wait(10) and export.thread is not threading.current_thread()
    controller.poll()
    assert controller.status == "Compressing the volume (50 %)"
    assert controller.view().progress == 50
    controller.cancel()
    logic.gate.set()
    _settle(controller)
    assert controller.state is State.CANCELLED and not alerts
    assert not any(h.startswith("/infer") for h in handler.hits)
    assert list(Path(controller.temp_root).iterdir()) == []


def _uploads(handler) -> list[str]:
    return [h for h in handler.hits if h.startswith("/infer")]


def test_the_first_volume_for_a_server_waits_for_consent(panel):
    """Nothing leaves the workstation before the user agrees: asked once per server in a
    session; declining sends nothing and leaves the panel ready; a scene closed meanwhile
    drops the question."""
    controller, url, handler, logic, alerts, _, saved = panel
    _reach(State.READY, controller, url, handler)
    handler.held = ()
    controller.denoise()
    view = controller.view()
    assert view.state is State.CONSENT and view.enabled == frozenset()
    assert view.question.startswith(f"Send 'CT' to {url} for denoising?")
    assert "leaves this computer" in view.question and "no patient name" in view.question
    assert [c[0] for c in logic.calls] == ["export"]  # checked, not written
    assert logic.exports[-1].thread is None and not controller.working and not _uploads(handler)
    controller.answer_consent(False)
    view = controller.view()
    assert view.state is State.READY and view.question == "" and "denoise" in view.enabled
    assert view.status == "Not sent: the volume stays on this computer."
    assert not _uploads(handler) and list(Path(controller.temp_root).iterdir()) == []
    controller.denoise()  # a "no" is not remembered: asked again
    assert controller.state is State.CONSENT
    controller.scene_closed()
    assert controller.state is State.READY and controller.view().question == ""
    controller.answer_consent(True)  # the dialog of a question that is gone: ignored
    assert not controller.working and not _uploads(handler)
    controller.select_input("CT")
    controller.denoise()
    controller.answer_consent(True)  # this session only
    assert controller.state is State.DENOISING
    _settle(controller)
    assert controller.state is State.DONE and len(_uploads(handler)) == 1
    assert controller.history.consented == [] and saved == [[url]]  # only the connection's
    controller.denoise()  # the same server again in this session: not asked
    assert controller.state is State.DENOISING
    _settle(controller)
    assert len(_uploads(handler)) == 2 and not alerts


def test_dont_ask_again_is_kept_per_server_with_the_url_history(panel):
    controller, url, handler, logic, alerts, _, saved = panel
    _reach(State.READY, controller, url, handler)
    handler.held = ()
    controller.denoise()
    controller.answer_consent(True, remember=True)
    _settle(controller)
    assert controller.state is State.DONE and controller.history.consented == [url]
    assert len(saved) == 2  # written to the settings with the URLs and tokens
    history = controller.history
    restarted = DenoiseController(logic, UrlHistory(history.urls, tokens=history.tokens,
                                                    consented=history.consented),
                                  lambda kind, text: alerts.append(text),
                                  temp_root=controller.temp_root)
    restarted.connect(url, "")
    _settle(restarted)
    restarted.select_input("CT")
    restarted.denoise()  # Slicer restarted: this server is not asked about again
    assert restarted.state is State.DENOISING
    _settle(restarted)
    assert restarted.state is State.DONE and len(_uploads(handler)) == 2
    assert not history.consents("http://127.0.0.1:1")  # another server is asked about
    history.add("http://127.0.0.1:1")
    assert not UrlHistory(history.urls, size=1, consented=history.consented).consents(url)


# Keys Slicer itself binds: its slice views (letters, arrows, brackets, Escape, Delete) and its
# main window (Ctrl+key). The module's shortcuts, live while it is shown, must take none.
SLICER_KEYS = {*"BFGRTVbfgrtv[]{}", "Left", "Right", "Up", "Down", "Escape", "Delete",
               *(f"Ctrl+{k}" for k in "FOSWH012345")}


def test_shortcuts_flicker_and_pick_every_window_preset(panel):
    controller, url, handler, logic, *_ = panel
    assert not set(SHORTCUTS) & SLICER_KEYS and len(set(SHORTCUTS)) == len(SHORTCUTS)
    windows = [args[0] for name, *args in SHORTCUTS.values() if name == "set_window"]
    assert sorted(windows) == sorted([*WINDOW_PRESETS, VOLUME_PRESET])
    assert [name for name, *_ in SHORTCUTS.values()].count("flicker") == 1
    _reach(State.DONE, controller, url, handler)
    done = len(logic.calls)
    for key in SHORTCUTS:
        controller.press(key)
    assert logic.calls[done:] == [("flicker",), ("window", "Liver narrow"), ("window", "Liver"),
                                  ("window", "Abdomen"), ("window", VOLUME_PRESET)]
    assert controller.view().window == VOLUME_PRESET  # the Window list follows the key


def test_the_layout_is_kept_for_the_next_result(panel):
    controller, url, handler, logic, *_ = panel
    assert controller.view().layout == "Side by side" == next(iter(LAYOUTS))
    _reach(State.DONE, controller, url, handler)
    controller.set_layout("Axial + coronal")
    assert logic.calls[-1] == ("layout", "Axial + coronal")
    _click_denoise(controller)
    _settle(controller)
    assert logic.calls[-1][-1] == "Axial + coronal" and controller.view().layout == (
        "Axial + coronal")


def test_a_pair_without_a_full_strength_result_is_not_blended(panel):
    """A reader-study item (A/B) is shown as a pair, but it has no result to blend."""
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DONE, controller, url, handler)
    logic.refuse = "The full-strength result of this pair is gone; denoise again."
    controller.set_strength(0.5)
    assert controller.status == logic.refuse and controller.state is State.DONE
    assert not alerts


def test_cancel_ends_in_cancelled_not_in_an_error(panel):
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.DENOISING, controller, url, handler)
    controller.cancel()
    assert controller.state is State.CANCELLING and controller.status == "Cancelling..."
    _settle(controller)
    assert controller.state is State.CANCELLED and not alerts and not shown
    assert controller.status.startswith("Cancelled; the server stopped its job too")
    assert [c[0] for c in logic.calls] == ["export"]  # nothing loaded
    assert list(Path(controller.temp_root).iterdir()) == []


def test_a_server_error_is_shown_and_the_panel_stays_usable(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.ERROR, controller, url, handler)
    assert alerts == [("error", controller.status)]
    assert "HTTP 500" in controller.status and "out of memory" in controller.status
    assert "denoise" in controller.enabled() and logic.pair is None


def test_a_refused_volume_sends_nothing(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.READY, controller, url, handler)
    logic.refuse = "'x' is not a CT volume"
    controller.denoise()
    assert controller.state is State.ERROR and alerts == [("error", "'x' is not a CT volume")]
    assert not controller.working and not any(h.startswith("/infer") for h in handler.hits)


def test_a_failed_ct_number_check_warns(panel):
    controller, url, handler, _, alerts, *_ = panel
    check = {"passed": False, "message": "CT numbers moved by 12 HU in the liver"}
    handler.routes["/infer/m"] = (200, b"v", {"X-CT-Number-Check": json.dumps(check)})
    _reach(State.DONE, controller, url, handler)
    assert alerts == [("warning", check["message"])]
    assert controller.status.endswith(check["message"])


def test_scene_close_cancels_a_running_job_and_drops_the_result(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DENOISING, controller, url, handler)
    controller.scene_closed()
    assert controller.state is State.CANCELLING and controller.input is None
    _settle(controller)
    assert controller.state is State.CANCELLED and not alerts
    assert "scene was closed" in controller.status
    assert "denoise" not in controller.enabled()  # no input any more
    handler.held = ()
    controller.select_input("CT2")
    controller.denoise()
    _settle(controller)
    controller.set_auto_flicker(True)
    logic.pair = None  # what the Logic does on scene close
    controller.scene_closed()
    assert controller.state is State.READY and not controller.auto_flicker
    assert "compare" not in controller.enabled()


def test_no_click_waits_for_a_server_that_never_answers(panel, tmp_path):
    """Each click returns while its worker still waits for the server (which answers only
    when the test releases it); Cancel ends the job without any answer."""
    controller, url, handler, *_ = panel

    def click(action) -> float:
        start = time.monotonic()
        action()
        return time.monotonic() - start

    handler.held = ("/info/",)
    assert click(lambda: controller.connect(url, "")) < QUICK_S
    assert controller.working and controller.state is State.CONNECTING
    handler.release.set()  # the server answers now
    _settle(controller)
    assert controller.state is State.READY
    handler.release = threading.Event()
    handler.held = ("/info/", "/infer")
    controller.select_input("CT")
    assert click(lambda: _click_denoise(controller)) < QUICK_S
    assert controller.working and controller.state is State.DENOISING
    assert click(controller.cancel) < QUICK_S
    assert controller.wait(10) and not handler.release.is_set()  # ended with no answer
    controller.poll()
    assert controller.state is State.CANCELLED

    handler.held = ("/study/",)
    study = StudyController(FakeLogic(), lambda kind, text: None, tmp_path, timeout=5)
    assert click(lambda: study.refresh(url, "")) < QUICK_S
    assert study.working and study.state is StudyState.LOADING
    assert study.enabled() == frozenset()
    handler.release.set()
    _settle(study)
    assert study.state is StudyState.IDLE and study.studies == ()  # 404: an error, said
    handler.release = threading.Event()
    assert click(lambda: study.start(url, "", "a-study", "r1")) < QUICK_S
    assert study.working and study.state is StudyState.LOADING


WRITTEN_BACK = json.dumps({"written_back_series": "9.8.7"}).encode()


def test_send_to_pacs_goes_through_the_servers_write_back_when_it_has_the_series(panel):
    """The input is a series of the server's PACS: the server is asked on the worker (busy
    bar, Cancel) to denoise that series again at the result's model and strength and store it
    in its study; nothing is exported here."""
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.DONE, controller, url, handler)
    logic.series = "1.2.3"
    handler.routes["/datastore/"] = (200, json.dumps({"objects": {"1.2.3": {}}}).encode())
    handler.routes["/infer/m"] = (200, WRITTEN_BACK)
    handler.held = ("/infer",)
    controller.send_to_pacs()
    view = controller.view()
    assert view.state is State.SENDING and view.progress is None and "cancel" in view.enabled
    assert view.status == f"Sending 'CT m s=1' to PACS through {url}..."
    handler.release.set()
    _settle(controller)
    assert controller.state is State.DONE and not alerts and shown == [True]  # no export
    assert "Sent to PACS" in controller.status and "(9.8.7)" in controller.status
    send = handler.hits[-1]
    assert send.startswith("/infer/m?image=1.2.3&output=json&job=")
    assert handler.hits[-2] == "/datastore/?output=all"
    assert ("dicom export",) not in logic.calls


def test_send_to_pacs_writes_the_derived_series_otherwise(panel):
    """A series the server's PACS does not have, or a volume not loaded from DICOM (asked
    nowhere): written here as a derived series, handed to the widget (Slicer's DICOM
    database); the status line says that the DICOM module sends it."""
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.DONE, controller, url, handler)
    hits = len(handler.hits)
    controller.send_to_pacs()  # no series UID: the server is not asked
    assert len(handler.hits) == hits and not controller.working
    assert controller.state is State.DONE and len(shown) == 2
    assert [p.name for p in shown[1].iterdir()] == ["IM1.dcm"]
    assert controller.status.startswith("'CT m s=1' was written as a derived DICOM series ('CT "
                                        "denoised (m shipped, strength 1)', 1 images)")
    assert "the DICOM module (right-click the series > Send)" in controller.status
    logic.series = "4.5.6"
    handler.routes["/datastore/"] = (200, json.dumps({"objects": {"1.2.3": {}}}).encode())
    handler.held = ()
    controller.send_to_pacs()
    _settle(controller)
    assert controller.status.startswith(f"{url} does not have the input's series in its PACS. "
                                        "'CT m s=1' was written as a derived DICOM series")
    assert len(shown) == 3 and not alerts
    assert not any(h.startswith("/infer/m?image") for h in handler.hits)
    logic.no_study = "'CT' is not in a patient's study"
    controller.send_to_pacs()
    _settle(controller)
    assert controller.state is State.ERROR and alerts[-1][1].endswith(logic.no_study)
    assert "pacs" in controller.enabled()  # the panel stays usable
    assert len(list(Path(controller.temp_root).iterdir())) == 2  # the failed one is removed


def test_send_to_pacs_shows_the_servers_reason_and_cancels(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DONE, controller, url, handler)
    logic.series = "1.2.3"
    handler.routes["/datastore/"] = (200, json.dumps({"objects": {"1.2.3": {}}}).encode())
    handler.routes["/infer/m"] = (403, json.dumps({"detail": "POST /infer/{model} needs the "
                                                             "role radiologist or admin"}).encode())
    handler.held = ()
    controller.send_to_pacs()
    _settle(controller)
    assert controller.state is State.ERROR
    assert alerts == [("error", "Not sent to PACS: The server refused access (HTTP 403): "
                                "POST /infer/{model} needs the role radiologist or admin")]
    handler.held = ("/infer",)
    controller.send_to_pacs()
    assert controller.state is State.SENDING
    controller.cancel()
    assert controller.state is State.CANCELLING
    _settle(controller)
    assert controller.state is State.CANCELLED and len(alerts) == 1  # not an error
    assert "a series it was already storing may still reach the PACS" in controller.status
    controller.send_to_pacs()  # the scene closes while sending: the job stops
    assert controller.state is State.SENDING
    controller.scene_closed()
    _settle(controller)
    assert controller.state is State.CANCELLED
    assert controller.status == "The scene was closed: sending to PACS was cancelled."


def test_show_difference_follows_a_new_result(panel):
    """Ticked, then a new result is shown without its difference: the box unticks."""
    controller, url, handler, logic, *_ = panel
    _reach(State.DONE, controller, url, handler)
    assert not controller.view().difference
    controller.show_difference(True)
    assert controller.view().difference
    _click_denoise(controller)
    _settle(controller)
    assert controller.state is State.DONE and not controller.view().difference


def test_a_job_is_bound_to_the_input_it_started_with(panel):
    """Patient A is denoised; the user picks patient B before the result arrives: the
    selector is disabled (the pick is ignored) and the result goes to A, in A's study."""
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DENOISING, controller, url, handler)  # "CT" is patient A's volume
    assert {"input", "strength"}.isdisjoint(controller.enabled())
    controller.select_input("patient B CT")
    controller.set_strength(0.3)
    assert controller.view().input == "CT" and controller.strength == 1.0
    controller.input = "patient B CT"  # even a selection changed behind the panel's back
    handler.release.set()
    _settle(controller)
    assert controller.state is State.DONE and not alerts
    assert [c for c in logic.calls if c[0] == "load"] == [
        ("load", b"denoised volume", "CT", "m", 1.0, "study of CT", True, "baseline")]
    assert logic.pair[0] == "CT"


def test_deleting_the_input_during_a_job_cancels_it_and_creates_nothing(panel):
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.DENOISING, controller, url, handler)
    logic.removed.add("CT")
    controller.node_removed("CT")
    assert controller.state is State.CANCELLING and controller.input is None
    _settle(controller)
    assert controller.state is State.CANCELLED and not alerts and not shown
    assert controller.status == ("'CT' was deleted while it was being denoised: the job was "
                                 "cancelled and nothing was created.")
    assert [c[0] for c in logic.calls] == ["export"]
    assert list(Path(controller.temp_root).iterdir()) == []
    handler.held = ()  # the panel is usable: another input is denoised
    controller.select_input("CT2")
    controller.denoise()
    _settle(controller)
    assert controller.state is State.DONE and logic.pair[0] == "CT2"


def test_an_input_deleted_as_its_result_arrives_gets_nothing(panel):
    controller, url, handler, logic, alerts, shown, _ = panel
    _reach(State.DENOISING, controller, url, handler)
    logic.removed.add("CT")  # gone, and the panel not told yet: the result is dropped
    handler.release.set()
    _settle(controller)
    assert controller.state is State.CANCELLED and not shown and not alerts
    assert "deleted" in controller.status and "nothing was created" in controller.status
    assert [c[0] for c in logic.calls] == ["export"]


def test_deleting_the_volume_asked_about_sends_nothing(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.CONSENT, controller, url, handler)
    controller.node_removed("CT")
    assert controller.state is State.READY and controller.input is None
    assert controller.status == "'CT' was deleted: nothing was sent."
    assert not [h for h in handler.hits if h.startswith("/infer")]


def test_no_exception_escapes_the_timer_and_the_panel_recovers(panel):
    """An unexpected error while the result is shown (here the scene raises AttributeError,
    as a deleted node did) leaves the panel usable, never stuck in "denoising"."""
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DENOISING, controller, url, handler)

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'GetImageData'")
    logic.load_result = broken
    handler.release.set()
    _settle(controller)  # the timer's poll: must not raise
    assert controller.state is State.ERROR and not controller.working
    assert "AttributeError" in controller.status and alerts == [("error", controller.status)]
    assert "denoise" in controller.enabled() and "cancel" not in controller.enabled()
    assert list(Path(controller.temp_root).iterdir()) == []


def test_replace_is_the_default_and_results_can_be_removed(panel):
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DONE, controller, url, handler)
    handler.held = ()
    controller.set_replace(False)
    _click_denoise(controller)
    _settle(controller)
    assert [c[-2] for c in logic.calls if c[0] == "load"] == [True, False]
    assert "remove" in controller.enabled()
    controller.remove_results()
    assert controller.status == "Removed 2 results of 'CT'."
    assert controller.state is State.READY and "remove" not in controller.enabled()
    assert "compare" not in controller.enabled()


def test_an_unexpected_error_in_a_blend_never_escapes_the_timer(panel):
    """The blend's outcome is taken in the timer's slot: an error there is said, and the
    panel and the next strength work."""
    controller, url, handler, logic, alerts, *_ = panel
    _reach(State.DONE, controller, url, handler)
    logic.crash_blend = "broken image"
    controller.set_strength(0.4)
    _settle(controller)  # would raise out of the slot
    assert controller.status == ("The strength was not applied: unexpected error "
                                 "(ValueError('broken image')).")
    assert controller.state is State.DONE and not controller.blending
    logic.crash_blend = ""
    controller.set_strength(0.5)
    _settle(controller)
    assert controller.status == "Strength 0.5 blended locally: 'blend 0.5'."
