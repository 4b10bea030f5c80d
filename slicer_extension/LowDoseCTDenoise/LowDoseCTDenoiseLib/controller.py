"""The panel's state machine: what is enabled, what a click does, which message shows.

No Qt and no ``slicer`` import, so every click in every state is tested with pytest. The Qt
widget binds its signals to these methods and renders :meth:`view` (a QTimer calls
:meth:`poll`). Every server call runs on a worker thread (:class:`BackgroundCall`): a click
returns at once, and :meth:`poll` takes the outcome when the worker has finished.
The scene work (export, load, views) goes to a Logic object given at construction.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from .client import DenoiseClient, ModelEntry
from .display import VOLUME_PRESET, UrlHistory
from .errors import Cancelled, ServerError
from .job import BUSY_PHASES, BackgroundCall, CancellableCall, DenoiseJob, WriteBackJob
from .state import PanelState
from .study import ReaderSession, StudyClient, reader_id

INFO_TIMEOUT_S = 10.0  # /info/ answers in milliseconds; longer means a server in trouble
STRENGTH, NOISE_LEVEL = "strength", "noise level"  # what the Denoise section's slider chooses
DEFAULT_LEVELS = ("low", "medium", "high")  # the server's built-in noise levels, listed first
# below this strength, full-strength voxels recovered from a noise level's blend carry too much
# int16 rounding (0.5 HU / strength): another strength then needs a new Denoise
MIN_UNBLEND = 0.2
Alert = Callable[[str, str], None]  # (kind: "error" | "warning", text): a dialog the user closes


class State(str, Enum):
    """The Denoise panel's states; each decides what is enabled (:meth:`enabled`)."""

    IDLE = "not connected"
    CONNECTING = "connecting"
    READY = "ready"
    CONSENT = "asking before sending"  # the widget shows :attr:`PanelView.question`
    DENOISING = "denoising"
    SENDING = "sending to PACS"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    DONE = "done"
    ERROR = "error"


SETTLED = (State.IDLE, State.READY, State.CANCELLED, State.DONE, State.ERROR)  # nothing running


@dataclass(frozen=True)
class Binding:
    """The input a job was started for, captured at Denoise: its result goes to this node,
    under this subject-hierarchy study, whatever is selected when the job ends."""

    node: Any
    study: int  # the subject-hierarchy item the input was under (0: none)


def _name(node: Any) -> str:
    return node.GetName() if hasattr(node, "GetName") else str(node)


@dataclass(frozen=True)
class PanelView:
    """What the panel shows; the widget renders it and decides nothing itself."""

    state: State
    connection: str  # the Server section's status line
    status: str  # the Denoise section's status line
    progress: Optional[int]  # percent; None: the server works, no measure (a busy bar)
    enabled: frozenset  # of CONTROLS
    models: tuple  # of ModelEntry, denoisers only
    auto_flicker: bool
    model: str  # the model chosen (a loaded scene may change it, as the next four)
    strength: float
    input: Any  # the input volume node
    window: str  # the window preset chosen (a shortcut may change it)
    layout: str  # the layout chosen, a name in LAYOUTS
    question: str  # in State.CONSENT: asked in a dialog, answered with answer_consent()
    difference: bool  # the result's views show its difference ("Show difference" ticked)
    mode: str = STRENGTH  # STRENGTH or NOISE_LEVEL: what the next Denoise asks for
    level: str = ""  # in NOISE_LEVEL mode: the noise level asked for (a name in ``levels``)
    levels: tuple = ()  # the chosen model's noise levels (the server's /info/)
    noise: str = ""  # the last noise-level result: input noise -> result noise at strength


CONTROLS = ("connect", "input", "model", "device", "strength", "denoise", "cancel", "compare",
            "pacs", "remove")

# Keys while the module is shown (QKeySequence text) -> controller method and arguments:
# digits pick the window presets, as in PACS viewers; Space flickers. Slicer's own keys are
# left alone: letters, arrows and brackets in its slice views, Ctrl+key in its main window.
SHORTCUTS = {"Space": ("flicker",), "1": ("set_window", "Liver narrow"),
             "2": ("set_window", "Liver"), "3": ("set_window", "Abdomen"),
             "4": ("set_window", VOLUME_PRESET)}


