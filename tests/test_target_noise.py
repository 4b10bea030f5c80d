"""Denoising to a noise level (HU) instead of a strength: the library, `ldct denoise`, the
server's /infer with its site levels, reader-study conditions. The answer key is the noise
the tests add to a noiseless phantom: the result's true noise is result - phantom."""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from conftest import free_port, monai_client, running, serve_command
from monailabel.client.client import MONAILabelClientException
from scipy import ndimage

from ldct.evaluate import Regions, default_levels, texture_rows
from ldct.infer import denoise, denoise_to_noise
from ldct.infer_params import ParamError, parse_params
from ldct.io import read_volume, write_dicom_series, write_volume
from ldct.noise_level import (
    NoiseCalibration,
    NoiseLevelError,
    NoiseLevels,
    blend,
    match_noise,
    scan_noise,
)
from ldct.phantom import make_phantom
from ldct.study.definition import StudyDefinitionError, parse
from ldct.study.service import StudyService

NOISE_SD = 40.0  # HU: what the tests add
SITE_LEVELS = {"liver portal venous": {"B30f": 26.0, "D45f": 32.0, "default": 28.0},
               "low": 35.0}


@pytest.fixture(scope="module")
def known():
    """(noisy volume, noiseless phantom, where its true noise is read): soft tissue and muscle
    (40 and 50 HU) 3 pixels off any edge, slices 1..n-2 (as the estimate uses)."""
    p = make_phantom(size=256, slices=6, pixel_mm=1.0, seed=1)
    clean = p.volume.hu
    rng = np.random.default_rng(7)
    noise = np.stack([ndimage.gaussian_filter(w, 0.7) for w in rng.standard_normal(clean.shape)])
    noise *= NOISE_SD / noise.std()
    flat = ndimage.binary_erosion((clean == 40.0) | (clean == 50.0), np.ones((1, 7, 7)))
    flat[[0, -1]] = False
    return p.volume.with_hu(clean + noise.astype(np.float32)), clean, flat


def true_noise(result: np.ndarray, clean: np.ndarray, flat: np.ndarray) -> float:
    return float((result - clean)[flat].std())


def test_the_input_noise_is_measured_from_the_volume_alone(known):
    volume, clean, flat = known
    assert true_noise(volume.hu, clean, flat) == pytest.approx(NOISE_SD, rel=0.02)
    assert scan_noise(volume.hu) == pytest.approx(NOISE_SD, rel=0.05)


@pytest.mark.parametrize("model,target", [("ldct-gauss", 30.0),
                                          ("alden", 24.0)])
def test_the_result_has_the_asked_noise_and_the_strength_reproduces_it(known, model, target):
    volume, clean, flat = known
    result, match = denoise_to_noise(volume, model, target, device="cpu")
    assert match.reached and 0.0 < match.strength < 1.0
    assert match.input_noise == pytest.approx(NOISE_SD, rel=0.05)
    assert match.result_noise == pytest.approx(target, rel=0.02)
    assert true_noise(result.hu, clean, flat) == pytest.approx(target, rel=0.10)
    again = denoise(volume, model, strength=match.strength, device="cpu")
    np.testing.assert_allclose(again.hu, result.hu, atol=0.01)


def test_a_level_out_of_reach_takes_the_nearest_end_and_says_so(known):
    volume, _, _ = known
    result, match = denoise_to_noise(volume, "ldct-gauss", 60.0, device="cpu")
    assert (match.strength, match.reached) == (0.0, False)
    np.testing.assert_array_equal(result.hu, volume.hu)
    _, match = denoise_to_noise(volume, "ldct-gauss", 2.0, device="cpu")
    assert (match.strength, match.reached) == (1.0, False) and match.result_noise > 10.0
    with pytest.raises(NoiseLevelError, match="at least 3 slices"):
        denoise_to_noise(replace(volume, hu=volume.hu[:2]), "ldct-gauss", 10.0)


