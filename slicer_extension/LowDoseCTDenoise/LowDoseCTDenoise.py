"""3D Slicer module: denoise the loaded CT on an ldct server, compare original and result.

The widget only binds Qt signals to the controllers and renders their views
(LowDoseCTDenoiseLib.controller: the panel's state machine, every server call on a worker
thread polled by a QTimer, so the UI never freezes); the scene work is the Logic's
(LowDoseCTDenoiseLib.logic, MRML only). Both are tested outside Slicer.
"""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

import qt
import slicer
from LowDoseCTDenoiseLib.version import check_slicer

check_slicer(slicer.app.majorVersion, slicer.app.minorVersion, slicer.app.applicationVersion)

from LowDoseCTDenoiseLib import (  # noqa: E402 - after the version check, with a clear message
    LAYOUTS,
    SHORTCUTS,
    VOLUME_PRESET,
    WINDOW_PRESETS,
    DenoiseController,
    ReaderSession,
    StudyController,
    UrlHistory,
    selftest,
)
from LowDoseCTDenoiseLib.controller import NOISE_LEVEL, STRENGTH  # noqa: E402
from LowDoseCTDenoiseLib.logic import LowDoseCTDenoiseLogic  # noqa: E402
from LowDoseCTDenoiseLib.state import PanelState  # noqa: E402
from LowDoseCTDenoiseLib.worklist import WorklistController  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.parameterNodeWrapper import parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

SETTINGS = "LowDoseCTDenoise"
DEFAULT_URL = "http://127.0.0.1:8000"
POLL_MS = 200
FULL_KEEP_MS = 120_000  # the full-strength result is kept this long after a strength change
FLICKER_MS = 700


class LowDoseCTDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        # Slicer 5.6+ translation: the module's visible strings go through its catalogue
        self.parent.title = _("Low-dose CT Denoise")
        self.parent.categories = ["Filtering.Denoising"]  # Slicer's own category path
        self.parent.dependencies = []
        self.parent.contributors = ["ldct founding team"]
        self.parent.helpText = _(
            "Sends the selected CT volume to an ldct MONAI Label server, loads the denoised "
            "volume (HU and geometry kept) and shows original and denoised side by side in "
            "linked views with the same window. See the extension README for a walkthrough.")
        self.parent.acknowledgementText = _(
            "Denoisers from the papers listed in the server's model cards; served with "
            "MONAI Label.")


@parameterNodeWrapper
class LowDoseCTDenoiseParameterNode:
    """Slicer's typed view of the module's parameter node, saved with the scene. The panel
    reads and writes it as LowDoseCTDenoiseLib.state.PanelState (pure Python, tested with
    pytest), which the Logic stores in this wrapper's format; the self-test checks that this
    wrapper reads what the Logic stored."""

    model: str
    strength: float = 1.0
    window: str = "Liver"
    layout: str = next(iter(LAYOUTS))
    input: slicer.vtkMRMLScalarVolumeNode
    original: slicer.vtkMRMLScalarVolumeNode
    result: slicer.vtkMRMLScalarVolumeNode
    difference: slicer.vtkMRMLScalarVolumeNode


