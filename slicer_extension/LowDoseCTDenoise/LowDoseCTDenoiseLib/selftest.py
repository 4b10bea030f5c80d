"""The module's self-test: the Denoise button's path end to end against the in-process fake
server, so it passes on Slicer's factory machines (no live server there).

Run by ``LowDoseCTDenoiseTest`` inside Slicer and by pytest on plain MRML (slicer-core): the
panel's controller with the real Logic connects, asks consent, compresses, uploads, denoises,
downloads, blends at strength 0.5 and shows the pair; every check raises AssertionError.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import slicer

from .controller import DenoiseController, State
from .display import UrlHistory
from .fakeserver import MODEL, FakeServer, smooth
from .logic import LowDoseCTDenoiseLogic

STRENGTH = 0.5
TIMEOUT_S = 60.0


def synthetic_ct(name: str = "synthetic CT"):
    """A small int16 CT in ``slicer.mrmlScene``: a noisy soft-tissue ellipse in air."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:4, :128, :128]
    body = ((x - 64) / 55.0) ** 2 + ((y - 64) / 45.0) ** 2 < 1
    hu = np.where(body, 50.0, -1000.0) + body * rng.normal(0, 40, body.shape)
    node = slicer.util.addVolumeFromArray(np.rint(hu).astype(np.int16), name=name)
    node.SetSpacing(0.78, 0.78, 2.5)
    node.SetOrigin(-50.0, 60.0, 12.5)
    return node


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _settle(panel: DenoiseController, pump: Callable[[], None]) -> None:
    """Wait for the panel's worker as the widget's timer does, keeping Slicer responsive."""
    deadline = time.monotonic() + TIMEOUT_S
    while not panel.wait(0.1):
        _check(time.monotonic() < deadline, f"no answer within {TIMEOUT_S:g} s: {panel.status}")
        pump()
    panel.poll()


def run(pump: Callable[[], None] = lambda: None, temp_root: Optional[str] = None):
    """Denoise a synthetic CT in ``slicer.mrmlScene`` through the panel against the fake
    server and check what the user sees; returns the result node."""
    node = synthetic_ct()
    before = slicer.util.arrayFromVolume(node).copy()
    logic, alerts = LowDoseCTDenoiseLogic(), []
    panel = DenoiseController(logic, UrlHistory(), lambda kind, text: alerts.append(text),
                              temp_root=temp_root)
    try:
        with FakeServer() as server:
            panel.connect(server.url, "")
            _settle(panel, pump)
            _check(panel.state is State.READY and panel.model == MODEL, panel.connection)
            panel.select_input(node)
            panel.set_strength(STRENGTH)
            panel.denoise()
            _check(panel.state is State.CONSENT, f"no consent asked: {panel.status}")
            panel.answer_consent(True)
            _settle(panel, pump)
        _check(panel.state is State.DONE and not alerts, f"{panel.status} {alerts}")
        original, result = logic.pair
        denoised = np.frombuffer(smooth(before.tobytes(), "int16"), np.int16).reshape(
            before.shape).astype(np.float32)
        expected = before + np.float32(STRENGTH) * (denoised - before)
        _check(original is node and np.array_equal(slicer.util.arrayFromVolume(node), before),
               "the input volume changed")
        _check(np.allclose(slicer.util.arrayFromVolume(result), expected, atol=0.5),
               "the result is not the server's, blended at the chosen strength (whole HU)")
        _check(result.GetName() == f"synthetic CT {MODEL} s=0.5", result.GetName())
        _check(result.GetSpacing() == node.GetSpacing()
               and result.GetOrigin() == node.GetOrigin(), "the result's geometry differs")
        _check(logic.slice_node("Yellow").GetLayoutLabel() == f"{MODEL} s=0.5",
               "the result's view is not labelled with model and strength")
        _check(result.GetDisplayNode().GetWindow() == 400.0, "the Liver window is not applied")
        return result
    finally:
        panel.close()
        logic.cleanup()
