"""The CT-number guard: good denoisers pass, an organ-shaped shift is caught (also through the
HU-preserving wrapper, whose real guarantee it measures), and the check reaches every result."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from ldct.ct_guard import THRESHOLD_HU, check_ct_numbers, organ_shift_through_wrapper
from ldct.infer import denoise
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose


@pytest.fixture(scope="module")
def case():
    p = make_phantom(size=256, slices=16, pixel_mm=0.78, seed=5)
    low = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=6, progress=False)
    return p, low


@pytest.mark.parametrize("model", ["vagan", "ldct-nlm"])
def test_a_denoiser_that_keeps_ct_numbers_passes(case, model):
    _, low = case
    check = check_ct_numbers(low.hu, denoise(low, model, ensemble=1).hu)
    assert check.passed and len(check.regions) >= 4
    assert abs(check.worst.shift_hu) < 2.0
    assert check.as_dict()["passed"] is True and "passed" in check.message()


def test_an_organ_shaped_shift_is_caught_and_located(case):
    p, low = case
    result = denoise(low, "ldct-gauss").hu
    liver = p.masks["liver"]
    moved = check_ct_numbers(low.hu, result + 5.0 * liver)
    assert not moved.passed and "WARNING: CT numbers moved" in moved.message()
    slices, rows, cols = np.nonzero(liver)
    centre = moved.worst.centre
    assert slices.min() <= centre[0] <= slices.max() and rows.min() <= centre[1] <= rows.max()
    assert cols.min() <= centre[2] <= cols.max()  # the warning points at the liver
    given = check_ct_numbers(low.hu, low.hu + 4.0 * liver, masks={"liver": liver})
    assert given.regions[0].tissue == "liver" and given.worst.shift_hu == pytest.approx(4.0)


@pytest.mark.parametrize("keep_sigma", [2.0, 4.0])
def test_the_wrapper_lets_only_the_rim_of_an_organ_shift_through(case, keep_sigma):
    """A core that moves the liver by +100 HU: the wrapper keeps the low band, so the interior
    of the liver (farther than 3 sigma from its edge) keeps its CT numbers, but the mean over the
    whole liver mask moves (its rim): the guard given the organ's mask flags that."""
    p, low = case
    liver = p.masks["liver"]
    change = organ_shift_through_wrapper(low.hu, liver, 100.0, keep_sigma) - low.hu
    in_plane = np.zeros((1, 3, 3), bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    interior = ndimage.binary_erosion(liver, in_plane, iterations=int(3 * keep_sigma))
    assert abs(change[interior].mean()) < 0.2
    assert 2.0 < change[liver].mean() < 20.0  # not "cannot move"
    flagged = check_ct_numbers(low.hu, low.hu + change, masks={"liver": liver})
    assert not flagged.passed and flagged.worst.shift_hu == pytest.approx(change[liver].mean())
    unmoved = organ_shift_through_wrapper(low.hu, liver, 0.0, keep_sigma)
    assert np.array_equal(unmoved, low.hu)


def test_ldct_denoise_prints_the_check(tmp_path, case):
    _, low = case
    source = write_volume(low, tmp_path / "low.nrrd", dtype="int16")
    done = subprocess.run([sys.executable, "-m", "ldct.cli", "denoise", str(source), "-o",
                           str(tmp_path / "out.nrrd"), "--model", "ldct-gauss"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CT-number check passed" in done.stdout and f"±{THRESHOLD_HU:g} HU" in done.stdout
    p, _ = case
    mask = write_volume(low.with_hu(p.masks["liver"].astype(np.float32)), tmp_path / "liver.nrrd")
    done = subprocess.run([sys.executable, "-m", "ldct.cli", "denoise", str(source), "-o",
                           str(tmp_path / "out2.nrrd"), "--model", "ldct-gauss",
                           "--check-mask", str(mask)], capture_output=True, text=True)
    assert done.returncode == 0 and "(liver.nrrd)" in done.stdout, done.stdout
