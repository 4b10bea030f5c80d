"""`ldct prepare`: dose series and splits, cached, from a folder laid out like ../shared/data."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from ldct import metrics
from ldct.data import PatchSampler, PreparedData, prepare, summarize, unpaired_split
from ldct.noise_bank import noise_images, scan_noise_kernel, textured_noise


def test_unpaired_split_is_disjoint_and_covers_all_slices():
    low, normal = unpaired_split(40, slab=8)
    assert not set(low) & set(normal)
    assert sorted(low + normal) == list(range(40))
    assert low[:8] == list(range(8)) and normal[:8] == list(range(8, 16))


def test_prepare_builds_doses_masks_and_split_and_is_cached(fake_shared, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare(fake_shared, out, doses=(0.5, 0.25), max_slices=6, progress=False)
    data = PreparedData(out)
    assert data.cases("test") == ["ircadb17"]
    assert sorted(data.cases("train")) == ["ircadb01", "tcia_pancreas001"]
    nd = data.volume("ircadb01")
    quarter = data.volume("ircadb01", 0.25)
    half = data.volume("ircadb01", 0.5)
    assert nd.hu.shape == (6, 128, 128) and quarter.same_geometry(nd, atol=1e-9)
    liver = data.masks("ircadb17")["liver"]
    assert liver.shape == (6, 128, 128) and liver.any()
    body = nd.hu > -500
    assert (quarter.hu - nd.hu)[body].std() > (half.hu - nd.hu)[body].std() > 1.0
    low, normal = data.unpaired("ircadb01")
    assert not set(low) & set(normal)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")}
    again = prepare(fake_shared, out, doses=(0.5, 0.25), max_slices=6, progress=False)
    assert again == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")} == stamp  # nothing redone
    rows = summarize(data)
    assert {(r["case"], r["dose"]) for r in rows} >= {("ircadb17", 0.25), ("ircadb01", 1.0)}
    liver_rows = {r["dose"]: r for r in rows if r["case"] == "ircadb17"}
    assert liver_rows[1.0]["added_noise_sd"] == 0.0
    assert liver_rows[0.25]["added_noise_sd"] > liver_rows[0.5]["added_noise_sd"]


def test_prepare_adds_a_new_dose_without_redoing_the_rest(fake_shared, tmp_path):
    out = tmp_path / "prepared"
    prepare(fake_shared, out, doses=(0.25,), max_slices=4, cases=["ircadb01"], progress=False)
    before = (out / "ircadb01" / "dose_0.25.nrrd").stat().st_mtime_ns
    manifest = prepare(fake_shared, out, doses=(0.1,), max_slices=4, cases=["ircadb01"],
                       progress=False)
    assert set(manifest["cases"]["ircadb01"]["files"]) == {"nd", "dose_0.25", "dose_0.1"}
    assert (out / "ircadb01" / "dose_0.25.nrrd").stat().st_mtime_ns == before


def test_prepare_cli_prints_a_summary(fake_shared, tmp_path, ldct_command):
    out = tmp_path / "cli"
    run = subprocess.run([*ldct_command, "prepare", "--data", str(fake_shared), "--out", str(out),
                          "--doses", "0.25", "--max-slices", "3"],
                         capture_output=True, text=True, check=True)
    assert "prepared data" in run.stdout and "ircadb17" in run.stdout and "liver" in run.stdout
    assert json.loads((out / "manifest.json").read_text())["doses"] == [0.25]


def test_prepare_names_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing ircadb17"):
        prepare(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="run `ldct prepare"):
        PreparedData(tmp_path)


@pytest.mark.realdata
def test_prepare_on_the_real_volumes(shared_data, tmp_path):
    prepare(shared_data, tmp_path, doses=(0.25,), max_slices=2, progress=False)
    data = PreparedData(tmp_path)
    rows = {(r["case"], r["dose"]): r for r in summarize(data)}
    assert rows[("ircadb17", 0.25)]["region"] == "liver"
    for case in ("ircadb17", "ircadb01", "tcia_pancreas001"):
        # quarter dose adds 42-63 HU here (benchmarks/io_simulate.md: 58.7 HU in ircadb17's
        # liver); real quarter-minus-full differences are 60-76 HU with a sharper kernel
        assert 35.0 < rows[(case, 0.25)]["added_noise_sd"] < 80.0, case


def test_patch_sampler_pairs_and_unpairs(prepared):
    data = PreparedData(prepared)
    paired = PatchSampler(data, [0.25, 0.5], patch=32, batch=6, context=3, paired=True, seed=1)
    batch = paired.sample()
    assert batch["ld"].shape == batch["nd"].shape == (6, 3, 32, 32)
    noise = batch["ld"] - batch["nd"]
    assert 1.0 < noise.std() < 200.0  # same place: the difference is noise only
    assert set(batch["dose"]) <= {0.25, 0.5}
    unpaired = PatchSampler(data, [0.25], patch=32, batch=6, paired=False, seed=1).sample()
    assert np.abs(unpaired["ld"] - unpaired["nd"]).mean() > np.abs(noise).mean()
    again = PatchSampler(data, [0.25, 0.5], patch=32, batch=6, context=3, seed=1).sample()
    np.testing.assert_array_equal(again["ld"], batch["ld"])  # reproducible per seed


def _lag1_correlation(noise: np.ndarray) -> float:
    """Correlation of horizontally adjacent noise pixels: lower for a sharper kernel."""
    return float(np.corrcoef(noise[..., 1:].ravel(), noise[..., :-1].ravel())[0, 1])


def test_patch_sampler_gives_some_low_doses_a_sharper_kernels_texture(prepared):
    data = PreparedData(prepared)
    plain = PatchSampler(data, [0.25], patch=32, batch=24, paired=True, seed=3).sample()
    sharp = PatchSampler(data, [0.25], patch=32, batch=24, paired=True, seed=3,
                         texture=1.0).sample()
    plain_noise, sharp_noise = plain["ld"] - plain["nd"], sharp["ld"] - sharp["nd"]
    assert _lag1_correlation(sharp_noise) < _lag1_correlation(plain_noise) - 0.2
    assert 0.5 < sharp_noise.std() / plain_noise.std() < 2.0  # the doses' range of levels
    unpaired = PatchSampler(data, [0.25], patch=32, batch=24, paired=False, seed=3,
                            texture=1.0).sample()
    assert _lag1_correlation(unpaired["nd_sim"] - unpaired["nd"]) < \
        _lag1_correlation(plain_noise) - 0.2


def test_patch_sampler_gives_the_noise_image_the_low_doses_texture(prepared):
    """Recorruption noise must have the statistics of the low dose's noise, texture included."""
    data = PreparedData(prepared)
    plain = PatchSampler(data, [0.25], patch=32, batch=24, context=3, seed=3, noise=True)
    sharp = PatchSampler(data, [0.25], patch=32, batch=24, context=3, seed=3, noise=True,
                         texture=1.0)
    plain_noise, sharp_batch = plain.sample()["noise"], sharp.sample()
    sharp_noise = sharp_batch["noise"]
    own = (sharp_batch["ld"] - sharp_batch["nd"])[:, 1:2]  # the centre slice's added noise
    assert _lag1_correlation(sharp_noise) < _lag1_correlation(plain_noise) - 0.2
    assert abs(_lag1_correlation(sharp_noise) - _lag1_correlation(own)) < 0.1
    assert 0.7 < sharp_noise.std() / own.std() < 1.4


