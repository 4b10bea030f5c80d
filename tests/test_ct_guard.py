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


def test_the_automatic_guard_sees_only_the_part_of_a_rim_leak_inside_its_regions():
    """A noiseless 16 x 128 x 128 volume: fat (-100 HU) with a band of soft tissue (40 HU) in
    columns 16-111 over all rows. A result that moves only the tissue's rim - the 8 columns
    along each edge (16-23 and 104-111) by +50 HU - is the wrapper's kind of leak.

    Worked by hand: after the guard's in-plane Gaussian (sigma 2 px) a tissue pixel reads
    -100 + 140 Phi(d / 2) at distance d from the edge, >= 10 HU from d = 2.5 on, so columns
    18-109 are soft tissue; 3 px of erosion leave columns 21-106 and rows 3-124 (the array's
    border erodes too). Tiles are 64 x 64 x 16, so four regions of 61 rows x 43 columns x 16
    slices = 41,968 voxels, each holding 3 leaked columns (21-23 or 104-106) of its 43: a mean
    shift of 50 x 3 / 43 = 3.488 HU, flagged. (The fat strips, 9 columns after erosion, fill
    too little of a tile to count.) At +40 HU it is 2.791 HU and passes; the liver mask
    itself would show 40 x 16 / 96 = 6.667 HU."""
    hu = np.full((16, 128, 128), -100.0, np.float32)
    hu[:, :, 16:112] = 40.0
    rim = np.zeros(hu.shape, bool)
    rim[:, :, 16:24] = rim[:, :, 104:112] = True
    flagged = check_ct_numbers(hu, hu + 50.0 * rim)
    assert [(r.tissue, r.voxels) for r in flagged.regions] == [("soft tissue", 41968)] * 4
    assert [r.shift_hu for r in flagged.regions] == pytest.approx([50 * 3 / 43] * 4, abs=1e-4)
    assert not flagged.passed
    passes = check_ct_numbers(hu, hu + 40.0 * rim)
    assert passes.passed and passes.worst.shift_hu == pytest.approx(40 * 3 / 43, abs=1e-4)
    tissue = np.zeros(hu.shape, bool)
    tissue[:, :, 16:112] = True
    given = check_ct_numbers(hu, hu + 40.0 * rim, masks={"liver": tissue})
    assert not given.passed and given.worst.shift_hu == pytest.approx(40 * 16 / 96, abs=1e-4)
