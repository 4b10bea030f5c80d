"""`ldct prepare`: dose series and splits, cached, from a folder laid out like ../shared/data."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from ldct import metrics
from ldct.data import PatchSampler, PreparedData, prepare, summarize, unpaired_split
from ldct.noise_bank import (
    ScanNoise,
    noise_level_map,
    own_textured,
    scan_noise_kernel,
    textured_noise,
)
from ldct.simulate import retexture


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


def test_prepare_adds_other_kernels_from_the_same_projection_noise(fake_shared, tmp_path):
    out = tmp_path / "prepared"
    prepare(fake_shared, out, doses=(0.25,), max_slices=4, cases=["ircadb01"], progress=False)
    before = (out / "ircadb01" / "dose_0.25.nrrd").stat().st_mtime_ns
    manifest = prepare(fake_shared, out, doses=(0.25,), max_slices=4, cases=["ircadb01"],
                       progress=False, kernels=("sharp-ee",))
    assert manifest["kernels"] == ["hann", "sharp-ee"]
    assert (out / "ircadb01" / "dose_0.25.nrrd").stat().st_mtime_ns == before  # kept
    data = PreparedData(out)
    nd, hann = data.volume("ircadb01").hu, data.volume("ircadb01", 0.25).hu
    sharp = data.volume("ircadb01", 0.25, "sharp-ee")
    assert sharp.same_geometry(data.volume("ircadb01"), atol=1e-9)
    np.testing.assert_allclose(sharp.hu - nd, retexture(hann - nd, "sharp-ee"), atol=0.01)
    np.testing.assert_array_equal(data.volume("ircadb01", 0.25, "hann").hu, hann)
    assert (sharp.hu - nd).std() > 1.5 * (hann - nd).std()
    with pytest.raises(KeyError, match="dose_0.25_ram-lak not prepared"):
        data.volume("ircadb01", 0.25, "ram-lak")


def test_patch_sampler_draws_the_prepared_kernels(prepared):
    data = PreparedData(prepared)
    plain = PatchSampler(data, [0.25], patch=32, batch=24, paired=True, seed=3).sample()
    sharp = PatchSampler(data, [0.25], patch=32, batch=24, paired=True, seed=3,
                         kernels=["sharp-ee"]).sample()
    plain_noise, sharp_noise = plain["ld"] - plain["nd"], sharp["ld"] - sharp["nd"]
    assert _lag1_correlation(sharp_noise) < _lag1_correlation(plain_noise) - 0.2
    assert sharp_noise.std() > 1.5 * plain_noise.std()  # the kernel's own, higher, level
    np.testing.assert_array_equal(sharp["ld"], np.rint(sharp["ld"]))  # whole HU, as scans
    unpaired = PatchSampler(data, [0.25], patch=32, batch=24, paired=False, seed=3,
                            kernels=["sharp-ee"]).sample()
    assert _lag1_correlation(unpaired["nd_sim"] - unpaired["nd"]) < \
        _lag1_correlation(plain_noise) - 0.2
    both = PatchSampler(data, [0.25], patch=32, batch=4, seed=3, kernels=["hann", "sharp-ee"])
    assert set(k for _, _, k in both.low) == {"hann", "sharp-ee"}
    weighted = PatchSampler(data, [0.25], patch=32, batch=4, seed=3,
                            kernels=["hann", "hann", "hann", "sharp-ee"])
    draws = [weighted._pick(weighted.kernels) for _ in range(4000)]
    assert 0.7 < draws.count("hann") / len(draws) < 0.8  # listed 3 of 4 times
    for wrong in ("hann,sharp-ee", ["hann", "ram-lak"]):  # a string, or not prepared
        with pytest.raises(ValueError, match="list of the prepared kernels"):
            PatchSampler(data, [0.25], patch=32, batch=4, kernels=wrong)


def test_patch_sampler_thicker_slices_average_adjacent_ones(prepared):
    """thickness 2: the same scan reconstructed twice as thick - the low dose's noise SD falls
    by about 1/sqrt(2) (independent slice noise), HU stay, and the recorruption noise follows."""
    data = PreparedData(prepared)

    def batch(thickness):
        return PatchSampler(data, [0.25], patch=32, batch=48, context=3, seed=5, noise=True,
                            thickness=thickness).sample()

    thin, thick = batch([1]), batch([2])
    thin_sd, thick_sd = (thin["ld"] - thin["nd"]).std(), (thick["ld"] - thick["nd"]).std()
    assert 0.6 < thick_sd / thin_sd < 0.85, (thin_sd, thick_sd)
    assert abs((thick["ld"] - thick["nd"]).mean()) < 2.0
    assert 0.6 < thick["noise"].std() / thin["noise"].std() < 0.85
    mixed = PatchSampler(data, [0.25], patch=32, batch=4, seed=5, thickness=[1, 2])
    assert mixed.thickness == [1, 2] and mixed.sample()["ld"].shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match="whole numbers of slices >= 1"):
        PatchSampler(data, [0.25], patch=32, batch=4, thickness=[0])


@pytest.mark.parametrize("kernel", ["hann", "sharp-ee"])
def test_recorruption_noise_has_the_low_doses_statistics_measured_from_it(prepared, kernel):
    """The noise patches come from the low-dose scan alone, yet match its own noise (level and
    texture, per kernel) and are fresh draws, not that noise."""
    data = PreparedData(prepared)
    batch = PatchSampler(data, [0.25], patch=32, batch=48, context=3, seed=3, noise=True,
                         kernels=[kernel]).sample()
    own, drawn = (batch["ld"] - batch["nd"])[:, 1:2], batch["noise"]
    assert drawn.shape == own.shape
    assert 0.75 < drawn.std() / own.std() < 1.3
    assert abs(_lag1_correlation(drawn) - _lag1_correlation(own)) < 0.1
    assert abs(np.corrcoef(drawn.ravel(), own.ravel())[0, 1]) < 0.1


def test_noise_level_map_follows_the_local_noise_not_the_anatomy():
    """Left half 20 HU noise, right half 60 HU; a vessel that appears in one slice only and a
    z-constant edge must not count as noise."""
    rng = np.random.default_rng(0)
    hu = np.full((7, 128, 128), 50.0) + rng.standard_normal((7, 128, 128)) * 20
    hu[:, :, 64:] += rng.standard_normal((7, 128, 64)) * np.sqrt(60 ** 2 - 20 ** 2)
    hu[:, 40:60, 20:24] += 300.0  # an edge constant along z
    hu[3, 80:84, 30:34] += 400.0  # a vessel crossing one slice
    level = noise_level_map(hu, block=16)
    assert level.shape == (7, 8, 8)
    assert np.allclose(level[:, :, :4], 20.0, rtol=0.2)
    assert np.allclose(level[:, :, 4:], 60.0, rtol=0.2)
    scan = ScanNoise(hu)
    left = np.stack([scan.patch(3, 64, 32, 32, rng) for _ in range(20)])
    right = np.stack([scan.patch(3, 64, 96, 32, rng) for _ in range(20)])
    assert left.std() == pytest.approx(20.0, rel=0.2) and right.std() == pytest.approx(60.0,
                                                                                       rel=0.2)
    with pytest.raises(ValueError, match="at least 3 slices"):
        ScanNoise(hu[:2])


def test_own_texture_gives_a_lower_dose_the_scans_own_noise():
    """Fine-grained own noise (SD 15 HU) and coarser simulated added noise (a Hann window on
    white noise): the added part takes the scan's texture, a quarter dose's level (15 sqrt(3)
    HU) and stays the same draw."""
    rng = np.random.default_rng(4)
    own = np.stack([ndimage.gaussian_filter(rng.standard_normal((128, 128)), 0.6)
                    for _ in range(8)])
    normal = 50.0 + own * (15.0 / own.std())
    added = retexture(rng.standard_normal((8, 128, 128)), "hann", source="ram-lak") * 60.0
    made = own_textured(added, normal, dose=0.25)
    inner = (slice(1, -1), slice(8, -8), slice(8, -8))
    assert made[inner].std() == pytest.approx(15.0 * np.sqrt(3.0), rel=0.15)
    own_lag, made_lag = _lag1_correlation(own[inner]), _lag1_correlation(made[inner])
    assert abs(made_lag - own_lag) < 0.5 * abs(_lag1_correlation(added[inner]) - own_lag)
    assert np.corrcoef(made[inner].ravel(), added[inner].ravel())[0, 1] > 0.3
    assert abs(made.mean()) < 1.0  # no HU offset
    with pytest.raises(ValueError, match="cannot be measured"):
        own_textured(added, np.full_like(normal, 50.0), dose=0.25)


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
