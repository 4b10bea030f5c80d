"""The Slicer panel's choice between "strength" and "noise level" (issue 37): the levels and
each model's default strength come from /info/; in noise-level mode the request carries
``target_noise`` and the panel shows the server's match and sets the slider to its strength.
The controller runs against a scripted HTTP server (its answers are the answer key); the
reading and the noise are checked against the real ldct server on a volume of known noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from LowDoseCTDenoiseLib import DenoiseClient, State
from LowDoseCTDenoiseLib.controller import NOISE_LEVEL, STRENGTH
from LowDoseCTDenoiseLib.logic import read_result
from test_slicer_client import fake_server  # noqa: F401 - the fixture
from test_slicer_controller import _click_denoise, _settle, panel  # noqa: F401 - the fixture
from test_target_noise import NOISE_SD, known, true_noise  # noqa: F401 - the fixture

from ldct.io import read_volume, write_volume

LEVELS = {"low": 20.0, "medium": 15.0, "high": 10.0,
          "liver portal venous": {"B30f": 12.0, "default": 14.0}}
INFO = json.dumps({"models": {
    "m": {"type": "others", "ldct": {"kind": "network", "default_strength": 0.85,
                                     "noise_levels": LEVELS}},
    "g": {"type": "others", "ldct": {"kind": "baseline", "default_strength": 1.0,
                                     "noise_levels": LEVELS}}}}).encode()


def _noise_header(strength: float, reached: bool = True) -> dict:
    return {"X-Noise-Level": json.dumps(
        {"target_noise": 12.0, "input_noise": 41.2, "strength": strength,
         "result_noise": 12.0 if reached else 19.5, "reached": reached,
         "level": "liver portal venous"})}


def _noise_level_mode(controller, url: str, handler) -> None:
    """Connected to the scripted server, CT chosen, noise-level mode (its default level)."""
    handler.routes["/info/"] = (200, INFO)
    controller.connect(url, "")
    _settle(controller)
    controller.select_input("CT")
    controller.set_mode(NOISE_LEVEL)
    handler.held = ()


def _sent_params(handler) -> dict:
    """The params form field of the last request (the multipart body's first part)."""
    return json.loads(handler.bodies[-1].decode("latin-1").split("\r\n\r\n", 1)[1]
                      .split("\r\n", 1)[0])


def test_the_slider_starts_at_each_models_default_level(panel):  # noqa: F811 - the imported fixture
    controller, url, handler, *_ = panel
    handler.routes["/info/"] = (200, INFO)
    controller.connect(url, "")
    _settle(controller)
    assert controller.model == "m" and controller.strength == 0.85
    controller.select_model("g")
    assert controller.strength == 1.0
    controller.set_strength(0.4)
    controller.connect(url, "")  # Refresh: the same model, the user's strength stays
    _settle(controller)
    assert controller.strength == 0.4
    controller.select_model("m")
    assert controller.view().strength == 0.85


def test_a_noise_level_is_asked_for_and_its_match_shown(panel):  # noqa: F811 - the imported fixture
    controller, url, handler, logic, alerts, *_ = panel
    handler.routes["/info/"] = (200, INFO)
    controller.connect(url, "")
    _settle(controller)
    controller.select_input("CT")
    controller.set_mode(NOISE_LEVEL)
    view = controller.view()
    assert view.mode == NOISE_LEVEL and view.level == "medium"
    assert view.levels == ("low", "medium", "high", "liver portal venous")
    controller.set_noise_level("nonsense")  # not a level of this server: ignored
    controller.set_noise_level("liver portal venous")
    handler.held = ()
    handler.routes["/infer/m"] = (200, b"blended volume", _noise_header(0.62))
    _click_denoise(controller)
    _settle(controller)
    assert _sent_params(handler) == {"target_noise": "liver portal venous", "device": "auto",
                      "result_dtype": "int16"}
    assert controller.state is State.DONE and not alerts
    assert logic.reads == [(0.62, True)]  # the file is the server's blend at 0.62
    assert logic.calls[1][:5] == ("load", b"blended volume", "CT", "m", 0.62)
    assert controller.strength == 0.62 and controller.view().strength == 0.62
    assert controller.view().noise == ("Noise 41.2 HU -> 12.0 HU at strength 0.62, level "
                                       "liver portal venous (12 HU)")
    assert logic.released == 0
    controller.set_strength(0.3)  # then blended here as any result
    assert logic.calls[-1] == ("strength", 0.3)


def test_a_level_out_of_reach_says_so_and_strength_mode_asks_full_strength(panel):  # noqa: F811 - the imported fixture
    controller, url, handler, logic, *_ = panel
    _noise_level_mode(controller, url, handler)
    handler.routes["/infer/m"] = (200, b"input again", _noise_header(0.0, reached=False))
    _click_denoise(controller)
    _settle(controller)
    assert controller.view().noise == ("Noise 41.2 HU -> 19.5 HU at strength 0.00: level "
                                       "liver portal venous (12 HU) is not reachable (the "
                                       "nearest end)")
    assert controller.strength == 0.0 and logic.released == 1  # nothing to re-blend from
    assert "another strength needs a new Denoise" in controller.status
    controller.set_mode(STRENGTH)
    handler.routes["/infer/m"] = (200, b"full volume")
    _click_denoise(controller)
    _settle(controller)
    params = _sent_params(handler)
    assert params["strength"] == 1.0 and "target_noise" not in params
    assert logic.reads[-1] == (0.0, False) and controller.view().noise == ""


def test_a_server_that_says_no_strength_fails_clearly(panel):  # noqa: F811 - the imported fixture
    controller, url, handler, *_ = panel
    _noise_level_mode(controller, url, handler)
    handler.routes["/infer/m"] = (200, b"blended volume")  # no X-Noise-Level
    _click_denoise(controller)
    _settle(controller)
    assert controller.state is State.ERROR
    assert "did not say which strength leaves the noise level 'medium'" in controller.status


def test_the_real_servers_noise_level_and_the_recovered_full_result(
        ldct_server, known, tokens, tmp_path):  # noqa: F811 - the imported fixture
    """Against the real server, on a volume of known noise (40 HU on a noiseless phantom):
    the result has the asked noise within 10 %, and the full-strength voxels the panel
    recovers from the blend are the server's own full result within the int16 roundings."""
    volume, clean, flat = known
    source = write_volume(volume, tmp_path / "in.nrrd", dtype="int16")
    original = read_volume(source).hu.astype(np.int16)
    client = DenoiseClient(ldct_server, token=tokens["radiologist"])
    blended = client.denoise("ldct-gauss", source, tmp_path / "level.nrrd",
                             {"target_noise": 30.0, "result_dtype": "int16"})
    noise = client.noise
    assert noise["reached"] is True and noise["target_noise"] == 30.0
    assert noise["input_noise"] == pytest.approx(NOISE_SD, rel=0.05)
    assert 0.2 < noise["strength"] < 1.0
    assert true_noise(read_volume(blended).hu, clean, flat) == pytest.approx(30.0, rel=0.10)
    full = read_volume(client.denoise("ldct-gauss", source, tmp_path / "full.nrrd",
                                      {"strength": 1.0, "result_dtype": "int16"})).hu
    assert client.noise == {}  # a strength request has no noise match
    read = read_result(blended, original, noise["strength"], blended=True)
    shape = original.shape
    shown = _voxels(read.shown, shape)
    recovered = _voxels(read.full, shape)
    np.testing.assert_array_equal(shown, read_volume(blended).hu)  # shown as it came
    gap = np.abs(recovered - full).max()
    assert gap <= 0.5 / noise["strength"] + 0.5 + 0.01, gap  # the two int16 roundings


def _voxels(image, shape) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
