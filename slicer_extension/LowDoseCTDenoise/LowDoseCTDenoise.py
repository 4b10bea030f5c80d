"""3D Slicer module: denoise the loaded CT on an ldct server, compare original and result.

The widget only wires Qt to the Logic (LowDoseCTDenoiseLogic.py, MRML only) and to the
pure-Python library (LowDoseCTDenoiseLib: server client, worker job, display rules); both are
tested outside Slicer. Network work runs on a worker thread polled by a QTimer, so the UI
never freezes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import qt
import slicer
from LowDoseCTDenoiseLib import (
    VOLUME_PRESET,
    WINDOW_PRESETS,
    BackgroundCall,
    Cancelled,
    DenoiseClient,
    DenoiseJob,
    ReaderSession,
    ServerError,
    StudyClient,
    UrlHistory,
)
from LowDoseCTDenoiseLogic import LowDoseCTDenoiseLogic
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

SETTINGS = "LowDoseCTDenoise"
DEFAULT_URL = "http://127.0.0.1:8000"
POLL_MS = 200
FLICKER_MS = 700


class LowDoseCTDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Low-dose CT Denoise"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["ldct founding team"]
        self.parent.helpText = (
            "Sends the selected CT volume to an ldct MONAI Label server, loads the denoised "
            "volume (HU and geometry kept) and shows original and denoised side by side in "
            "linked views with the same window. See the extension README for a walkthrough.")
        self.parent.acknowledgementText = (
            "Denoisers from the papers listed in the server's model cards; served with "
            "MONAI Label.")


class LowDoseCTDenoiseWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(self.resourcePath("UI/LowDoseCTDenoise.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = LowDoseCTDenoiseLogic()
        self.job = None
        self.job_input = None
        self.workdir = None
        self.history = UrlHistory(self._setting("history", []) or [],
                                  tokens=self._setting("tokens", {}) or {})
        self.ui.serverUrlComboBox.addItems(self.history.urls or [DEFAULT_URL])
        self.ui.tokenLineEdit.text = self.history.token(self.ui.serverUrlComboBox.currentText)
        self.ui.serverUrlComboBox.connect("currentTextChanged(QString)", self.on_server_changed)
        self.ui.deviceComboBox.addItems(["auto", "cuda", "cpu"])
        self.ui.windowPresetComboBox.addItems([*WINDOW_PRESETS, VOLUME_PRESET])
        self.poll_timer = qt.QTimer()
        self.poll_timer.setInterval(POLL_MS)
        self.poll_timer.connect("timeout()", self.on_poll)
        self.flicker_timer = qt.QTimer()
        self.flicker_timer.setInterval(FLICKER_MS)
        self.flicker_timer.connect("timeout()", self.logic.flicker)
        self.ui.testConnectionButton.connect("clicked()", self.on_test_connection)
        self.ui.refreshModelsButton.connect("clicked()", self.on_test_connection)
        self.ui.denoiseButton.connect("clicked()", self.on_denoise)
        self.ui.cancelButton.connect("clicked()", self.on_cancel)
        self.ui.windowPresetComboBox.connect("currentTextChanged(QString)", self.on_window)
        self.ui.differenceCheckBox.connect("toggled(bool)", self.on_difference)
        self.ui.flickerButton.connect("clicked()", self.logic.flicker)
        self.ui.autoFlickerCheckBox.connect("toggled(bool)", self.on_auto_flicker)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_buttons)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.update_buttons)
        self.ui.refreshStudiesButton.connect("clicked()", self.on_refresh_studies)
        self.ui.startStudyButton.connect("clicked()", self.on_start_study)
        self.ui.submitButton.connect("clicked()", self.on_submit)
        self.ui.readerIdLineEdit.text = self._setting("reader", "") or ""
        self.reader = None  # the ReaderSession
        self.study_call = None
        self.score_groups = {}
        self.choice_group = None
        self.study_dir = Path(tempfile.mkdtemp(prefix="ldct-study-"))
        self.study_timer = qt.QTimer()
        self.study_timer.setInterval(POLL_MS)
        self.study_timer.connect("timeout()", self.on_study_poll)
        self.update_buttons()

    def cleanup(self):
        self.poll_timer.stop()
        self.flicker_timer.stop()
        self.study_timer.stop()
        shutil.rmtree(self.study_dir, ignore_errors=True)
        if self.job is not None:
            self.job.cancel()
        self.logic.cleanup()

    # -- server ---------------------------------------------------------------------------
    def server(self, kind):
        """A DenoiseClient or StudyClient for the URL and token in the panel."""
        return kind(self.ui.serverUrlComboBox.currentText, token=self.ui.tokenLineEdit.text)

    def on_server_changed(self, url):
        """Each server's own token (readers paste their reader token once)."""
        self.ui.tokenLineEdit.text = self.history.token(url)

    def on_test_connection(self):
        self.ui.modelComboBox.clear()
        try:
            with slicer.util.WaitCursor():  # a short call: /info/ with a 5 s connect timeout
                client = self.server(DenoiseClient)
                models = client.models()
        except ServerError as exc:
            self.ui.connectionStatusLabel.text = str(exc)
            slicer.util.errorDisplay(str(exc))
            self.update_buttons()
            return
        self.history.add(client.url, self.ui.tokenLineEdit.text)
        self._set_setting("history", self.history.urls)
        self._set_setting("tokens", self.history.tokens)
        for k, model in enumerate(models):
            self.ui.modelComboBox.addItem(model.name)
            self.ui.modelComboBox.setItemData(k, model.tooltip(), qt.Qt.ToolTipRole)
        self.ui.connectionStatusLabel.text = f"Connected to {client.url}: {len(models)} models"
        self.update_buttons()

    # -- denoise --------------------------------------------------------------------------
    def on_denoise(self):
        node = self.ui.inputVolumeSelector.currentNode()
        try:  # a mistyped URL is said before anything is exported
            client = self.server(DenoiseClient)
        except ServerError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.workdir = Path(tempfile.mkdtemp(prefix="ldct-slicer-"))
        try:
            upload = self.logic.export_input(node, self.workdir / "input.nrrd")
        except (ValueError, OSError) as exc:
            slicer.util.errorDisplay(str(exc))
            self._remove_workdir()
            return
        params = {"strength": self.ui.strengthSliderWidget.value,
                  "device": self.ui.deviceComboBox.currentText, "result_dtype": "int16"}
        self.job = DenoiseJob(client, self.ui.modelComboBox.currentText, upload,
                              self.workdir / "result.nrrd", params).start()
        self.job_input = node
        self.poll_timer.start()
        self.update_buttons()

    def on_cancel(self):
        if self.job is not None:
            self.job.cancel()

    def on_poll(self):
        job = self.job
        self.ui.progressBar.value = int(100 * job.fraction)
        self.ui.statusLabel.text = job.status_text()
        if not job.done:
            return
        self.poll_timer.stop()
        self.job = None
        try:
            if isinstance(job.error, Cancelled):  # asked for: not an error
                self.ui.statusLabel.text = "Cancelled; the server stopped its work too."
                return
            if job.error is not None:
                slicer.util.errorDisplay(str(job.error))
                return
            result = self.logic.load_result(job.result, self.job_input, job.model)
            self.logic.show_side_by_side(self.job_input, result,
                                         self.ui.windowPresetComboBox.currentText)
            slicer.util.resetSliceViews()
            check = job.client.ct_check
            self.ui.statusLabel.text = f"Loaded '{result.GetName()}'. {check['message']}"
            if check.get("passed") is False:
                slicer.util.warningDisplay(check["message"], windowTitle="CT numbers moved")
        except Exception as exc:  # noqa: BLE001 - show it, keep the UI usable
            slicer.util.errorDisplay(f"Could not show the result: {exc}")
        finally:
            self._remove_workdir()
            self.update_buttons()

    # -- compare --------------------------------------------------------------------------
    def on_window(self, preset):
        if self.logic.pair is not None:
            self.logic.apply_window(preset)

    def on_difference(self, on):
        if self.logic.pair is not None:
            self.logic.show_difference(on)

    def on_auto_flicker(self, on):
        if on and self.logic.pair is not None:
            self.flicker_timer.start()
        else:
            self.flicker_timer.stop()

    # -- reader study (blinded: only "A"/"B", tokens and scores pass through here) --------
    def on_refresh_studies(self):
        self.ui.studyComboBox.clear()
        try:
            with slicer.util.WaitCursor():
                studies = self.server(StudyClient).studies()
        except ServerError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        for study in studies:
            self.ui.studyComboBox.addItem(study["name"], study["study"])

    def on_start_study(self):
        study = self.ui.studyComboBox.currentData
        if not study:
            slicer.util.errorDisplay("Refresh the studies and pick one first.")
            return
        try:
            with slicer.util.WaitCursor():
                self.reader = ReaderSession(self.server(StudyClient), study,
                                            self.ui.readerIdLineEdit.text)
        except (ServerError, ValueError) as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self._set_setting("reader", self.reader.reader)
        self._build_score_widgets()
        self.load_next_item()

    def load_next_item(self):
        self.ui.submitButton.enabled = False
        self.ui.studyProgressLabel.text = f"{self.reader.progress_text()}: loading..."
        self.study_call = BackgroundCall(self.reader.load_next, self.study_dir).start()
        self.study_timer.start()

    def on_study_poll(self):
        if not self.study_call.done:
            return
        self.study_timer.stop()
        call, self.study_call = self.study_call, None
        if call.error is not None:
            slicer.util.errorDisplay(str(call.error))
            return
        if not call.result:
            self.logic.clear_study_item()
            self.ui.studyProgressLabel.text = self.reader.progress_text()
            return
        self.logic.show_study_item(call.result, self.reader.window)
        slicer.util.resetSliceViews()
        for group in [*self.score_groups.values(), self.choice_group]:
            if group is not None:
                group.setExclusive(False)
                for button in group.buttons():
                    button.checked = False
                group.setExclusive(True)
        self.ui.studyProgressLabel.text = self.reader.progress_text()
        self.ui.submitButton.enabled = True

    def on_submit(self):
        scores = {}
        for (side, criterion), group in self.score_groups.items():
            if group.checkedId() > 0:
                scores.setdefault(side, {})[criterion] = group.checkedId()
        choice = None
        if self.choice_group is not None and self.choice_group.checkedButton() is not None:
            choice = self.choice_group.checkedButton().text
        try:
            with slicer.util.WaitCursor():
                self.reader.answer(scores, choice)
        except (ServerError, ValueError) as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.load_next_item()

    def _build_score_widgets(self):
        frame = self.ui.criteriaFrame
        if frame.layout() is not None:
            qt.QWidget().setLayout(frame.layout())  # re-parent the old layout to drop it
        form = qt.QFormLayout(frame)
        sides = ["A", "B"] if self.reader.forced_choice else ["A"]
        self.score_groups = {}
        for criterion in self.reader.criteria:
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
        if self.reader.forced_choice:
            row = qt.QHBoxLayout()
            self.choice_group = qt.QButtonGroup(frame)
            for side in sides:
                button = qt.QRadioButton(side)
                self.choice_group.addButton(button)
                row.addWidget(button)
            form.addRow(qt.QLabel("Better image:"), row)

    # -- helpers --------------------------------------------------------------------------
    def update_buttons(self, *_):
        busy = self.job is not None
        ready = (self.ui.inputVolumeSelector.currentNode() is not None
                 and self.ui.modelComboBox.count > 0)
        self.ui.denoiseButton.enabled = ready and not busy
        self.ui.cancelButton.enabled = busy
        for widget in (self.ui.differenceCheckBox, self.ui.flickerButton,
                       self.ui.autoFlickerCheckBox, self.ui.windowPresetComboBox):
            widget.enabled = self.logic.pair is not None

    def _remove_workdir(self):
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @staticmethod
    def _setting(key, default):
        return qt.QSettings().value(f"{SETTINGS}/{key}", default)

    @staticmethod
    def _set_setting(key, value):
        qt.QSettings().setValue(f"{SETTINGS}/{key}", value)