class _Worker:
    """One server call at a time on a worker thread; :meth:`poll` hands a finished call to
    the method named when it started."""

    def __init__(self, alert: Alert) -> None:
        self.alert = alert
        self._call: Optional[BackgroundCall] = None
        self._finish: Callable[[Any], None] = lambda call: None

    @property
    def working(self) -> bool:
        """A server call is running on the worker thread."""
        return self._call is not None

    def poll(self) -> None:
        """Called by the widget's timer: takes the outcome of a finished server call. Nothing
        raised here may escape into the timer's slot (the panel would stay busy for good):
        :meth:`_crashed` puts the panel back in a usable state and says what happened."""
        call = self._call
        if call is not None and call.done:
            self._call = None
            try:
                self._finish(call)
            except Exception as exc:  # noqa: BLE001 - a timer slot must never raise
                self._crashed(exc)

    def _crashed(self, exc: Exception) -> None:
        """Each section's way back to a usable state after an unexpected error."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Forget the running call: its outcome, when it comes, is ignored (a closed scene)."""
        self._call = None

    def wait(self, timeout: float) -> bool:
        """Block until the running call ends (tests and scripts; the UI polls instead)."""
        return self._call is None or self._call.wait(timeout)

    def _start(self, call: BackgroundCall, finish: Callable[[Any], None]) -> None:
        self._finish, self._call = finish, call.start()