def test_request_parameters_take_a_level_or_hu_never_both_with_strength():
    assert parse_params({"target_noise": 12}).target_noise == 12.0
    assert parse_params({"target_noise": "medium"}).target_noise == "medium"
    assert "strength" not in parse_params({"target_noise": 12}).as_dict()
    assert parse_params({"strength": 0.5}).as_dict()["strength"] == 0.5
    with pytest.raises(ParamError, match="not both"):
        parse_params({"target_noise": 12, "strength": 0.5})
    for bad in (0, -3, True, "", [12]):
        with pytest.raises(ParamError, match="target_noise must be"):
            parse_params({"target_noise": bad})


def test_site_levels_add_to_the_defaults_and_resolve_per_kernel(tmp_path):
    path = tmp_path / "levels.json"
    path.write_text(json.dumps(SITE_LEVELS))
    levels = NoiseLevels.load(path)
    assert levels.resolve("liver portal venous", "B30f") == 26.0
    assert levels.resolve("liver portal venous", "D45f") == 32.0
    assert levels.resolve("liver portal venous", "FC18") == 28.0  # unnamed kernel: default
    assert levels.resolve("low") == 35.0  # the site's value replaces the default
    assert {"medium", "high"} <= set(levels.levels)
    with pytest.raises(NoiseLevelError, match="no noise level 'arterial'.*liver portal venous"):
        levels.resolve("arterial")
    path.write_text(json.dumps({"x": {"B30f": -1}}))
    with pytest.raises(NoiseLevelError, match="kernel 'B30f' must be a noise SD"):
        NoiseLevels.load(path)


def test_reader_study_conditions_take_a_noise_level():
    base = {"name": "s", "seed": 1, "readers": ["r"], "cases": [{"id": "c", "image": "a.nrrd"}],
            "criteria": [{"name": "n", "question": "q", "anchors": {1: "a", 5: "b"}}]}
    study = parse({**base, "conditions": [{"name": "o"},
                                          {"name": "v", "model": "vagan", "target_noise": 12}]})
    assert study.conditions[1].target_noise == 12.0
    with pytest.raises(StudyDefinitionError, match="instead of strength"):
        parse({**base, "conditions": [{"name": "o"}, {"name": "v", "model": "vagan",
                                                      "target_noise": 12, "strength": 0.5}]})


