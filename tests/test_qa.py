"""ldct.qa against answers from outside the code: the ideal observer's d' of a known signal in
white noise, the normal model's AUC, the TTF of a known Gaussian blur, the ensemble residuals'
variance, Catphan's nominal CT numbers on a noiseless scan, the 1/sqrt(dose) law."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.special import erfc

from ldct.metrics import auc
from ldct.qa import phantoms
from ldct.qa.nps import residuals
from ldct.qa.observer import Split, auc_from_dprime, channelize, dprime, laguerre_gauss
from ldct.qa.scan import Protocol, Scanner, kernel_filter
from ldct.qa.summary import dose_needed
from ldct.qa.ttf import disc_ttf
from ldct.simulate import LowDoseParams, ParallelBeam, simulate_slice_noise

# Catphan CTP404 nominal CT numbers (pylinac's constants, jrkerns/pylinac pylinac/ct.py)
NOMINAL = {"air": -1000, "pmp": -196, "ldpe": -104, "polystyrene": -47, "acrylic": 115,
           "bone20": 237, "delrin": 365, "bone50": 725, "teflon": 1000}


def _gaussian_signal(size: int, amplitude: float, width: float) -> np.ndarray:
    c = (size - 1) / 2
    r2 = (np.arange(size) - c)[:, None] ** 2 + (np.arange(size) - c)[None, :] ** 2
    return amplitude * np.exp(-r2 / (2 * width ** 2))


def test_cho_matches_the_ideal_observer_on_white_noise():
    """A Gaussian blob in white Gaussian noise: the ideal observer's d' is ||s|| / sigma; the
    blob is the first LG channel at width sqrt(2 pi) w, so the CHO must reach it."""
    rng = np.random.default_rng(7)
    size, width, sigma, n = 31, 4.0, 10.0, 2000
    signal = _gaussian_signal(size, 3.0, width)
    ideal = math.sqrt(float((signal ** 2).sum())) / sigma  # 2.127 here
    channels = laguerre_gauss(size, math.sqrt(2 * math.pi) * width)
    present = channelize(signal + sigma * rng.standard_normal((2 * n, size, size)), channels)
    absent = channelize(sigma * rng.standard_normal((2 * n, size, size)), channels)
    t1, t0 = Split.halves(present, absent).scores()
    assert dprime(t1, t0) == pytest.approx(ideal, rel=0.05)
    # and its AUC is the normal model's Phi(d'/sqrt 2) for that d'
    assert auc(t1, t0) == pytest.approx(auc_from_dprime(ideal), abs=0.015)


def test_auc_of_normal_scores_is_phi_of_dprime_over_root_two():
    # Phi(1.5 / sqrt 2) = Phi(1.0607) = 0.8556 (normal table)
    assert auc_from_dprime(1.5) == pytest.approx(0.8556, abs=1e-4)
    rng = np.random.default_rng(3)
    present, absent = rng.normal(1.5, 1.0, 20000), rng.normal(0.0, 1.0, 20000)
    assert auc(present, absent) == pytest.approx(0.8556, abs=0.006)
    assert dprime(present, absent) == pytest.approx(1.5, abs=0.03)


def test_ttf_of_a_known_gaussian_blur():
    """A disc edge blurred by a Gaussian of SD s pixels: TTF(f) = exp(-2 pi^2 s^2 f^2), so
    TTF50 = sqrt(ln 2 / 2) / (pi s) and TTF10 = sqrt(ln 10 / 2) / (pi s) cycles per pixel."""
    n, radius, s, pixel = 128, 30.0, 2.0, 0.5
    r = np.hypot(*(np.indices((n, n)) - (n - 1) / 2))
    image = 100.0 * 0.5 * erfc((r - radius) / (math.sqrt(2) * s))
    ttf = disc_ttf(image, ((n - 1) / 2, (n - 1) / 2), radius, pixel)
    assert ttf.at_fraction(0.5) == pytest.approx(0.18739, rel=0.05)  # cycles/mm at 0.5 mm
    assert ttf.at_fraction(0.1) == pytest.approx(0.34154, rel=0.05)


def test_ensemble_residuals_keep_the_noise_variance():
    rng = np.random.default_rng(8)
    images = 50.0 + rng.normal(0, 4.0, (6, 64, 64))
    assert residuals(images).std() == pytest.approx(4.0, rel=0.03)


def test_ct_numbers_of_a_noiseless_scan_are_catphans_within_1_hu():
    """The CT-number module projected and reconstructed by the simulator's own projector and
    FBP (no noise): each insert's ROI mean is its nominal CT number within 1 HU."""
    grid = phantoms.Grid.for_diameter(200.0, 256)
    discs = phantoms.ctp404(200.0, grid)
    params = LowDoseParams()
    beam = ParallelBeam(256, 256, (grid.pixel_mm, grid.pixel_mm), 360, "hann")
    mu = params.mu_water * (1 + phantoms.rasterize(discs, grid) / 1000.0)
    hu = (beam.fbp(beam.project(mu)) / params.mu_water - 1) * 1000.0
    measured = {d.name: float(hu[phantoms.disc_mask(d, grid)].mean()) for d in discs[1:]}
    assert measured == pytest.approx(NOMINAL, abs=1.0)
    # the noiseless images `ldct qa` adds its noise to: the phantom through each kernel, on
    # the run's 512^2 grid (the sharp kernel's edge enhancement rings a few pixels inwards)
    grid = phantoms.Grid.for_diameter(200.0, 512)
    discs = phantoms.ctp404(200.0, grid)
    for kernel in ("hann", "sharp-ee"):
        clean = kernel_filter(phantoms.rasterize(discs, grid), kernel)
        assert {d.name: float(clean[phantoms.disc_mask(d, grid)].mean())
                for d in discs[1:]} == pytest.approx(NOMINAL, abs=1.0)


