"""The phantom QA's verdicts reach users: /info/ of a real server, the Slicer model card, the
model-selection rule."""

from __future__ import annotations

import pytest
import requests
from conftest import bearer
from LowDoseCTDenoiseLib import DenoiseClient
from LowDoseCTDenoiseLib.client import ModelEntry

from ldct import registry


@pytest.mark.skipif(not registry.task_quality(),
                    reason="no models/task_quality.json yet: `ldct qa --write` makes it")
def test_info_carries_each_models_dose_reduction_and_detectability_losses(ldct_server, tokens):
    quality = registry.task_quality()
    info = requests.get(f"{ldct_server}/info/", headers=bearer(tokens["radiologist"]),
                        timeout=60).json()
    for name, model in info["models"].items():
        assert model["ldct"]["task_based_quality"] == quality.get(name, {})
    models = {m.name: m for m in DenoiseClient(ldct_server, token=tokens["radiologist"]).models()}
    measured = [n for n in models if quality.get(n, {}).get("dose_reduction_median") is not None]
    assert measured and all("Phantom QA: dose-reduction estimate" in models[n].tooltip()
                            for n in measured)


def test_the_slicer_card_states_the_estimate_and_any_loss():
    lost = {"dose_reduction_median": 0.4, "detectability_losses": [{}, {}]}
    tip = ModelEntry("m", "M", card={"task_based_quality": lost}).tooltip()
    assert ("Phantom QA: dose-reduction estimate 40 %; LOSES low-contrast detectability in 2 "
            "condition(s) at dose >= 25 %") in tip
    kept = {"dose_reduction_median": 0.55, "detectability_losses": []}
    assert "55 %; no detectability loss" in ModelEntry(
        "m", "M", card={"task_based_quality": kept}).tooltip()
    assert "Phantom QA" not in ModelEntry("m", "M", card={}).tooltip()


def test_the_selection_passes_over_a_model_that_loses_detectability():
    """benchmarks/select_model.py: the best worst-case PSNR gain wins only among models that
    keep detectability on the phantoms (besides CT numbers and SSIM)."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from select_model import Scores, best

    sharper = Scores({"hann": [5.0]}, ssim=0.05, bias=1.0, loses_detectability=True)
    safer = Scores({"hann": [4.0]}, ssim=0.04, bias=1.0)
    assert best({"sharper": sharper, "safer": safer}) == "safer"
    assert best({"sharper": replace(sharper, loses_detectability=False),
                 "safer": safer}) == "sharper"


@pytest.mark.parametrize("text", ["{\"vagan\": {\"dose_reduction_median\": 0.4", "[1, 2]",
                                  "{\"vagan\": 0.4}", "\xff\xfe"])
def test_a_malformed_task_quality_file_is_ignored_with_the_command_that_remakes_it(
        text, tmp_path, monkeypatch, caplog):
    """A truncated, wrongly shaped or undecodable models/task_quality.json must not take
    /info/ down (it serializes each model's summary): the models show no QA verdict and the
    log names the file and `ldct qa --write`."""
    bad = tmp_path / "task_quality.json"
    bad.write_bytes(text.encode("latin-1"))
    monkeypatch.setattr(registry, "QUALITY_FILE", bad)
    assert registry.task_quality() == {}
    assert registry.get("ldct-gauss").summary()["task_based_quality"] == {}
    assert str(bad) in caplog.text and "ldct qa --write" in caplog.text