def test_noise_images_have_the_scans_statistics_and_are_independent(prepared, tmp_path):
    # a copy without the noise cache other tests fill: a cache may hold more slices than asked
    shutil.copytree(prepared, tmp_path / "prepared", ignore=shutil.ignore_patterns("noise"))
    data = PreparedData(tmp_path / "prepared")
    case = data.cases("train")[0]
    nd, ld = data.volume(case).hu, data.volume(case, 0.25).hu
    own = ld - nd
    added, scan = noise_images(data, case, 0.25, [2, 3, 4])
    drawn = added + scan
    soft = (nd > -100) & (nd < 200)
    soft[[0, 1, 5, 6, 7]] = False  # only the requested slices are drawn
    assert 0.8 < drawn[soft].std() / own[soft].std() < 1.25
    assert abs(np.corrcoef(drawn[soft], own[soft])[0, 1]) < 0.1  # not the scan's own noise
    assert not drawn[[0, 1, 5, 6, 7]].any()
    np.testing.assert_array_equal(sum(noise_images(data, case, 0.25, [3])), drawn)  # cached
    sampler = PatchSampler(data, [0.25], patch=32, batch=4, context=3, paired=True, seed=2,
                           noise=True)
    batch = sampler.sample()
    assert batch["noise"].shape == (4, 1, 32, 32) and batch["noise"].std() > 1.0


def test_scan_noise_kernel_recovers_the_scans_own_noise_texture():
    """Flat tissue with slice-independent, correlated noise: the drawn noise matches its level
    and its spectrum, and is a fresh draw, not the scan's own."""
    rng = np.random.default_rng(1)
    own = np.stack([ndimage.gaussian_filter(rng.standard_normal((128, 128)), 1.2) * 40
                    for _ in range(10)])
    kernel = scan_noise_kernel(50.0 + own + np.linspace(0, 5, 128)[None, None, :])
    drawn = np.stack([textured_noise(kernel, (128, 128), np.random.default_rng(k))
                      for k in range(10)])
    assert 0.85 < drawn.std() / own.std() < 1.15
    truth, fresh = metrics.nps(own, (1.0, 1.0), roi=32), metrics.nps(drawn, (1.0, 1.0), roi=32)
    assert abs(fresh.peak_frequency - truth.peak_frequency) <= 1 / 32
    high = truth.frequency > 0.2  # the fine-grain part, where kernels differ most
    assert 0.7 < fresh.power[high].sum() / truth.power[high].sum() < 1.3
    assert abs(np.corrcoef(drawn.ravel(), own.ravel())[0, 1]) < 0.05


def test_scan_noise_kernel_needs_slices_and_flat_tissue():
    flat = np.full((5, 64, 64), 50.0)
    assert scan_noise_kernel(flat[:2]) is None  # no neighbours on both sides
    assert scan_noise_kernel(flat - 1050.0) is None  # air only: no soft tissue to measure
    assert not scan_noise_kernel(flat).any()  # a noiseless scan has no noise to add