class LowDoseCTDenoiseTest(ScriptedLoadableModuleTest):
    """Inside Slicer: the pytest scenario against a running server ($LDCT_SERVER_URL or
    http://127.0.0.1:8000, e.g. started with `make demo`; $LDCT_SERVER_TOKEN: a radiologist
    or admin token of it)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_denoise_side_by_side()

    def test_denoise_side_by_side(self):
        url = os.environ.get("LDCT_SERVER_URL", DEFAULT_URL)
        self.delayDisplay(f"Denoising a synthetic CT on {url}")
        rng = np.random.default_rng(0)
        z, y, x = np.mgrid[:4, :256, :256]
        body = ((x - 128) / 110.0) ** 2 + ((y - 128) / 90.0) ** 2 < 1
        hu = np.where(body, 50.0, -1000.0) + body * rng.normal(0, 40, body.shape)
        node = slicer.util.addVolumeFromArray(hu.astype(np.int16), name="synthetic CT")
        node.SetSpacing(0.78, 0.78, 2.5)
        before = slicer.util.arrayFromVolume(node).copy()
        logic = LowDoseCTDenoiseLogic()
        folder = Path(tempfile.mkdtemp())
        try:
            upload = logic.export_input(node, folder / "in.nrrd")
            job = DenoiseJob(DenoiseClient(url, token=os.environ.get("LDCT_SERVER_TOKEN", "")),
                             "ldct-gauss", upload, folder / "out.nrrd")
            job.start()
            while not job.done:
                slicer.app.processEvents()  # keep the UI alive while the worker runs
                job.wait(0.1)
            self.assertIsNone(job.error)
            result = logic.load_result(job.result, node, "ldct-gauss")
            logic.show_side_by_side(node, result, "Liver")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
        self.assertEqual(result.GetName(), "synthetic CT denoised (ldct-gauss)")
        self.assertEqual(result.GetDisplayNode().GetWindow(), 400.0)
        self.assertEqual(node.GetDisplayNode().GetWindow(), 400.0)
        self.assertLess(slicer.util.arrayFromVolume(result)[body].std(), before[body].std())
        self.delayDisplay("Test passed")


if __name__ == "__main__":
    unittest.main()