class DenoiseController(_Worker):
    """Server, Denoise and Compare sections of the panel.

    ``logic``: the module's Logic (``prepare_export``, ``study_of``, ``in_scene``,
    ``load_result``, ``show_side_by_side``, ``blend_job``, ``apply_blend``, ``apply_window``,
    ``set_layout``, ``show_difference``, ``flicker``, ``shown_result``, ``write_derived``,
    ``results_of``, ``remove_results``, ``node_ids``, ``restore``, ``pair``,
    ``difference_shown``). Every job is bound to its input when it starts (:class:`Binding`);
    the input selector and the strength are disabled while it runs.
    ``on_shown`` is called after a result is shown (the widget fits the views to it);
    ``on_dicom_export(folder)`` when a result was written as a derived DICOM series in
    ``folder`` (the widget imports it into Slicer's DICOM database and removes the folder).
    """

    def __init__(self, logic: Any, history: UrlHistory, alert: Alert,
                 save_history: Callable[[UrlHistory], None] = lambda history: None,
                 on_shown: Callable[[], None] = lambda: None, temp_root: Optional[str] = None,
                 info_timeout: float = INFO_TIMEOUT_S,
                 on_dicom_export: Callable[[Path], None] = lambda folder: None) -> None:
        super().__init__(alert)
        self.logic, self.history = logic, history
        self.save_history, self.on_shown, self.temp_root = save_history, on_shown, temp_root
        self.on_dicom_export = on_dicom_export
        self.info_timeout = info_timeout
        self.state = State.IDLE
        self.connection, self.status = "Not connected", ""
        self.models: tuple[ModelEntry, ...] = ()
        self.url = self.token = ""  # of the server whose models are listed
        self.input: Any = None
        self.device = "auto"
        default = PanelState()
        self.model, self.strength = default.model, default.strength
        self.window, self.layout = default.window, default.layout
        self.auto_flicker = False
        self.mode, self.level, self.noise = STRENGTH, "", ""
        self._workdir: Optional[Path] = None
        self._cancelled = ""  # why the running job was stopped (user or scene close)
        self._pending: Optional[tuple[Any, Binding]] = None  # (export, input) awaiting consent
        self._bound: Optional[Binding] = None  # the input of the running denoise job
        self.replace = True  # a new result replaces the previous results of its input
        self.shown = False  # the module is shown (entered, not left)
        self._scene_state: Optional[PanelState] = None  # a loaded scene's, until shown
        self._consented: set[str] = set()  # servers agreed to in this session
        self._blending: Optional[tuple[BackgroundCall, float]] = None  # (blend, its strength)

    # -- what the panel shows ------------------------------------------------------------
    def view(self) -> PanelView:
        question = ""
        if self.state == State.CONSENT:
            question = (f"Send '{self._pending[0].name}' to {self.url} for denoising?\n\nThe "
                        "volume leaves this computer: its voxels and geometry (no patient name "
                        "or DICOM header) go to that server, which keeps them only while it "
                        "denoises.")
        return PanelView(self.state, self.connection, self.status, self._progress(),
                         self.enabled(), self.models, self.auto_flicker, self.model,
                         self.strength, self.input, self.window, self.layout, question,
                         self.logic.difference_shown, self.mode, self.level,
                         self.noise_levels(), self.noise)

    def enabled(self) -> frozenset:
        """The controls a click may use now (a click on any other is ignored)."""
        on = set()
        if self.state in SETTLED:
            on |= {"connect", "input", "model", "device", "strength"}
            if self.models and self.model and self.input is not None:
                on.add("denoise")
            if self.input is not None and self.logic.results_of(self.input):
                on.add("remove")
        if self.state in (State.DENOISING, State.SENDING):
            on.add("cancel")
        if self.logic.shows_result:  # never a reader-study pair: comparing would unblind it
            on.add("compare")
            if self.state in SETTLED and self._blending is None:  # sends the strength shown
                on.add("pacs")
        return frozenset(on)

    def _progress(self) -> Optional[int]:
        job = self._call
        if isinstance(job, DenoiseJob):
            return None if job.phase in BUSY_PHASES else int(100 * job.fraction)
        if self.state in (State.CONNECTING, State.SENDING):
            return None
        return 100 if self.state == State.DONE else 0

    # -- Server ----------------------------------------------------------------------------
    def server_changed(self, url: str) -> str:
        """Another URL typed or picked: its models are not known yet. Returns its token."""
        if url.strip().rstrip("/") != self.url and self.state in SETTLED:
            self.state, self.models, self.url = State.IDLE, (), ""
            self.connection = "Not connected"
        return self.history.token(url)

    def connect(self, url: str, token: str) -> None:
        """Test connection / Refresh models: list the server's denoisers."""
        if "connect" not in self.enabled():
            return
        try:
            client = DenoiseClient(url, token=token, read_timeout=self.info_timeout)
        except ServerError as exc:  # not a URL: said at once, nothing sent
            self.state, self.models, self.connection = State.IDLE, (), str(exc)
            return
        self.state, self.connection = State.CONNECTING, f"Connecting to {client.url}..."
        self._start(BackgroundCall(client.models),
                    lambda call: self._connected(call, client.url, token))

    def _connected(self, call: BackgroundCall, url: str, token: str) -> None:
        if call.error is not None:
            self.state, self.models, self.url, self.connection = State.IDLE, (), "", str(
                call.error)
            return
        self.models, self.url, self.token = tuple(call.result), url, token
        names = [m.name for m in self.models]
        first = [m.name for m in self.models if m.recommended] + names  # the server's choice
        self._choose_model(self.model if self.model in names else (first[0] if first else ""))
        self.history.add(url, token)
        self.save_history(self.history)
        self.state = State.READY
        self.connection = (f"Connected to {url}: {len(names)} denoisers" if names else
                           f"Connected to {url}, but it offers no denoiser: is it the ldct "
                           "server?")

    # -- Denoise ---------------------------------------------------------------------------
    def select_input(self, node: Any) -> None:
        """Another input picked; ignored while a job runs (the selector is disabled then)."""
        if "input" in self.enabled():
            self.input = node

    def select_model(self, name: str) -> None:
        self._choose_model(name)

    def _choose_model(self, name: str) -> None:
        """Another model: the strength starts at its default level (the server's /info/: the
        strength that leaves about the normal dose's own noise), unless a result is shown
        (the slider then says that result's strength)."""
        if name != self.model and not self.logic.shows_result:
            entry = self._entry(name)
            self.strength = entry.default_strength if entry else self.strength
        self.model = name
        if self.mode == NOISE_LEVEL and self.level not in self.noise_levels():
            self.level = next(iter(self.noise_levels()), "")

    def _entry(self, name: str) -> Optional[ModelEntry]:
        return next((m for m in self.models if m.name == name), None)

    def noise_levels(self) -> tuple:
        """The chosen model's noise levels (low, medium, high, then the site's)."""
        entry = self._entry(self.model)
        names = list(entry.noise_levels) if entry else []
        return (*(n for n in DEFAULT_LEVELS if n in names),
                *sorted(n for n in names if n not in DEFAULT_LEVELS))

    def set_mode(self, mode: str) -> None:
        """Strength (a blend chosen here) or noise level (the server picks the strength that
        leaves that noise); ignored while a job runs, as the strength."""
        if "strength" not in self.enabled() or mode not in (STRENGTH, NOISE_LEVEL):
            return
        self.mode = mode
        if mode == NOISE_LEVEL and self.level not in self.noise_levels():
            levels = self.noise_levels()
            self.level = "medium" if "medium" in levels else next(iter(levels), "")

    def set_noise_level(self, name: str) -> None:
        """The noise level the next Denoise asks for (one of :meth:`noise_levels`)."""
        if "strength" in self.enabled() and name in self.noise_levels():
            self.level = name

    def set_device(self, device: str) -> None:
        self.device = device

    def denoise(self, from_server: bool = False) -> None:
        """Check the input here; ask before the first volume goes to this server; then
        compress, upload, denoise and download on the worker thread. The server computes the
        full-strength result; the strength is blended here. ``from_server``: the input came
        from this server's datastore (the worklist): its voxels go back where they came from,
        so nothing is asked."""
        if "denoise" not in self.enabled():
            return
        if self.mode == NOISE_LEVEL and not self.level:
            self._fail(f"The server lists no noise level for '{self.model}': choose "
                       "Strength, or start the server with its noise levels.")
            return
        try:
            export = self.logic.prepare_export(self.input)
        except ValueError as exc:  # refused before anything is written or sent
            self._fail(str(exc))
            return
        binding = Binding(self.input, self.logic.study_of(self.input))
        if from_server or self.url in self._consented or self.history.consents(self.url):
            self._send(export, binding)
        else:  # a volume leaves the workstation for this server for the first time: ask
            self._pending, self.state = (export, binding), State.CONSENT

    def answer_consent(self, send: bool, remember: bool = False) -> None:
        """The consent dialog's answer: send (``remember``: never ask again for this server,
        kept with the URL history), or not (nothing leaves this computer)."""
        if self.state != State.CONSENT:
            return
        (export, binding), self._pending = self._pending, None
        if not send:
            self.state, self.status = State.READY, "Not sent: the volume stays on this computer."
            return
        self._consented.add(self.url)
        if remember:
            self.history.consent(self.url)
            self.save_history(self.history)
        self._send(export, binding)

    def _job_params(self) -> dict[str, Any]:
        """What the server is asked for: the full-strength result (the strength, like any
        other choice about the blend, is applied here by :meth:`set_strength`), or in noise
        level mode the blend at the strength that leaves that noise (the server measures)."""
        if self.mode == NOISE_LEVEL:
            return {"target_noise": self.level, "device": self.device, "result_dtype": "int16"}
        return {"strength": 1.0, "device": self.device, "result_dtype": "int16"}

    def _version(self, model: str) -> str:
        """The weights version the server lists for ``model`` (it goes into the DICOM)."""
        return next((str(m.card.get("version", "")) for m in self.models if m.name == model), "")

    def _send(self, export: Any, binding: Binding) -> None:
        """Compress, upload, denoise and download ``export`` on the worker thread; the result
        goes to ``binding``'s node, never to whatever is selected when the job ends."""
        self._workdir = Path(tempfile.mkdtemp(prefix="ldct-slicer-", dir=self.temp_root))
        # fixed while the job runs (the controls are disabled)
        strength, mode, level = self.strength, self.mode, self.level
        client = DenoiseClient(self.url, token=self.token)

        def prepare(path: Path) -> Any:
            if mode == STRENGTH:
                return self.logic.read_result(path, export, strength)
            if not client.noise:
                raise ServerError(f"{client.url} did not say which strength leaves the noise "
                                  f"level '{level}': is it an older ldct server? Choose "
                                  "Strength instead.")
            return self.logic.read_result(path, export, client.noise["strength"], blended=True)

        job = DenoiseJob(client, self.model, self._workdir / "input.nrrd",
                         self._workdir / "result.nrrd", self._job_params(),
                         export=export.write, prepare=prepare)
        self.state, self.status, self._bound = State.DENOISING, "Starting", binding
        self._start(job, lambda done: self._denoised(done, binding))

    def cancel(self) -> None:
        """Close the connection: the worker ends at once and the server cancels its job."""
        if "cancel" not in self.enabled():
            return
        self._stop_job("Cancelled; the server stopped its job too. The input is unchanged."
                       if self.state == State.DENOISING else
                       "Cancelled; the server stopped its job too (a series it was already "
                       "storing may still reach the PACS).")

    def _stop_job(self, outcome: str) -> None:
        self._call.cancel()
        self._cancelled = outcome
        self.state, self.status = State.CANCELLING, "Cancelling..."

    def _succeeded(self, job: CancellableCall, failed: str) -> bool:
        """Whether ``job`` ended well; if not, the panel says it was cancelled (asked for:
        not an error) or shows why it failed, after ``failed``."""
        outcome, self._cancelled = self._cancelled, ""
        if outcome or isinstance(job.error, Cancelled):
            self.state, self.status = State.CANCELLED, outcome or str(job.error)
        elif job.error is not None:
            self._fail(f"{failed}: {job.error}")
        else:
            return True
        return False

    def _denoised(self, job: DenoiseJob, binding: Binding) -> None:
        try:
            if not self._succeeded(job, "Failed"):
                return
            if not self.logic.in_scene(binding.node):  # removed as the last bytes arrived
                self.state = State.CANCELLED
                self.status = (f"'{_name(binding.node)}' was deleted while it was being "
                               "denoised: nothing was created.")
                return
            self._show(job, binding)
        finally:
            self._bound = None
            self._remove_workdir()

    def _show(self, job: DenoiseJob, binding: Binding) -> None:
        node = binding.node
        noise = job.client.noise
        self.noise = _noise_text(noise) if self.mode == NOISE_LEVEL else ""
        if self.noise:  # the slider says the strength the server chose
            self.strength = float(noise["strength"])
        try:
            result = self.logic.load_result(job.result, node, job.model, self.strength,
                                            study=binding.study, replace=self.replace,
                                            version=self._version(job.model))
            self.logic.show_side_by_side(node, result, self.window, self.layout)
        except (RuntimeError, ValueError, OSError) as exc:
            self._fail(f"Could not show the result: {exc}")
            return
        self.on_shown()
        check = job.client.ct_check
        self.state, self.status = State.DONE, f"Loaded '{result.GetName()}'. {check['message']}"
        if self.noise and self.strength < MIN_UNBLEND and self.logic.release_full():
            self.status += (f" (Strength {self.strength:.2f}: another strength needs a new "
                            "Denoise.)")
        if check.get("passed") is False:
            self.alert("warning", check["message"])

    # -- Send to PACS ----------------------------------------------------------------------
    def send_to_pacs(self) -> None:
        """Send the result shown to PACS. An input that is a series of the server's PACS goes
        through the server's write-back (on the worker: the server denoises that series again
        with the result's model and strength and stores it in its study); any other result
        is written here as a derived series (:meth:`_export_dicom`)."""
        if "pacs" not in self.enabled():
            return
        try:
            shown = self.logic.shown_result()
        except RuntimeError as exc:  # a reader-study pair: no result to send
            self._fail(str(exc))
            return
        if not (self.url and shown.series):  # not from a PACS, or no server to ask
            self._export_dicom("")
            return
        job = WriteBackJob(DenoiseClient(self.url, token=self.token), shown.series,
                           shown.model, {"strength": shown.strength, "device": self.device})
        self.state = State.SENDING
        self.status = f"Sending '{shown.name}' to PACS through {self.url}..."
        self._start(job, lambda done: self._sent(done, shown.name))

    def _sent(self, job: WriteBackJob, name: str) -> None:
        if not self._succeeded(job, "Not sent to PACS"):
            return
        if not job.result:
            self._export_dicom(f"{self.url} does not have the input's series in its PACS. ")
            return
        self.state = State.DONE
        self.status = (f"Sent to PACS: '{name}' is in the input's study as a derived series "
                       f"({job.result}), computed by the server from the PACS series.")

    def _export_dicom(self, why: str) -> None:
        """The result written here as a derived DICOM series of the input's study (never
        Slicer's generic exporter, which writes an ORIGINAL series with a new frame of
        reference); the widget imports it into Slicer's DICOM database, where the DICOM
        module's Send sends it."""
        folder = Path(tempfile.mkdtemp(prefix="ldct-derived-", dir=self.temp_root))
        try:
            series = self.logic.write_derived(folder)
        except (RuntimeError, ValueError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            self._fail(f"{why}{exc}")
            return
        self.state = State.DONE
        self.status = (f"{why}'{series.name}' was written as a derived DICOM series "
                       f"('{series.description}', {len(series.files)} images) of the input's "
                       "study and added to Slicer's DICOM database: send it to PACS with the "
                       "DICOM module (right-click the series > Send).")
        self.on_dicom_export(series.folder)

    # -- Compare ---------------------------------------------------------------------------
    def set_strength(self, strength: float) -> None:
        """After a result exists, a new strength is blended here (no upload), on a worker
        thread: :meth:`poll` puts the blend in the result node. Quick moves are coalesced:
        while one blend runs, only the latest strength is kept, and a blend finished for an
        older strength is dropped (:meth:`_blended`). Ignored while a job runs (the control
        is disabled then: the job's result gets the strength chosen when it arrives)."""
        if "strength" not in self.enabled():
            return
        self.strength = strength
        if "compare" not in self.enabled():
            return
        if self._blending is not None:  # superseded: the latest strength follows it
            self.status = f"Blending strength {strength:g}..."
            return
        try:
            run = self.logic.blend_job(strength)
        except RuntimeError as exc:  # the pair shown is no denoised result (a study item)
            self.status = str(exc)
            return
        self._blending = (BackgroundCall(run).start(), strength)
        self.status = f"Blending strength {strength:g}..."

    @property
    def blending(self) -> bool:
        """A strength is being blended on the worker thread."""
        return self._blending is not None

    def _blended(self) -> None:
        """A finished blend (GUI thread, from :meth:`poll`): shown when it is the latest
        strength and its pair is still shown; otherwise dropped (and the latest strength
        blended next)."""
        call, strength = self._blending
        if not call.done:
            return
        self._blending = None
        if strength != self.strength:  # the slider moved on while it ran
            self.set_strength(self.strength)
            return
        if call.error is not None:
            self.status = f"Strength {strength:g} was not applied: {call.error}"
            return
        try:
            name = self.logic.apply_blend(call.result)
        except RuntimeError as exc:  # its result deleted or replaced meanwhile
            self.status = str(exc)
            return
        self.status = f"Strength {strength:g} blended locally: '{name}'."

    def release_full(self) -> None:
        """The user is done with the strength control (the widget calls this a while after
        the last change): the full-strength voxels are freed; another strength then needs a
        new Denoise."""
        if self.state in SETTLED and self.logic.release_full():
            self.status += " (Full-strength voxels freed; another strength needs a new Denoise.)"

    def set_replace(self, on: bool) -> None:
        """Whether a new result replaces the input's earlier results (the default: a day of
        comparing models does not pile up full-size volumes)."""
        self.replace = on

    def remove_results(self) -> None:
        """Remove every denoised result (and difference) of the input from the scene."""
        if "remove" not in self.enabled():
            return
        count = self.logic.remove_results(self.input)
        if self.state == State.DONE and self.logic.pair is None:
            self.state = State.READY
        self.status = f"Removed {count} result{'s' if count != 1 else ''} of '{_name(self.input)}'."

    def set_window(self, preset: str) -> None:
        self.window = preset
        if "compare" in self.enabled():
            self.logic.apply_window(preset)

    def set_layout(self, name: str) -> None:
        self.layout = name
        if "compare" in self.enabled():
            self.logic.set_layout(name)

    def press(self, key: str) -> None:
        """A key of :data:`SHORTCUTS` pressed: what its control does when clicked."""
        name, *args = SHORTCUTS[key]
        getattr(self, name)(*args)

    def show_difference(self, on: bool) -> None:
        if "compare" in self.enabled():
            self.logic.show_difference(on)

    def flicker(self) -> None:
        if "compare" in self.enabled():
            self.logic.flicker()

    def set_auto_flicker(self, on: bool) -> None:
        """The widget's flicker timer runs while this is on."""
        self.auto_flicker = on and "compare" in self.enabled()

    # -- scene save and load ---------------------------------------------------------------
    def panel_state(self) -> PanelState:
        """What the scene keeps of the panel (the Logic stores it in the parameter node)."""
        return PanelState(self.model, self.strength, self.window, self.layout,
                          **self.logic.node_ids(self.input))

    def module_shown(self, shown: bool) -> None:
        """The module was entered (a scene loaded while it was hidden is restored now) or
        left."""
        self.shown = shown
        if shown and self._scene_state is not None:
            state, self._scene_state = self._scene_state, None
            self.restore(state)

    def restore(self, state: PanelState) -> None:
        """A scene was loaded: its panel state comes back, and the pair it showed, once the
        module is shown (a loaded scene never changes the layout of a user working in
        another module). The full-strength result is not saved with a scene, so a new
        strength needs a new Denoise."""
        if not self.shown:
            self._scene_state = state
            return
        if self.state not in SETTLED:
            return
        self.model, self.strength = state.model, state.strength
        self.window, self.layout = state.window, state.layout
        restored = self.logic.restore(state)
        self.input = self.input if restored is None else restored
        if self.logic.shows_result:
            self.state = State.DONE
            self.status = (f"Restored from the scene: '{self.logic.pair[1].GetName()}'. Another "
                           "strength needs a new Denoise (the scene keeps the blend only).")

    # -- worker and scene ------------------------------------------------------------------
    def poll(self) -> None:
        if isinstance(self._call, DenoiseJob) and self.state == State.DENOISING:
            self.status = self._call.status_text()
        super().poll()
        if self._blending is not None:
            try:
                self._blended()
            except Exception as exc:  # noqa: BLE001 - a timer slot must never raise
                self._blending = None
                self.status = f"The strength was not applied: unexpected error ({exc!r})."

    def wait(self, timeout: float) -> bool:
        """Block until the running call and the running blend end (tests and scripts)."""
        return super().wait(timeout) and (
            self._blending is None or self._blending[0].wait(timeout))

    def node_removed(self, node: Any) -> None:
        """A node was deleted (Data module, a script): the panel keeps no reference to it, and
        a job started for it stops without creating anything."""
        if node is self.input:
            self.input = None
        if self.state == State.CONSENT and self._pending[1].node is node:
            self._pending, self.state = None, State.READY
            self.status = f"'{_name(node)}' was deleted: nothing was sent."
        elif (self.state == State.DENOISING and self._bound is not None
              and self._bound.node is node):
            self._stop_job(f"'{_name(node)}' was deleted while it was being denoised: the job "
                           "was cancelled and nothing was created.")
        elif self.state == State.DONE and self.logic.pair is None:
            self.state, self.status = State.READY, f"'{_name(node)}' was deleted."

    def scene_closed(self) -> None:
        """The scene was cleared: the input and the result are gone; a running job stops."""
        self.input, self.auto_flicker, self._blending = None, False, None  # its pair is gone
        if self.state == State.CONSENT:  # the volume asked about is gone: nothing is sent
            self._pending, self.state, self.status = None, State.READY, "The scene was closed."
        elif self.state in (State.DENOISING, State.SENDING):
            self._stop_job(f"The scene was closed: {self.state.value} was cancelled.")
        elif self.state == State.DONE:
            self.state, self.status = State.READY, "The scene was closed."

    def close(self) -> None:
        """The module is closed: stop the running job, remove its files."""
        if isinstance(self._call, CancellableCall):
            self._call.cancel()
            self._call.wait(5)
        self._remove_workdir()

    def _crashed(self, exc: Exception) -> None:
        self._bound, self._cancelled = None, ""
        self._remove_workdir()
        self._fail(f"Unexpected error ({exc!r}); nothing is running now and the panel can be "
                   "used again. Please report this with Slicer's log.")

    def _fail(self, message: str) -> None:
        self.state, self.status = State.ERROR, message
        self.alert("error", message)

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _noise_text(noise: dict) -> str:
    """A noise level's outcome as the panel shows it: the measured input noise, the result's
    and the strength; a level out of reach says so."""
    text = (f"Noise {noise['input_noise']:.1f} HU -> {noise['result_noise']:.1f} HU at "
            f"strength {noise['strength']:.2f}")
    asked = f"{noise.get('level', '')} ({noise['target_noise']:g} HU)".strip()
    return text + (f", level {asked}" if noise.get("reached") else
                   f": level {asked} is not reachable (the nearest end)")


class StudyState(str, Enum):
    """The Reader study section's states."""

    IDLE = "no study"
    LOADING = "loading"
    SCORING = "scoring"
    FINISHED = "finished"


@dataclass(frozen=True)
class StudyView:
    """What the Reader study section shows."""

    state: StudyState
    progress: str  # "Item n of N", or what is happening
    enabled: frozenset  # of "refresh", "start", "submit"
    studies: tuple  # of (name, study id)


class StudyController(_Worker):
    """The Reader study section: studies, the reader's session, one item at a time.

    ``on_item(session)`` is called when a new item is shown (the widget builds or clears the
    score buttons and fits the views); the scene work goes to ``logic``
    (``show_study_item``, ``clear_study_item``).
    """

    def __init__(self, logic: Any, alert: Alert, folder: Path,
                 on_item: Callable[[ReaderSession], None] = lambda session: None,
                 timeout: float = INFO_TIMEOUT_S) -> None:
        super().__init__(alert)
        self.logic, self.folder, self.on_item, self.timeout = logic, folder, on_item, timeout
        self.state, self.progress = StudyState.IDLE, ""
        self.studies: tuple[tuple[str, str], ...] = ()
        self.session: Optional[ReaderSession] = None
        self._before = StudyState.IDLE  # the state a failed call returns to

    def view(self) -> StudyView:
        return StudyView(self.state, self.progress, self.enabled(), self.studies)

    def enabled(self) -> frozenset:
        if self.state == StudyState.LOADING:
            return frozenset()
        on = {"refresh", "start"}
        if self.state == StudyState.SCORING:
            on.add("submit")
        return frozenset(on)

    def refresh(self, url: str, token: str) -> None:
        """Refresh studies: the studies this reader token may score."""
        if "refresh" not in self.enabled():
            return
        client = self._client(url, token)
        if client is not None:
            self._load("Loading the studies...", BackgroundCall(client.studies), self._listed)

    def start(self, url: str, token: str, study: str, reader: str) -> None:
        """Start / resume: open the reader's session, load its first unscored item."""
        if "start" not in self.enabled():
            return
        try:
            if not study:
                raise ValueError("Refresh the studies and pick one first.")
            reader = reader_id(reader)
        except ValueError as exc:
            self.alert("error", str(exc))
            return
        client = self._client(url, token)
        if client is not None:
            self._load("Opening the session...",
                       BackgroundCall(_open_session, client, study, reader, self.folder),
                       self._shown)

    def submit(self, scores: dict, choice: Optional[str]) -> None:
        """Submit and next: checked here (nothing sent when incomplete), then sent."""
        if "submit" not in self.enabled():
            return
        try:
            body = self.session.check(scores, choice)
        except ValueError as exc:
            self.alert("error", str(exc))
            return
        self._load("Submitting...",
                   BackgroundCall(_send_then_next, self.session, body, self.folder),
                   lambda call: self._shown(call, self.session))

    def _client(self, url: str, token: str) -> Optional[StudyClient]:
        try:
            return StudyClient(url, token=token, read_timeout=self.timeout)
        except ServerError as exc:
            self.alert("error", str(exc))
            return None

    def _load(self, message: str, call: BackgroundCall, finish: Callable[[Any], None]) -> None:
        self._before = self.state
        self.state, self.progress = StudyState.LOADING, message
        self._start(call, finish)

    def _failed(self, call: BackgroundCall) -> bool:
        if call.error is None:
            return False
        self.state = self._before  # a failed call changes nothing: the same click can retry
        self.progress = self.session.progress_text() if self.session else ""
        self.alert("error", str(call.error))
        return True

    def scene_closed(self) -> None:
        """The scene was cleared: the item shown is gone; the session starts again from Start
        (the server keeps every score sent)."""
        self._discard()
        self.session, self.state = None, StudyState.IDLE
        self.progress = "The scene was closed: press Start / resume to go on."

    def _crashed(self, exc: Exception) -> None:
        self.state = self._before
        self.progress = self.session.progress_text() if self.session else ""
        self.alert("error", f"Unexpected error ({exc!r}); the study panel can be used again.")

    def _listed(self, call: BackgroundCall) -> None:
        if not self._failed(call):
            self.studies = tuple((s["name"], s["study"]) for s in call.result)
            self.state = self._before
            self.progress = f"{len(self.studies)} studies for this token"

    def _shown(self, call: BackgroundCall, session: Optional[ReaderSession] = None) -> None:
        if self._failed(call):
            return
        if session is None:
            session, files = call.result
        else:
            files = call.result
        self.session, self.progress = session, session.progress_text()
        if not files:
            self.logic.clear_study_item()
            self.state = StudyState.FINISHED
            return
        self.logic.show_study_item(files, session.window)
        self.state = StudyState.SCORING
        self.on_item(session)


def _open_session(client: StudyClient, study: str, reader: str, folder: Path
                  ) -> tuple[ReaderSession, dict]:
    session = ReaderSession(client, study, reader)
    return session, session.load_next(folder)


def _send_then_next(session: ReaderSession, body: dict, folder: Path) -> dict:
    session.send(body)
    return session.load_next(folder)
