"""`ldct evaluate`: the report's tables and figures, on the phantom test case."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage

from ldct.evaluate import (
    COLUMNS,
    REAL,
    evaluate,
    evaluate_kernels,
    sweep_targets,
    worst_kernels,
)
from ldct.io import write_volume
from ldct.phantom import make_phantom


def test_evaluate_writes_table_csv_and_figures(prepared, tmp_path):
    rows = evaluate(prepared, tmp_path, dose=0.25, models=["ldct-gauss"], nps_roi=8)
    assert [r["method"] for r in rows] == ["low dose (input)", "ldct-gauss"]
    low, gauss = rows
    assert gauss["liver_noise_sd"] < low["liver_noise_sd"] and gauss["noise_vs_ld"] < 1.0
    assert abs(gauss["liver_bias_hu"]) < 3.0
    assert gauss["liver_sd_hu"] < low["liver_sd_hu"]  # the image's own SD in the liver
    with open(tmp_path / "quality.csv") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == COLUMNS and len(table) == 3
    report = (tmp_path / "quality.md").read_text()
    assert "| ldct-gauss |" in report and "montage.png" in report
    assert "the normal-dose reference itself: CNR " in report and "liver SD " in report
    for figure in ("montage.png", "nps.png"):
        assert (tmp_path / figure).stat().st_size > 5_000


def test_kernel_sweep_reports_each_kernel_and_the_worst(prepared, tmp_path):
    phantom = make_phantom(size=128, slices=6, seed=3).volume
    grain = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(phantom.hu.shape),
                                    (0, 0.6, 0.6))
    real = write_volume(phantom.with_hu(phantom.hu + 40.0 * grain), tmp_path / "real.nrrd")
    results = evaluate_kernels(prepared, tmp_path, ["hann", "sharp-ee"], dose=0.25,
                               models=["ldct-gauss", "ldct-nlm"], nps_roi=8, real_volume=real,
                               thickness=2)
    assert list(results) == ["hann", "sharp-ee", "hann x2 thickness", REAL]
    thick = results["hann x2 thickness"][0]
    assert thick["liver_noise_sd"] < 0.85 * results["hann"][0]["liver_noise_sd"]  # averaged
    real_input = results[REAL][0]
    assert real_input["liver_noise_sd"] > 1.0 and np.isnan(real_input["tumour_cnr"])
    hann, sharp = results["hann"][0], results["sharp-ee"][0]  # the inputs
    assert sharp["liver_noise_sd"] > 1.5 * hann["liver_noise_sd"]  # same draw, sharper kernel
    assert sharp["nps_peak_cpmm"] > hann["nps_peak_cpmm"]
    worst = worst_kernels(results)[0]
    gains = {k: rows[1]["psnr_db"] - rows[0]["psnr_db"] for k, rows in results.items()
             if k != REAL}  # reported apart
    assert worst["method"] == "ldct-gauss" and worst["worst_kernel"] == min(gains, key=gains.get)
    gauss, nlm = sweep_targets(results)
    assert gauss["psnr_gain_db"] == pytest.approx(min(gains.values()))
    assert gauss["noise_vs_ld"] == max(rows[1]["noise_vs_ld"] for rows in results.values())
    margins = [rows[1]["psnr_db"] - rows[2]["psnr_db"] for k, rows in results.items()
               if k != REAL]
    assert gauss["nlm_margin_db"] == pytest.approx(min(margins)) and nlm["nlm_margin_db"] == 0
    assert gauss["passes"] == (min(gains.values()) >= 3.0 and gauss["noise_vs_ld"] <= 0.6
                               and gauss["max_abs_bias_hu"] <= 2.0 and gauss["ssim_gain"] > 0)
    report = (tmp_path / "kernels.md").read_text()
    assert "## hann" in report and "## sharp-ee" in report and "## Worst kernel" in report
    assert "## Targets at every kernel" in report and "| ldct-gauss | " in report
    with open(tmp_path / "kernels.csv") as handle:
        assert len(list(csv.reader(handle))) == 1 + 4 * 3
    assert f"'{REAL}': a real normal-dose scan" in report
    for figure in ("kernels_montage.png", "kernels_nps.png"):
        assert (tmp_path / figure).stat().st_size > 5_000
