"""Fine-tuning a shipped network on a site's scans: a new version, used by the next infer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import torch
from conftest import bearer, free_port, monai_client, running, serve_command

from ldct import registry
from ldct.finetune import finetune
from ldct.infer import denoise, load_network
from ldct.io import read_volume, write_volume
from ldct.phantom import make_phantom


@pytest.fixture()
def site_models(tmp_path, monkeypatch):
    folder = tmp_path / "site-models"
    monkeypatch.setenv(registry.SITE_MODELS_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def site_scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("site") / "scan.nrrd"
    write_volume(make_phantom(size=128, slices=4, seed=7).volume, path, dtype="int16")
    return path


def _distance(a, b) -> float:
    return sum(float(((x.detach() - y.detach()) ** 2).sum())
               for x, y in zip(a.state_dict().values(), b.state_dict().values())) ** 0.5


def _weights_differ(a, b) -> bool:
    return any(not np.array_equal(x.detach().numpy(), y.detach().numpy())
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_finetune_adds_a_version_that_inference_then_uses(site_models, site_scan):
    info = registry.get("vagan")
    assert info.version() == "shipped"
    shipped = load_network("vagan", "cpu")
    version = finetune("vagan", [site_scan], steps=3, max_slices=4, device="cpu")
    assert version.parent == site_models / "vagan" / "versions"
    record = json.loads((version / "finetune.json").read_text())
    assert record["steps"] == 3 and record["base_weights"] == str(info.shipped_weights)
    assert record["noise"] == "simulated lower doses in each scan's own measured noise texture"
    assert info.version() == version.name and info.weights == version / "model.pt"
    tuned = load_network("vagan", "cpu")
    assert tuned is not shipped and _weights_differ(tuned, shipped)
    torch.manual_seed(0)
    fresh = info.build(**torch.load(info.shipped_weights, weights_only=True)["kwargs"])
    assert _distance(tuned, shipped) < 0.05 * _distance(tuned, fresh)  # it started from shipped
    assert list(site_models.glob("vagan/versions/.*")) == []  # no leftovers of the work


def test_the_newest_of_several_site_versions_is_served_and_continued(site_models, site_scan):
    """Two fine-tunings in a row: the second starts from the first's weights, both are
    listed oldest first, and the newest is what inference loads; after a rollback to the
    first, the next fine-tuning continues from the version in use, not the newest folder."""
    info = registry.get("vagan")
    first = finetune("vagan", [site_scan], steps=1, max_slices=3, device="cpu")
    second = finetune("vagan", [site_scan], steps=1, max_slices=3, device="cpu")
    assert first != second and info.versions() == [first, second]
    assert json.loads((second / "finetune.json").read_text())["base_weights"] == str(
        first / "model.pt")
    assert info.version() == second.name and info.weights == second / "model.pt"
    newest = torch.load(second / "model.pt", weights_only=True)["state_dict"]
    served = load_network("vagan", "cpu").state_dict()
    assert all(torch.equal(served[k], v) for k, v in newest.items())
    info.use(first.name)
    third = finetune("vagan", [site_scan], steps=1, max_slices=3, device="cpu")
    assert json.loads((third / "finetune.json").read_text())["base_weights"] == str(
        first / "model.pt")
    assert info.versions() == [first, second, third] and info.version() == third.name


def test_n2n25d_adapts_on_low_dose_scans_alone(site_models, tmp_path):
    """The self-supervised model takes a site's low-dose scan as it is (no normal dose, no
    simulated dose), and its training starts from the shipped weights."""
    from ldct.simulate import LowDoseParams, simulate_low_dose

    phantom = make_phantom(size=256, slices=6, pixel_mm=0.78, seed=7)
    noisy = write_volume(simulate_low_dose(phantom.volume, LowDoseParams(dose=0.05), seed=1,
                                           progress=False), tmp_path / "noisy.nrrd",
                         dtype="int16")
    with pytest.raises(ValueError, match="no normal-dose scan"):
        finetune("vagan", [noisy], steps=1)
    info = registry.get("n2n25d")
    shipped = load_network("n2n25d", "cpu")
    version = finetune("n2n25d", [noisy], steps=3, max_slices=6, device="cpu")
    record = json.loads((version / "finetune.json").read_text())
    assert record["images"] == [str(noisy)] and record["doses"] == []
    assert record["noise"] == "the scans' own noise, measured from them (no simulated dose)"
    tuned = load_network("n2n25d", "cpu")
    assert _weights_differ(tuned, shipped)
    torch.manual_seed(0)
    fresh = info.build(**torch.load(info.shipped_weights, weights_only=True)["kwargs"])
    assert _distance(tuned, shipped) < 0.05 * _distance(tuned, fresh)  # it started from shipped


def test_finetune_refuses_what_it_cannot_do(site_models, site_scan):
    with pytest.raises(ValueError, match="baseline"):
        finetune("ldct-gauss", [site_scan])
    with pytest.raises(ValueError, match="no images"):
        finetune("vagan", [])


def test_train_endpoint_finetunes_and_the_next_infer_uses_it(tmp_path, site_scan, tokens):
    studies = tmp_path / "studies"
    studies.mkdir()
    write_volume(read_volume(site_scan), studies / "site.nrrd", dtype="int16")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site_models = tmp_path / "site-models"
    with running(serve_command(str(studies), port, "--models", "vagan,ldct-gauss"),
                 f"{url}/health", tmp_path / "server.log",
                 env={registry.SITE_MODELS_ENV: str(site_models)}):
        client = monai_client(url, tmp_path, tokens["admin"])
        assert sorted(client.info()["trainers"]) == ["vagan"]  # baselines have nothing to train
        _, before = client.infer("vagan", "site", {"strength": 1.0})
        assert before["version"] == "shipped"
        answer = requests.post(f"{url}/train/vagan", params={"run_sync": "true"},
                               headers=bearer(tokens["admin"]),
                               json={"steps": 2, "max_slices": 4, "device": "cpu"}, timeout=600)
        assert answer.status_code == 200, answer.text
        versions = sorted(p.name for p in (site_models / "vagan" / "versions").iterdir())
        assert len(versions) == 1
        result_file, after = client.infer("vagan", "site", {"strength": 1.0})
        assert after["version"] == versions[0]
    # the server's new result is exactly what the new weights give, and not the old result
    weights = site_models / "vagan" / "versions" / versions[0] / "model.pt"
    expected = denoise(read_volume(studies / "site.nrrd"), "vagan", weights=weights).hu
    served = read_volume(result_file).hu
    np.testing.assert_allclose(served, expected, atol=0.05)
    old = denoise(read_volume(studies / "site.nrrd"), "vagan",
                  weights=registry.get("vagan").shipped_weights).hu
    assert np.abs(served - old).max() > 1.0


def test_only_normal_dose_scans_are_fine_tuned_on(tmp_path, site_scan):
    """A written-back (DERIVED) series, a series described as low dose and a scan with a low
    dose's noise are left out, each with its reason; a normal-dose scan is kept."""
    import pydicom

    from ldct.finetune import normal_dose_scans
    from ldct.io import write_dicom_series
    from ldct.simulate import LowDoseParams, simulate_low_dose

    phantom = make_phantom(size=256, slices=6, pixel_mm=0.78, seed=7)
    derived = write_dicom_series(phantom.volume, tmp_path / "derived")[0].parent
    described = write_dicom_series(phantom.volume, tmp_path / "described")
    for f in described:
        ds = pydicom.dcmread(f)
        ds.ImageType, ds.SeriesDescription = ["ORIGINAL", "PRIMARY", "AXIAL"], "Abd LOW DOSE"
        ds.save_as(f)
    noisy = write_volume(simulate_low_dose(phantom.volume, LowDoseParams(dose=0.05), seed=1,
                                           progress=False), tmp_path / "noisy.nrrd",
                         dtype="int16")
    kept, excluded = normal_dose_scans([site_scan, derived, described[0].parent, noisy])
    assert kept == [site_scan]
    reasons = {path.name: why for path, why in excluded}
    assert "derived series" in reasons["derived"]
    assert "says low dose" in reasons["described"]
    assert "a low dose's" in reasons["noisy.nrrd"]
    with pytest.raises(ValueError, match="no normal-dose scan"):
        finetune("vagan", [noisy], steps=1)
