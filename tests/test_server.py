"""The MONAI Label app on a real server on 127.0.0.1, driven by MONAI Label's own client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from conftest import free_port, monai_client, running, serve_command
from monailabel.client.client import MONAILabelClientException
from scipy import ndimage

from ldct import registry
from ldct.infer import DEFAULT_ENSEMBLE
from ldct.io import read_volume, write_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose


@pytest.fixture(scope="module")
def server(ldct_server):
    return ldct_server


@pytest.fixture(scope="module")
def noisy_case(tmp_path_factory):
    """A phantom at clinical pixel size, simulated quarter dose, oblique geometry, as NRRD."""
    p = make_phantom(size=256, slices=4, pixel_mm=0.78)
    p.volume.origin = (-99.6015625, -120.3, 331.7)
    p.volume.direction = np.array([[0.9998, -0.02, 0], [0.02, 0.9998, 0], [0, 0, 1.0]])
    p.volume.direction /= np.linalg.norm(p.volume.direction, axis=0)
    low = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=4, progress=False)
    path = write_volume(low, tmp_path_factory.mktemp("case") / "low.nrrd")
    return path, p


def _served_models() -> list[str]:
    return [n for n in registry.names() if registry.get(n).available()]


def test_info_lists_every_available_model_with_its_options(server, tokens):
    info = monai_client(server, None, tokens["radiologist"]).info()
    assert sorted(info["models"]) == sorted(_served_models())
    for name, model in info["models"].items():
        assert model["type"] == "others"
        assert set(model["config"]) >= {"strength", "ensemble", "device", "result_dtype"}
        assert model["ldct"]["name"] == name


@pytest.mark.parametrize("model", _served_models())
def test_each_model_keeps_geometry_exactly_and_reduces_noise(server, noisy_case, model, tmp_path,
                                                             tokens):
    path, phantom = noisy_case
    client = monai_client(server, tmp_path, tokens["radiologist"])
    result_file, params = client.infer(model, "", {"strength": 1.0}, file=str(path))
    source, result = sitk.ReadImage(str(path)), sitk.ReadImage(result_file)
    assert result.GetSize() == source.GetSize()
    assert result.GetSpacing() == source.GetSpacing()  # to the last bit
    assert result.GetOrigin() == source.GetOrigin()
    assert result.GetDirection() == source.GetDirection()
    assert params["model"] == model and params["result_dtype"] == "float32"
    assert params["ct_check"]["passed"] and params["ct_check"]["regions_checked"] >= 1
    assert abs(params["ct_check"]["worst_shift_hu"]) <= params["ct_check"]["threshold_hu"]
    assert params["ensemble"] == DEFAULT_ENSEMBLE
    liver = phantom.masks["liver"]
    before = read_volume(path).hu - phantom.volume.hu
    after = sitk.GetArrayFromImage(result) - phantom.volume.hu
    assert after[liver].std() < 0.9 * before[liver].std()
    assert abs(after[liver].mean()) < 3.0


def test_strength_zero_returns_the_input_and_int16_is_available(server, noisy_case, tmp_path,
                                                                tokens):
    path, _ = noisy_case
    client = monai_client(server, tmp_path, tokens["radiologist"])
    result_file, _ = client.infer("vagan", "", {"strength": 0.0}, file=str(path))
    np.testing.assert_array_equal(read_volume(result_file).hu, read_volume(path).hu)
    as_float, _ = client.infer("vagan", "", {}, file=str(path))
    result_file, params = client.infer("vagan", "", {"result_dtype": "int16"}, file=str(path))
    as_int = sitk.ReadImage(result_file)
    assert as_int.GetPixelID() == sitk.sitkInt16 and params["result_dtype"] == "int16"
    # the same denoised HU, each rounded to the nearest whole HU (not truncated, not offset)
    exact = sitk.GetArrayFromImage(sitk.ReadImage(as_float)).astype(np.float64)
    whole = sitk.GetArrayFromImage(as_int).astype(np.float64)
    assert np.abs(whole - exact).max() <= 0.5 + 1e-3
    assert np.abs(whole - exact).mean() == pytest.approx(0.25, abs=0.02)  # uniform rounding
    assert read_volume(result_file).same_geometry(read_volume(as_float), atol=0)


def test_four_concurrent_requests_get_their_own_results(server, tmp_path, tokens):
    """Four different volumes at once: each answer is the denoised version of its own input."""
    inputs = []
    for k in range(4):
        (tmp_path / str(k)).mkdir()
        volume = make_phantom(size=128, slices=2 + k, seed=10 + k).volume
        inputs.append(write_volume(volume, tmp_path / str(k) / "in.nrrd", dtype="int16"))

    def one(k: int):
        client = monai_client(server, tmp_path / str(k), tokens["radiologist"])
        return client.infer("ldct-gauss", "", {"strength": 1.0}, file=str(inputs[k]))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    for k, (result_file, _) in enumerate(results):
        result, source = read_volume(result_file).hu, read_volume(inputs[k]).hu
        assert result.shape == source.shape  # 2 + k slices: its own
        assert np.abs(result - source).mean() < 60  # denoised, not another phantom


def test_bad_input_gets_the_reason(server, tmp_path, tokens):
    bad = tmp_path / "notct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 32, 32), 500.0, np.float32)), str(bad))
    client = monai_client(server, tmp_path, tokens["radiologist"])
    with pytest.raises(MONAILabelClientException, match="not a CT volume"):
        client.infer("vagan", "", {}, file=str(bad))
    with pytest.raises(MONAILabelClientException, match="ensemble must be a whole number"):
        client.infer("ldct-gauss", "phantom", {"ensemble": 12})


def test_a_datastore_image_is_denoised_by_id(server, tmp_path, tokens):
    """The server's own copy of "phantom" (the 128 x 128 x 3 phantom written as int16 by the
    fixture) is what gets denoised: the result is a Gaussian of sigma 0.75 mm (the baseline's
    stated width, README) of those pixels, in plane, computed here with scipy."""
    client = monai_client(server, tmp_path, tokens["radiologist"])
    assert "phantom" in client.datastore()["objects"]
    result_file, params = client.infer("ldct-gauss", "phantom", {})
    assert params["shape"] == [3, 128, 128]
    stored = make_phantom(size=128, slices=3).volume  # what conftest wrote, rounded to int16
    source = np.rint(stored.hu).astype(np.float64)
    result = read_volume(result_file)
    assert result.same_geometry(stored, atol=1e-6)
    sigma = 0.75 / stored.spacing[0]  # square pixels
    expected = np.stack([ndimage.gaussian_filter(s, sigma) for s in source])
    inner = (slice(None), slice(8, -8), slice(8, -8))  # away from the image border's handling
    np.testing.assert_allclose(result.hu[inner], expected[inner], atol=0.05)
    # at 2.97 mm pixels sigma is a quarter pixel: edges move by up to ~0.7 HU, so the result
    # is told apart from the input returned as it is (and from any other image by far more)
    assert np.abs(result.hu - source).max() > 0.5


def test_a_zipped_dicom_series_is_accepted(server, tmp_path, tokens):
    import zipfile

    from ldct.io import write_dicom_series

    volume = make_phantom(size=128, slices=3).volume
    files = write_dicom_series(volume, tmp_path / "series")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f.name)
    client = monai_client(server, tmp_path, tokens["radiologist"])
    result_file, _ = client.infer("ldct-gauss", "", {}, file=str(archive))
    assert read_volume(result_file).same_geometry(volume, atol=1e-9)


def test_stopping_ldct_serve_stops_the_server(tmp_path):
    """`ldct serve` becomes the server: terminating it frees the port (no orphan server)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    with running(serve_command(str(tmp_path), port, "--models", "ldct-gauss"), url,
                 tmp_path / "server.log"):
        pass
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
