"""Each model's default level (issue 37): a caller that gives neither strength nor target_noise
gets the strength that leaves about the normal dose's own noise. The answer key is the sweep's
outcome as literals (benchmarks/quality/texture/kernels.md: vagan 0.9, non-local means 0.85,
the others, n2n25d included, 1), never the catalogue's own table."""

from __future__ import annotations

import numpy as np
from conftest import monai_client

from ldct.cli import main
from ldct.infer import denoise
from ldct.io import read_volume, write_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose
from ldct.study.definition import parse
from ldct.study.service import StudyService

SWEEP = {"vagan": 0.90, "n2n25d": 1.0, "alden": 1.0, "pan": 1.0, "pdml": 1.0,
         "ldct-gauss": 1.0, "ldct-nlm": 0.85}


def _low(seed: int = 3):
    phantom = make_phantom(size=128, slices=3, seed=seed)
    return simulate_low_dose(phantom.volume, LowDoseParams(dose=0.25), seed=seed, progress=False)


def test_info_and_infer_use_each_models_default_level(ldct_server, tmp_path, tokens):
    client = monai_client(ldct_server, tmp_path, tokens["radiologist"])
    models = client.info()["models"]
    for name, strength in SWEEP.items():
        assert models[name]["ldct"]["default_strength"] == strength, name
        assert models[name]["config"]["strength"] == strength, name  # what MONAI Label sends
        assert models[name]["params"]["properties"]["strength"]["default"] == strength, name
    plain, said = client.infer("vagan", "phantom", {})
    assert said["strength"] == 0.9
    at_09, _ = client.infer("vagan", "phantom", {"strength": 0.9})
    full, full_said = client.infer("vagan", "phantom", {"strength": 1})
    assert full_said["strength"] == 1.0  # an explicit 1 is still full strength
    np.testing.assert_array_equal(read_volume(plain).hu, read_volume(at_09).hu)
    assert np.abs(read_volume(plain).hu - read_volume(full).hu).max() > 1.0
    _, gauss = client.infer("ldct-gauss", "phantom", {})
    assert gauss["strength"] == 1.0


def test_ldct_denoise_without_strength_uses_the_default_level(tmp_path, capsys):
    low = _low()
    source = write_volume(low, tmp_path / "low.nrrd")
    assert main(["denoise", str(source), "-o", str(tmp_path / "plain.nrrd"), "--model", "vagan",
                 "--ensemble", "1", "--device", "cpu"]) in (0, None)
    plain = read_volume(tmp_path / "plain.nrrd").hu
    by_hand = denoise(low, "vagan", strength=0.9, ensemble=1, device="cpu").hu
    np.testing.assert_allclose(plain, by_hand, atol=1e-3)
    full = denoise(low, "vagan", strength=1.0, ensemble=1, device="cpu").hu
    assert np.abs(plain - full).max() > 1.0


def test_a_study_condition_without_strength_is_shown_at_the_default_level(tmp_path):
    low = _low(4)
    write_volume(low, tmp_path / "case.nrrd")
    definition = parse({"name": "defaults", "seed": 1, "readers": ["r"],
                        "cases": [{"id": "c", "image": "case.nrrd"}],
                        "conditions": [{"name": "original"}, {"name": "v", "model": "vagan"},
                                       {"name": "v1", "model": "vagan", "strength": 1}],
                        "criteria": [{"name": "n", "question": "q",
                                      "anchors": {1: "a", 5: "b"}}]}, tmp_path)
    service = StudyService(tmp_path / "studies")
    study = service.create(definition)["study"]
    meta = service._store(study).meta()
    files = meta["files"]
    shown, full = read_volume(files["c/v"]).hu, read_volume(files["c/v1"]).hu
    by_hand = denoise(low, "vagan", strength=0.9, device="cpu").hu
    assert np.abs(shown - by_hand).max() < 1.0  # the stored volume is written in whole HU
    assert np.abs(shown - full).max() > 1.0
    stored = meta["definition"]["conditions"]
    assert "strength" not in stored[1] and stored[2]["strength"] == 1.0  # kept as asked