def test_ldct_denoise_prints_the_match_and_records_the_strength(known, ldct_command, tmp_path):
    volume, clean, flat = known
    source = write_volume(volume, tmp_path / "in.nrrd")
    out = tmp_path / "out.nrrd"
    done = subprocess.run([*ldct_command, "denoise", str(source), "-o", str(out), "--model",
                           "ldct-gauss", "--target-noise", "30"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    said = re.search(r"noise (\S+) HU -> (\S+) HU \(target 30 HU\) at strength (0\.\d+)",
                     done.stdout)
    assert said, done.stdout
    assert float(said[1]) == pytest.approx(NOISE_SD, rel=0.05)
    assert float(said[2]) == pytest.approx(30.0, rel=0.02)
    assert true_noise(read_volume(out).hu, clean, flat) == pytest.approx(30.0, rel=0.10)
    refused = subprocess.run([*ldct_command, "denoise", str(source), "-o", str(out), "--model",
                              "ldct-gauss", "--target-noise", "quiet"], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "neither a noise SD in HU nor a known level" in \
        refused.stdout


@pytest.fixture(scope="module")
def site_server(tmp_path_factory):
    """`ldct serve --noise-levels FILE` on loopback."""
    folder = tmp_path_factory.mktemp("levels")
    (folder / "levels.json").write_text(json.dumps(SITE_LEVELS))
    studies = tmp_path_factory.mktemp("studies")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(str(studies), port, "--models", "ldct-gauss,alden",
                               "--noise-levels", str(folder / "levels.json")),
                 f"{url}/health", folder / "server.log"):
        yield url


def test_the_server_resolves_a_site_level_for_the_scans_kernel(site_server, known, tokens,
                                                               tmp_path):
    volume, clean, flat = known
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for path in write_dicom_series(volume, tmp_path / "series"):
            ds = pydicom.dcmread(path)
            ds.ConvolutionKernel = "B30f"  # the scan's kernel, as a scanner writes it
            ds.save_as(path)
            packed.write(path, path.name)
    client = monai_client(site_server, tmp_path, tokens["radiologist"])
    assert client.info()["models"]["alden"]["ldct"]["noise_levels"]["liver portal venous"] == \
        SITE_LEVELS["liver portal venous"]
    result_file, params = client.infer("alden", "", {"target_noise": "liver portal venous"},
                                       file=str(archive))
    noise = params["noise"]
    assert (noise["level"], noise["target_noise"], noise["reached"]) == \
        ("liver portal venous", 26.0, True)
    assert noise["input_noise"] == pytest.approx(NOISE_SD, rel=0.05)
    assert noise["result_noise"] == pytest.approx(26.0, rel=0.02)
    assert params["strength"] == noise["strength"]
    result = read_volume(result_file).hu
    assert true_noise(result, clean, flat) == pytest.approx(26.0, rel=0.10)
    again, _ = client.infer("alden", "", {"strength": params["strength"]}, file=str(archive))
    np.testing.assert_allclose(read_volume(again).hu, result, atol=0.01)
    with pytest.raises(MONAILabelClientException, match="liver portal venous"):
        client.infer("alden", "", {"target_noise": "arterial"}, file=str(archive))
    with pytest.raises(MONAILabelClientException, match="not both"):
        client.infer("alden", "", {"target_noise": 12, "strength": 0.4}, file=str(archive))


def test_the_sweeps_texture_rows_match_the_normal_doses_noise_by_hand():
    """Independent noises of known SD: normal dose 10 HU, input 40 HU, an output leaving 5 HU
    of coarser noise. The blend low + s (out - low) has variance 1600 (1-s)^2 + 25 s^2, which
    is 100 at s = 10/13; the default level rounds that down to 0.75."""
    rng = np.random.default_rng(3)
    shape = (12, 96, 96)
    clean = np.full(shape, 60.0, np.float32)

    def noise(sd: float, blur: float = 0.0) -> np.ndarray:
        n = rng.standard_normal(shape)
        n = ndimage.gaussian_filter(n, (0, blur, blur)) if blur else n
        return (sd * n / n.std()).astype(np.float32)

    normal, low, out = clean + noise(10.0), clean + noise(40.0), clean + noise(5.0, 1.5)
    region = np.ones(shape, bool)
    regions = Regions(body=region, liver=region, fat=region, tumour=~region)
    rows = texture_rows(low, {"normal dose": normal, "low dose (input)": low, "m": out},
                        normal, regions, (1.0, 1.0), 16)
    own, given, model = rows
    assert own["noise_sd"] == pytest.approx(10.0, rel=0.03)
    assert given["noise_vs_nd"] == pytest.approx(4.0, rel=0.04)
    assert model["noise_vs_nd"] == pytest.approx(0.5, rel=0.05)
    assert model["nps_mean_vs_nd"] < 0.7  # coarser than the normal dose's white noise
    assert model["matched_strength"] == pytest.approx(10 / 13, abs=0.02)
    assert model["matched_noise_sd"] == pytest.approx(10.0, rel=0.03)
    assert default_levels({"k": rows}) == {"m": 0.75}


def test_a_slice_correlated_result_is_matched_on_its_calibration():
    """A result whose noise is shared by neighbouring slices reads low. Input: independent
    noise of 40 HU. The model's output: 10 (w_k + w_k+1) / sqrt(2), SD 10 HU with lag-1
    correlation 1/2, which the slice-difference estimate reads as 10 / sqrt(3) (by hand: the
    variance of e_k - (e_k-1 + e_k+1) / 2 is sigma^2 (1.5 - 2 x 1/2) over 1.5). The blend at s
    truly has variance 1600 (1-s)^2 + 100 s^2, estimated 1600 (1-s)^2 + 100 s^2 / 3; the
    calibration is their ratio's root. Asked for 12 HU: 1700 s^2 - 3200 s + 1456 = 0, so
    s = 0.770 (uncalibrated the match would stop at s = 0.719, leaving 13.4 HU)."""
    rng = np.random.default_rng(5)
    shape = (14, 128, 128)
    clean = np.full(shape, 55.0, np.float32)
    low = clean + (40.0 * rng.standard_normal(shape)).astype(np.float32)
    w = rng.standard_normal((shape[0] + 1, *shape[1:]))
    out = clean + (10.0 * (w[:-1] + w[1:]) / np.sqrt(2)).astype(np.float32)
    grid = np.linspace(0.0, 1.0, 11)
    factors = np.sqrt((1600 * (1 - grid) ** 2 + 100 * grid ** 2)
                      / (1600 * (1 - grid) ** 2 + 100 * grid ** 2 / 3))
    calibration = NoiseCalibration(tuple(grid), tuple(factors))
    region = np.ones((shape[0] - 2, *shape[1:]), bool)
    strength, match = match_noise(low, out, 12.0, region=region, calibration=calibration)
    assert match.reached and strength == pytest.approx(0.770, abs=0.01)
    result = blend(low, out, strength)
    assert float((result - clean)[1:-1].std()) == pytest.approx(12.0, rel=0.03)
    assert match.input_noise == pytest.approx(40.0, rel=0.03)


def test_every_shipped_network_has_a_calibration_for_its_shipped_weights(tmp_path):
    """The shipped file names each network's weights by hash: a retrained file (other bytes)
    gets no calibration rather than another model's."""
    from ldct import registry

    for name in ("alden", "n2n25d", "pan", "pdml", "vagan"):
        calibration = registry.get(name).noise_calibration(registry.get(name).shipped_weights)
        assert calibration is not None, name
        assert calibration.strengths[0] == 0.0 and calibration.strengths[-1] == 1.0
        assert 0.9 < calibration.factor(1.0) < 1.5, name  # reads low, never wildly so
    other = tmp_path / "model.pt"
    other.write_bytes(registry.get("vagan").shipped_weights.read_bytes() + b"\0")
    assert registry.get("vagan").noise_calibration(other) is None
    assert registry.get("ldct-gauss").noise_calibration() is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"vagan": [1, 2]}', "\udcff",
                                  '{"vagan": {"strengths": [0, 1], "factors": [1, 9], '
                                  '"weights_sha256": "SHA"}}'])
