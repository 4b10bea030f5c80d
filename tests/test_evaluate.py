"""`ldct evaluate`: the report's tables and figures, on the phantom test case."""

from __future__ import annotations

import csv

from ldct.evaluate import COLUMNS, evaluate


def test_evaluate_writes_table_csv_and_figures(prepared, tmp_path):
    rows = evaluate(prepared, tmp_path, dose=0.25, models=["ldct-gauss"], nps_roi=4)
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