def test_scan_noise_falls_as_one_over_root_dose_and_matches_the_simulators_excess():
    """Quantum-limited noise: SD at 25 % is twice the full dose's; and what the phantom scan
    adds from full to 25 % dose is the simulator's own added noise (DESIGN.md section 4)."""
    protocol = Protocol(200.0, 128)
    grid, scanner = protocol.grid, Scanner(protocol)
    hu = phantoms.rasterize(phantoms.cct189(200.0, grid, present=False), grid)
    variance = scanner.variance(hu)
    centre = slice(44, 84)
    sd = {a: [] for a in (1.0, 0.25)}
    for seed in range(4):
        sources = scanner.sources(variance, np.random.default_rng(seed))
        for a in sd:
            sd[a].append(Scanner.noise(sources, a, "hann")[centre, centre].std())
    full, quarter = np.mean(sd[1.0]), np.mean(sd[0.25])
    assert quarter / full == pytest.approx(2.0, rel=0.05)
    params = LowDoseParams(dose=0.25, i0=protocol.i0, kernel="hann")
    beam = ParallelBeam(128, 128, (grid.pixel_mm, grid.pixel_mm), params.views, "hann")
    added = np.mean([simulate_slice_noise(hu, beam, params, np.random.default_rng(10 + k))
                     [centre, centre].std() for k in range(4)])
    assert math.sqrt(quarter ** 2 - full ** 2) == pytest.approx(added, rel=0.08)


def test_a_quarter_turn_leaves_the_scans_noise_statistics_unchanged():
    """What lets one scan give each rod four samples (`ldct.qa.run.QUARTER_TURNS`): the
    cylinder's post-log variance is the same in every view and a quarter turn maps the 720
    views onto themselves (view k + 180 is k turned by 90 degrees)."""
    protocol = Protocol(200.0, 128)
    grid = protocol.grid
    quantum, electronic = Scanner(protocol).variance(
        phantoms.rasterize(phantoms.cct189(200.0, grid, present=False), grid))
    quarter = protocol.params.views // 2  # the views cover 180 degrees: 90 is half of them
    assert protocol.params.views % 2 == 0
    for v in (quantum, electronic):
        assert np.allclose(v[:quarter], v[quarter:], rtol=0.02)