def test_a_malformed_calibration_file_leaves_the_plain_estimate_and_says_so(
        text, tmp_path, monkeypatch, caplog):
    """Truncated, not an object, an entry not an object, undecodable, a factor of 9: denoising
    to a level still works (the plain estimate: it leaves more noise than asked, not less) and
    the log names the file and the command that remakes it."""
    from ldct import registry

    info = registry.get("vagan")
    broken = tmp_path / "noise_calibration.json"
    text = text.replace("SHA", registry.file_sha256(info.shipped_weights))
    broken.write_bytes(text.encode("utf-8", "surrogateescape"))
    monkeypatch.setattr(registry, "NOISE_CALIBRATION_FILE", broken)
    with caplog.at_level("ERROR", logger="ldct.registry"):
        assert info.noise_calibration(info.shipped_weights) is None
    assert str(broken) in caplog.text and "calibrate --write" in caplog.text


@pytest.mark.parametrize("bad", [{"strengths": [0, 1], "factors": [1.0]},
                                 {"strengths": [0.2, 1], "factors": [1.0, 1.1]},
                                 {"strengths": [0, 0.5, 0.4, 1], "factors": [1, 1, 1, 1]},
                                 {"strengths": [0, 1], "factors": [1.0, 7.0]},
                                 {"strengths": [0, 1], "factors": ["1", 1.0]}, [1, 2]])
def test_a_broken_calibration_is_refused_with_what_to_do(bad):
    with pytest.raises(NoiseLevelError, match="calibrate --write"):
        NoiseCalibration.from_json(bad, "noise_calibration.json vagan")


def test_a_reader_study_condition_is_shown_at_its_noise_level(known, tmp_path):
    volume, clean, flat = known
    write_volume(volume, tmp_path / "case.nrrd")
    definition = parse({"name": "levels", "seed": 1, "readers": ["r"],
                        "cases": [{"id": "c", "image": "case.nrrd"}],
                        "conditions": [{"name": "original"},
                                       {"name": "at30", "model": "ldct-gauss",
                                        "target_noise": 30}],
                        "criteria": [{"name": "n", "question": "q",
                                      "anchors": {1: "a", 5: "b"}}]}, tmp_path)
    service = StudyService(tmp_path / "studies")
    study = service.create(definition)["study"]
    shown = read_volume(service._store(study).meta()["files"]["c/at30"]).hu
    assert true_noise(shown, clean, flat) == pytest.approx(30.0, rel=0.10)