class LowDoseCTDenoiseWidget(ScriptedLoadableModuleWidget):
    """Binds the panel's signals to the controllers; renders what they say after each click
    and each poll. Decides nothing itself."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(self.resourcePath("UI/LowDoseCTDenoise.ui"))
        self.layout.addWidget(panel)
        self.ui = ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = LowDoseCTDenoiseLogic()
        history = UrlHistory(self._setting("history", []) or [],
                             tokens=self._setting("tokens", {}) or {},
                             consented=self._setting("consent", []) or [])
        self.controller = c = DenoiseController(
            self.logic, history, self.alert, save_history=self._save_history,
            on_shown=self.on_shown, temp_root=slicer.app.temporaryPath,
            on_dicom_export=self.import_dicom)
        self.logic.on_scene_closed = self._then_render(self.scene_closed)
        self.logic.on_node_removed = self._then_render(c.node_removed)
        self.logic.on_scene_loaded = self._then_render(self.restore)
        self.saved = None  # the PanelState last written to the parameter node
        self.study_dir = Path(tempfile.mkdtemp(prefix="ldct-study-",
                                               dir=slicer.app.temporaryPath))
        self.study = StudyController(self.logic, self.alert, self.study_dir,
                                     on_item=self.on_study_item)
        self.worklist = WorklistController(c, self.logic, self.alert,
                                           temp_root=slicer.app.temporaryPath,
                                           on_dicom_import=self.import_dicom)
        self.shown = {"models": None, "studies": None, "session": None, "worklist": None,
                      "levels": None}
        self.asking = False  # the consent dialog is open (polls render meanwhile)
        self.score_groups, self.choice_group = {}, None
        self.controls = {
            "connect": (ui.serverUrlComboBox, ui.tokenLineEdit, ui.testConnectionButton,
                        ui.refreshModelsButton),
            "input": (ui.inputVolumeSelector,),
            "strength": (ui.strengthSliderWidget, ui.modeComboBox, ui.noiseLevelComboBox),
            "model": (ui.modelComboBox,), "device": (ui.deviceComboBox,),
            "remove": (ui.removeResultsButton,),
            "denoise": (ui.denoiseButton,), "cancel": (ui.cancelButton,),
            "compare": (ui.windowPresetComboBox, ui.layoutComboBox, ui.differenceCheckBox,
                        ui.flickerButton, ui.autoFlickerCheckBox),
            "pacs": (ui.sendToPacsButton,),
            "refresh": (ui.refreshStudiesButton,), "start": (ui.startStudyButton,),
            "submit": (ui.submitButton,), "list": (ui.refreshWorklistButton,),
            "open": (ui.openSeriesButton,)}
        ui.serverUrlComboBox.addItems(history.urls or [DEFAULT_URL])
        ui.tokenLineEdit.text = history.token(ui.serverUrlComboBox.currentText)
        ui.deviceComboBox.addItems(["auto", "cuda", "cpu"])
        ui.modeComboBox.addItems([STRENGTH, NOISE_LEVEL])
        ui.windowPresetComboBox.addItems([*WINDOW_PRESETS, VOLUME_PRESET])
        ui.layoutComboBox.addItems(list(LAYOUTS))
        ui.readerIdLineEdit.text = self._setting("reader", "") or ""
        ui.strengthSliderWidget.tracking = False  # one local blend on release, not per pixel
        c.select_input(ui.inputVolumeSelector.currentNode())
        c.set_strength(ui.strengthSliderWidget.value)
        for widget, signal, action in (
                (ui.serverUrlComboBox, "currentTextChanged(QString)", self.on_server_changed),
                (ui.testConnectionButton, "clicked()", self.on_connect),
                (ui.refreshModelsButton, "clicked()", self.on_connect),
                (ui.inputVolumeSelector, "currentNodeChanged(vtkMRMLNode*)", c.select_input),
                (ui.modelComboBox, "currentTextChanged(QString)", c.select_model),
                (ui.deviceComboBox, "currentTextChanged(QString)", c.set_device),
                (ui.strengthSliderWidget, "valueChanged(double)", c.set_strength),
                (ui.modeComboBox, "currentTextChanged(QString)", c.set_mode),
                (ui.noiseLevelComboBox, "currentTextChanged(QString)", c.set_noise_level),
                (ui.denoiseButton, "clicked()", c.denoise),
                (ui.cancelButton, "clicked()", c.cancel),
                (ui.windowPresetComboBox, "currentTextChanged(QString)", c.set_window),
                (ui.layoutComboBox, "currentTextChanged(QString)", c.set_layout),
                (ui.differenceCheckBox, "toggled(bool)", c.show_difference),
                (ui.flickerButton, "clicked()", c.flicker),
                (ui.autoFlickerCheckBox, "toggled(bool)", c.set_auto_flicker),
                (ui.sendToPacsButton, "clicked()", c.send_to_pacs),
                (ui.replaceResultsCheckBox, "toggled(bool)", c.set_replace),
                (ui.removeResultsButton, "clicked()", c.remove_results),
                (ui.refreshStudiesButton, "clicked()",
                 lambda: self.study.refresh(*self._server())),
                (ui.startStudyButton, "clicked()", self.on_start_study),
                (ui.refreshWorklistButton, "clicked()", self.worklist.refresh),
                (ui.openSeriesButton, "clicked()", self.on_open_series),
                (ui.worklistTable, "cellDoubleClicked(int,int)",
                 lambda row, column: self.on_open_series()),
                (ui.submitButton, "clicked()", self.on_submit)):
            widget.connect(signal, self._then_render(action))
        self.shortcuts = []  # live while the module is shown (enter/exit)
        for key in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.setEnabled(False)
            shortcut.connect("activated()", self._then_render(lambda k=key: c.press(k)))
            self.shortcuts.append(shortcut)
        self.poll_timer = self._timer(POLL_MS, self._then_render(self.on_poll))
        self.flicker_timer = self._timer(FLICKER_MS, self._then_render(c.flicker))
        self.poll_timer.start()
        self.full_timer = self._timer(FULL_KEEP_MS, self._then_render(c.release_full))
        self.full_timer.singleShot = True
        ui.strengthSliderWidget.connect("valueChanged(double)",
                                        lambda value: self.full_timer.start())
        self.restore()  # a scene loaded before the module was opened
        self.render()

    def restore(self):
        """The panel as the scene's parameter node keeps it."""
        self.controller.restore(self.logic.load_state())

    def enter(self):
        """The module is shown: its keys (flicker, window presets) work; the user's layout is
        kept (Logic) and a scene loaded meanwhile is shown (controller)."""
        for shortcut in self.shortcuts:
            shortcut.setEnabled(True)
        self.logic.module_entered()
        self.controller.module_shown(True)
        self.render()

    def exit(self):
        """Another module is shown: its keys, the layout, views and labels are the user's
        again."""
        for shortcut in self.shortcuts:
            shortcut.setEnabled(False)
        self.controller.module_shown(False)
        self.logic.module_left()

    def cleanup(self):
        for shortcut in self.shortcuts:
            shortcut.setParent(None)  # removed from the main window
        self.poll_timer.stop()
        self.flicker_timer.stop()
        self.full_timer.stop()
        self.controller.close()
        shutil.rmtree(self.study_dir, ignore_errors=True)
        self.logic.cleanup()

    # -- signals -> controllers -----------------------------------------------------------
    def _then_render(self, action):
        """A Qt slot: the action, then the panel rendered; nothing may escape into Qt (the
        controllers keep the panel usable; this says what happened)."""
        def slot(*args):
            try:
                action(*args)
            except Exception as exc:  # noqa: BLE001 - a slot must never raise
                self.alert("error", f"Unexpected error: {exc!r}")
            self.render()
        return slot

    def scene_closed(self):
        """Both sections start again: no result, no study item, no score buttons."""
        self.controller.scene_closed()
        self.study.scene_closed()
        self.shown["session"] = None
        self._clear_scores()

    def _clear_scores(self):
        """No score buttons (the old layout is re-parented to a dropped widget)."""
        self.score_groups, self.choice_group = {}, None
        if self.ui.criteriaFrame.layout() is not None:
            qt.QWidget().setLayout(self.ui.criteriaFrame.layout())

    def on_shown(self):
        """A result is shown: views fitted to it; its full-strength voxels kept a while."""
        slicer.util.resetSliceViews()
        self.full_timer.start()

    def on_poll(self):
        self.controller.poll()
        self.study.poll()
        self.worklist.poll()

    def on_server_changed(self, url):
        """Each server's own token (readers paste their reader token once)."""
        self.ui.tokenLineEdit.text = self.controller.server_changed(url)

    def on_connect(self):
        self.controller.connect(*self._server())

    def on_start_study(self):
        self._set_setting("reader", self.ui.readerIdLineEdit.text.strip())
        self.study.start(*self._server(), self.ui.studyComboBox.currentData or "",
                         self.ui.readerIdLineEdit.text)

    def on_submit(self):
        scores = {}
        for (side, criterion), group in self.score_groups.items():
            if group.checkedId() > 0:
                scores.setdefault(side, {})[criterion] = group.checkedId()
        checked = self.choice_group.checkedButton() if self.choice_group else None
        self.study.submit(scores, checked.text if checked is not None else None)

    def on_open_series(self):
        """Load and denoise the worklist row selected (its datastore id is the row's data)."""
        row = self.ui.worklistTable.currentRow()
        if row >= 0:
            self.worklist.open(self.ui.worklistTable.item(row, 0).data(qt.Qt.UserRole))

    def on_study_item(self, session: ReaderSession):
        """A new item is shown: score buttons for this session's criteria, none checked."""
        if self.shown["session"] is not session:
            self.shown["session"] = session
            self._build_score_widgets(session)
        for group in [*self.score_groups.values(), self.choice_group]:
            if group is not None:
                group.setExclusive(False)
                for button in group.buttons():
                    button.checked = False
                group.setExclusive(True)
        slicer.util.resetSliceViews()

    def import_dicom(self, folder: Path):
        """A DICOM series (the derived one the Logic wrote, or one the worklist downloaded)
        copied into Slicer's DICOM database (the DICOM module's Send sends it from there);
        the folder is removed."""
        from DICOMLib import DICOMUtils

        try:
            DICOMUtils.importDicom(str(folder), copyFiles=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def alert(self, kind: str, text: str):
        (slicer.util.warningDisplay if kind == "warning" else slicer.util.errorDisplay)(text)

    # -- controllers -> panel -------------------------------------------------------------
    def ask_consent(self, question: str):
        """The controller's consent question as a Yes/No dialog with "don't ask again"."""
        self.asking = True
        try:
            box = qt.QMessageBox(qt.QMessageBox.Question, "Send the volume?", question,
                                 qt.QMessageBox.Yes | qt.QMessageBox.No, slicer.util.mainWindow())
            box.setDefaultButton(qt.QMessageBox.No)
            remember = qt.QCheckBox("Don't ask again for this server")
            box.setCheckBox(remember)
            send = box.exec_() == qt.QMessageBox.Yes
            self.controller.answer_consent(send, remember.checked)
        finally:
            self.asking = False
        self.render()

    def render(self):
        ui, view, study = self.ui, self.controller.view(), self.study.view()
        if view.question and not self.asking:
            self.ask_consent(view.question)
            return
        state = self.controller.panel_state()
        if state != self.saved:  # the scene keeps the panel (saved with it, restored on load)
            self.logic.save_state(state)
            self.saved = state
        ui.connectionStatusLabel.text = view.connection
        ui.statusLabel.text = view.status
        ui.progressBar.setRange(0, 0 if view.progress is None else 100)  # 0, 0: busy
        ui.progressBar.value = view.progress or 0
        if view.models != self.shown["models"]:
            self.shown["models"] = view.models
            self._refill(ui.modelComboBox, [(m.name, m.tooltip()) for m in view.models],
                         qt.Qt.ToolTipRole, self.controller.model)
        if view.levels != self.shown["levels"]:
            self.shown["levels"] = view.levels
            self._refill(ui.noiseLevelComboBox, [(name, name) for name in view.levels],
                         qt.Qt.ToolTipRole, view.level)
        ui.noiseLevelComboBox.visible = ui.noiseLevelComboBoxLabel.visible = \
            view.mode == NOISE_LEVEL
        ui.noiseLabel.text = view.noise
        if study.studies != self.shown["studies"]:
            self.shown["studies"] = study.studies
            self._refill(ui.studyComboBox, study.studies, qt.Qt.UserRole)
        for widget, now, value, setter in (
                (ui.windowPresetComboBox, ui.windowPresetComboBox.currentText, view.window,
                 "setCurrentText"),
                (ui.layoutComboBox, ui.layoutComboBox.currentText, view.layout, "setCurrentText"),
                (ui.modelComboBox, ui.modelComboBox.currentText, view.model, "setCurrentText"),
                (ui.modeComboBox, ui.modeComboBox.currentText, view.mode, "setCurrentText"),
                (ui.noiseLevelComboBox, ui.noiseLevelComboBox.currentText, view.level,
                 "setCurrentText"),
                (ui.strengthSliderWidget, ui.strengthSliderWidget.value, view.strength,
                 "setValue"),
                (ui.inputVolumeSelector, ui.inputVolumeSelector.currentNode(), view.input,
                 "setCurrentNode"),
                (ui.differenceCheckBox, ui.differenceCheckBox.checked, view.difference,
                 "setChecked"),
                (ui.autoFlickerCheckBox, ui.autoFlickerCheckBox.checked, view.auto_flicker,
                 "setChecked")):
            if now != value:  # a key, a new result, a loaded scene or a stop changed it
                widget.blockSignals(True)  # the controller has the value already
                getattr(widget, setter)(value)
                widget.blockSignals(False)
        ui.studyProgressLabel.text = study.progress
        ui.worklistStatusLabel.text = self.worklist.status
        if self.worklist.rows != self.shown["worklist"]:
            self.shown["worklist"] = self.worklist.rows
            self._fill_worklist(self.worklist.rows)
        enabled = view.enabled | study.enabled | self.worklist.enabled()
        for control, widgets in self.controls.items():
            for widget in widgets:
                widget.enabled = control in enabled
        if view.auto_flicker != self.flicker_timer.isActive():
            (self.flicker_timer.start if view.auto_flicker else self.flicker_timer.stop)()

    def _fill_worklist(self, rows):
        table = self.ui.worklistTable
        table.setRowCount(len(rows))
        for k, row in enumerate(rows):
            for column, text in enumerate((row.patient, row.study_date, row.description)):
                table.setItem(k, column, qt.QTableWidgetItem(text))
            table.item(k, 0).setData(qt.Qt.UserRole, row.image)

    @staticmethod
    def _refill(combo, items, role, current=""):
        """Items as (text, value of ``role``), without a change signal per item."""
        combo.blockSignals(True)
        combo.clear()
        for k, (text, value) in enumerate(items):
            combo.addItem(text)
            combo.setItemData(k, value, role)
        if current:
            combo.setCurrentText(current)
        combo.blockSignals(False)

    def _build_score_widgets(self, session: ReaderSession):
        frame = self.ui.criteriaFrame
        self._clear_scores()
        form = qt.QFormLayout(frame)
        sides = ["A", "B"] if session.forced_choice else ["A"]
        self.score_groups = {}
        for criterion in session.criteria:
            anchors = ", ".join(f"{k} = {v}" for k, v in criterion["anchors"].items())
            for side in sides:
                row = qt.QHBoxLayout()
                group = qt.QButtonGroup(frame)
                for value in range(1, 6):
                    button = qt.QRadioButton(str(value))
                    button.toolTip = criterion["anchors"].get(str(value), "")
                    group.addButton(button, value)
                    row.addWidget(button)
                label = qt.QLabel(f"{criterion['question']} ({side})")
                label.toolTip = anchors
                form.addRow(label, row)
                self.score_groups[(side, criterion["name"])] = group
        self.choice_group = None
        if session.forced_choice:
            row = qt.QHBoxLayout()
            self.choice_group = qt.QButtonGroup(frame)
            for side in sides:
                button = qt.QRadioButton(side)
                self.choice_group.addButton(button)
                row.addWidget(button)
            form.addRow(qt.QLabel("Better image:"), row)

    # -- helpers --------------------------------------------------------------------------
    def _server(self):
        return self.ui.serverUrlComboBox.currentText, self.ui.tokenLineEdit.text

    def _save_history(self, history: UrlHistory):
        self._set_setting("history", history.urls)
        self._set_setting("tokens", history.tokens)
        self._set_setting("consent", history.consented)

    @staticmethod
    def _timer(interval_ms, slot):
        timer = qt.QTimer()
        timer.setInterval(interval_ms)
        timer.connect("timeout()", slot)
        return timer

    @staticmethod
    def _setting(key, default):
        value = qt.QSettings().value(f"{SETTINGS}/{key}", default)
        if isinstance(default, list) and isinstance(value, str):
            value = [value]  # QSettings reads a one-item list back as its item
        return value

    @staticmethod
    def _set_setting(key, value):
        qt.QSettings().setValue(f"{SETTINGS}/{key}", value)


class LowDoseCTDenoiseTest(ScriptedLoadableModuleTest):
    """Inside Slicer: the Denoise button's path against a fake server started in this
    process (LowDoseCTDenoiseLib.selftest; no live server needed, as on Slicer's factory
    machines). pytest runs the same scenario on plain MRML."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_denoise_on_the_fake_server()
        self.setUp()
        self.test_the_parameter_node_wrapper_reads_the_panel_state()

    def test_denoise_on_the_fake_server(self):
        self.delayDisplay("Denoising a synthetic CT on an in-process fake server")
        selftest.run(pump=slicer.app.processEvents, temp_root=slicer.app.temporaryPath)
        self.delayDisplay("Test passed")

    def test_the_parameter_node_wrapper_reads_the_panel_state(self):
        """What the Logic stores (pytest checks it on plain MRML) is what Slicer's
        parameterNodeWrapper reads."""
        logic = LowDoseCTDenoiseLogic()
        try:
            node = selftest.synthetic_ct()
            logic.save_state(PanelState("m", 0.4, "Abdomen", "Axial + coronal", input=node.GetID()))
            parameters = LowDoseCTDenoiseParameterNode(logic.parameter_node())
            self.assertEqual((parameters.model, parameters.strength, parameters.window,
                              parameters.layout), ("m", 0.4, "Abdomen", "Axial + coronal"))
            self.assertIs(parameters.input, node)
            self.assertIsNone(parameters.result)
        finally:
            logic.cleanup()


if __name__ == "__main__":
    unittest.main()