def test_dose_needed_interpolates_dprime_squared_in_dose():
    doses = [0.1, 0.25, 0.5, 1.0]
    # d'^2 = 4, 9 at 0.25 and 0.5: the target d' = 2.5 (6.25) lies 2.25/5 of the way: 0.3625
    assert dose_needed(doses, [1.0, 2.0, 3.0, 4.0], 2.5) == pytest.approx(0.3625)
    assert dose_needed(doses, [3.0, 3.5, 4.0, 5.0], 2.0) == 0.1  # already at the lowest dose
    assert dose_needed(doses, [0.5, 0.6, 0.7, 0.8], 2.0) is None  # never


def test_quick_cli_run_writes_the_report_and_the_model_summaries(tmp_path, monkeypatch):
    """`ldct qa --quick` end to end on one size: qa.csv has the contract's columns and one
    row per model x dose x kernel x size x insert, the input never 'loses' against itself,
    the Gaussian filter lowers the noise and moves its NPS to lower frequencies, and the
    summaries reach the registry's /info/ entry."""
    from ldct import registry
    from ldct.cli import main

    monkeypatch.setattr(registry, "QUALITY_FILE", tmp_path / "task_quality.json")
    out = tmp_path / "report"
    assert main(["qa", "--quick", "--sizes", "112", "--pairs", "4", "--models", "ldct-gauss",
                 "--cache",
                 str(tmp_path / "cache"), "--out", str(out), "--write"]) == 0
    with open(out / "qa.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in ("model", "dose", "kernel", "size_mm", "insert", "dprime", "dprime_low",
                   "dprime_high", "auc"):
        assert column in rows[0]
    assert len(rows) == 2 * 2 * 1 * 1 * 4  # models x doses x kernels x sizes x rods
    assert {r["model"] for r in rows} == {"input", "ldct-gauss"}
    assert {r["insert"] for r in rows} == {"3mm 14HU", "5mm 7HU", "7mm 5HU", "10mm 3HU"}
    assert all(r["detectability_loss"] == "false" for r in rows if r["model"] == "input")
    for r in rows:
        assert float(r["dprime_low"]) <= float(r["dprime"]) <= float(r["dprime_high"])
    gauss = [r for r in rows if r["model"] == "ldct-gauss"]
    plain = {(r["dose"], r["insert"]): r for r in rows if r["model"] == "input"}
    for r in gauss:
        assert float(r["noise_sd_hu"]) < float(plain[r["dose"], r["insert"]]["noise_sd_hu"])
        assert float(r["nps_mean_ratio"]) < float(plain[r["dose"], r["insert"]]["nps_mean_ratio"])
    assert (out / "qa.md").exists() and (out / "qa_ctnumbers.csv").exists()
    summary = registry.get("ldct-gauss").summary()["task_based_quality"]
    assert "dose_reduction_median" in summary and "detectability_losses" in summary


@pytest.mark.parametrize("argv, words", [
    (["--doses", "0.25", "0.5"], "include 1"),
    (["--doses", "0.25", "1", "2"], "fractions in (0, 1]"),
    (["--sizes", "40"], "from 100 to 500 mm"),
    (["--models", "no-such-model"], "unknown model"),
])
def test_bad_qa_options_are_refused_before_any_scan(argv, words, tmp_path, capsys):
    from ldct.cli import main

    assert main(["qa", "--quick", "--cache", str(tmp_path / "cache"), "--out",
                 str(tmp_path / "out"), *argv]) == 2
    assert words in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # nothing scanned, nothing written
