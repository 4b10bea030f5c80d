"""Volume inference and `ldct denoise` / `ldct models`: geometry and HU kept, strength blends,
models load once, every format in and out."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from ldct import infer, registry
from ldct.infer import context_stack, denoise
from ldct.io import read_volume, write_dicom_series, write_volume
from ldct.nets.catalogue import n2n25d_student


@pytest.fixture(scope="module")
def student_weights(tmp_path_factory):
    """An untrained-but-valid n2n25d model file, as `ldct train` writes it."""
    torch.manual_seed(0)
    net = n2n25d_student(base=8)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save({"method": "n2n25d", "kwargs": {"base": 8}, "context": net.context,
                "state_dict": net.state_dict()}, path)
    return path


def test_registry_lists_five_networks_and_two_baselines():
    names = registry.names()
    assert names[:5] == ["alden", "n2n25d", "pan", "pdml", "vagan"]
    assert set(names[5:]) == {"ldct-gauss", "ldct-nlm"}
    with pytest.raises(KeyError, match="known: alden"):
        registry.get("unet")


def test_context_stack_mirrors_about_the_centre_at_the_ends():
    hu = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    assert context_stack(hu, 0, 5)[:, 0, 0].tolist() == [2, 1, 0, 1, 2]
    assert context_stack(hu, 1, 5)[:, 0, 0].tolist() == [3, 0, 1, 2, 3]
    assert context_stack(hu, 3, 3)[:, 0, 0].tolist() == [2, 3, 2]
    assert context_stack(hu[:1], 0, 3)[:, 0, 0].tolist() == [0, 0, 0]  # a single slice


def test_network_keeps_geometry_and_strength_blends(phantom, student_weights):
    volume = phantom.volume
    full = denoise(volume, "n2n25d", weights=student_weights, device="cpu")
    half = denoise(volume, "n2n25d", strength=0.5, weights=student_weights, device="cpu")
    assert full.same_geometry(volume) and full.hu.dtype == np.float32
    np.testing.assert_allclose(half.hu - volume.hu, 0.5 * (full.hu - volume.hu), atol=1e-3)
    zero = denoise(volume, "n2n25d", strength=0.0, weights=student_weights)
    np.testing.assert_array_equal(zero.hu, volume.hu)
    before = infer._load_weights.cache_info().hits
    denoise(volume, "n2n25d", weights=student_weights, device="cpu")
    assert infer._load_weights.cache_info().hits > before  # loaded once, reused
    with pytest.raises(ValueError, match="strength must be in"):
        denoise(volume, "n2n25d", strength=1.5, weights=student_weights)


def test_a_calibrated_gain_scales_what_the_network_removes(phantom, student_weights, tmp_path):
    """model.pt's ``gain`` (benchmarks/calibrate_gain.py): the share of its noise estimate a
    network removes at full strength; strength still blends on top of it."""
    blob = torch.load(student_weights, weights_only=True)
    calibrated = tmp_path / "model.pt"
    torch.save({**blob, "gain": 0.8}, calibrated)
    volume = phantom.volume
    full = denoise(volume, "n2n25d", weights=student_weights, device="cpu").hu - volume.hu
    gained = denoise(volume, "n2n25d", weights=calibrated, device="cpu").hu - volume.hu
    half = denoise(volume, "n2n25d", weights=calibrated, device="cpu", strength=0.5).hu
    assert np.abs(full).max() > 1.0  # it removes something
    np.testing.assert_allclose(gained, 0.8 * full, atol=1e-3)
    np.testing.assert_allclose(half - volume.hu, 0.4 * full, atol=1e-3)


def test_self_ensemble_averages_views_turned_back_onto_the_input_grid(phantom, student_weights):
    """Each view's output is turned back before averaging: the ensemble equals the mean of
    one-pass results on flipped/rotated copies of the volume (done here with numpy), also on a
    non-square slice whose views swap height and width."""
    volume = replace(phantom.volume, hu=phantom.volume.hu[:, :, 8:-16].copy())  # H != W
    one = denoise(volume, "n2n25d", weights=student_weights, device="cpu", ensemble=1)
    four = denoise(volume, "n2n25d", weights=student_weights, device="cpu", ensemble=4)
    expected = []
    for turns, mirror in infer.DIHEDRAL_VIEWS[:4]:
        view = np.rot90(volume.hu, turns, axes=(1, 2))
        view = np.ascontiguousarray(view[:, :, ::-1] if mirror else view)
        out = denoise(replace(volume, hu=view), "n2n25d", weights=student_weights, device="cpu",
                      ensemble=1).hu
        expected.append(np.rot90(out[:, :, ::-1] if mirror else out, -turns, axes=(1, 2)))
    assert four.same_geometry(volume) and four.hu.shape == volume.hu.shape
    np.testing.assert_allclose(four.hu, np.mean(expected, axis=0), atol=1e-3)
    np.testing.assert_allclose(expected[0], one.hu, atol=1e-4)
    assert np.abs(four.hu - one.hu).max() > 1.0  # an untrained net is not symmetric: views differ
    for bad in (0, 9):
        with pytest.raises(ValueError, match="ensemble must be a whole number of views"):
            denoise(volume, "n2n25d", weights=student_weights, ensemble=bad)


def test_baselines_reduce_noise_without_bias():
    from ldct.phantom import make_phantom
    from ldct.simulate import LowDoseParams, simulate_low_dose

    clinical = make_phantom(size=512, slices=2)  # 0.74 mm pixels, as the liver CT here
    normal = clinical.volume
    low = simulate_low_dose(normal, LowDoseParams(dose=0.25), seed=2, progress=False)
    liver = clinical.masks["liver"]
    noise_before = (low.hu - normal.hu)[liver].std()
    for name in ("ldct-gauss", "ldct-nlm"):
        out = denoise(low, name)
        assert out.same_geometry(low)
        assert (out.hu - normal.hu)[liver].std() < 0.8 * noise_before, name
        assert abs((out.hu - normal.hu)[liver].mean()) < 3.0, name


def test_missing_weights_say_how_to_train(phantom, tmp_path):
    with pytest.raises(FileNotFoundError, match="ldct train pan"):
        infer.load_network("pan", "cpu", str(tmp_path / "none.pt"))


def test_models_cli_lists_names_first(ldct_command):
    run = subprocess.run([*ldct_command, "models"], capture_output=True, text=True, check=True)
    assert run.stdout.split() == registry.names()
    verbose = subprocess.run([*ldct_command, "models", "-v"], capture_output=True, text=True,
                             check=True)
    assert verbose.stdout.startswith("alden\n") and "supervision" in verbose.stdout


def test_denoise_cli_many_inputs_and_formats(tmp_path, phantom, ldct_command):
    files = write_dicom_series(phantom.volume, tmp_path / "series")
    nrrd = write_volume(phantom.volume, tmp_path / "caseA.nrrd")
    out = tmp_path / "out"
    subprocess.run([*ldct_command, "denoise", "--model", "ldct-gauss", str(nrrd),
                    str(tmp_path / "series"), str(files[0]), "-o", str(out)],
                   check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["IM00001.nrrd", "caseA.nrrd", "series.nrrd"]
    single = read_volume(out / "IM00001.nrrd")
    assert single.hu.shape == (1, *phantom.volume.hu.shape[1:])
    assert read_volume(out / "series.nrrd").same_geometry(phantom.volume, atol=1e-6)
    dicom_out = tmp_path / "dicom_out"
    subprocess.run([*ldct_command, "denoise", "--model", "ldct-gauss", str(nrrd), "-o",
                    str(dicom_out), "--strength", "0.5"], check=True, capture_output=True)
    back = read_volume(dicom_out)
    assert back.same_geometry(phantom.volume, atol=1e-6)
    run = subprocess.run([*ldct_command, "denoise", "--model", "nope", str(nrrd), "-o",
                          str(tmp_path / "x.nrrd")], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown model" in run.stdout
    run = subprocess.run([*ldct_command, "denoise", "--model", "ldct-gauss", "--ensemble", "0",
                          str(nrrd), "-o", str(tmp_path / "x.nrrd")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "ensemble must be" in run.stdout
    assert not (tmp_path / "x.nrrd").exists()
