"""The `ldct` console script: simulate and demo as a user runs them; errors are readable."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom

from ldct.demo import run_demo
from ldct.io import read_volume, write_volume


def test_simulate_cli_writes_a_derived_dicom_series(tmp_path, phantom, ldct_command):
    src = write_volume(phantom.volume, tmp_path / "nd.nrrd")
    out = tmp_path / "ld_series"
    subprocess.run([*ldct_command, "simulate", str(src), str(out), "--dose", "0.25",
                    "--seed", "3", "--views", "360"], check=True, capture_output=True)
    result = read_volume(out)
    assert result.same_geometry(phantom.volume, atol=1e-9)
    assert np.abs(result.hu - phantom.volume.hu).mean() > 1.0
    header = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert "dose 0.25" in header.SeriesDescription


def test_cli_reports_bad_input_without_a_traceback(tmp_path, ldct_command):
    bad = tmp_path / "mr.nrrd"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 32, 32), 300.0, np.float32)), str(bad))
    run = subprocess.run([*ldct_command, "simulate", str(bad), str(tmp_path / "o.nrrd")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "not a CT volume" in run.stdout and "Traceback" not in run.stderr
    assert not (tmp_path / "o.nrrd").exists()


def test_demo_on_the_phantom_reduces_noise(tmp_path):
    report = run_demo(tmp_path, data_dir=None)
    assert report.source == "synthetic phantom"
    assert report.figure.stat().st_size > 10_000
    low, best = report.rows
    assert best["liver_noise_sd"] < 0.8 * low["liver_noise_sd"]
    assert best["psnr_db"] > low["psnr_db"]


def test_unwritable_output_is_reported(tmp_path, phantom, ldct_command):
    src = write_volume(phantom.volume, tmp_path / "nd.nrrd")
    before = src.read_bytes()
    run = subprocess.run([*ldct_command, "simulate", str(src), "/proc/ldct-test/out.nrrd",
                          "--views", "64"], capture_output=True, text=True)
    assert run.returncode in (2, 3), run.stdout + run.stderr
    assert "error" in run.stdout and "Traceback" not in run.stderr
    assert src.read_bytes() == before
