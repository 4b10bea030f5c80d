"""The rule that picks the recommended model (`benchmarks/select_model.py`) and a network's gain
(`benchmarks/calibrate_gain.py`): the largest worst-case PSNR gain among the candidates that
keep CT numbers within 3 HU (the CT-number guard's limit) and raise SSIM on every slab, else
among all. Small constructed score tables where the gate changes the answer; the expected
choices are worked out by hand in the comments."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from calibrate_gain import at_gain  # noqa: E402
from select_model import Scores, Slab, best  # noqa: E402

from ldct.evaluate import Regions  # noqa: E402
from ldct.io import CTVolume  # noqa: E402


def _scores(psnr: dict[str, list[float]], ssim: float, bias: float) -> Scores:
    return Scores(psnr=psnr, ssim=ssim, bias=bias)


# worst = the smallest gain over kernels and slabs; keeps = bias <= 3 HU and SSIM gain > 0
TABLE = {
    "sharp": _scores({"hann": [3.0, 2.5], "sharp": [2.0, 1.8]}, 0.02, 3.5),   # worst 1.8, bias
    "blurry": _scores({"hann": [2.2, 2.0], "sharp": [1.9, 1.7]}, -0.01, 0.5),  # 1.7, SSIM lost
    "edge": _scores({"hann": [2.0, 2.1], "sharp": [1.6, 1.9]}, 0.005, 3.0),   # 1.6, bias = limit
    "uneven": _scores({"hann": [4.0, 4.0], "sharp": [1.0, 4.0]}, 0.03, 0.2),  # 1.0, best mean
    "steady": _scores({"hann": [1.6, 1.6], "sharp": [1.5, 1.5]}, 0.01, 1.0),  # 1.5
}


def test_the_gate_changes_the_recommendation():
    # by worst gain alone: sharp (1.8) > blurry (1.7) > edge (1.6) > steady (1.5) > uneven;
    # sharp shifts CT numbers 3.5 HU and blurry loses SSIM: edge, exactly at 3 HU, is kept
    assert [k for k in TABLE if TABLE[k].keeps()] == ["edge", "uneven", "steady"]
    assert [TABLE[k].worst() for k in TABLE] == [1.8, 1.7, 1.6, 1.0, 1.5]
    assert best(TABLE) == "edge"
    without_edge = {k: v for k, v in TABLE.items() if k != "edge"}
    assert best(without_edge) == "steady"  # not uneven, whose mean gain (3.25) is the best


def test_when_no_candidate_keeps_the_best_worst_case_of_all_is_chosen():
    table = {"shifts": _scores({"hann": [2.5]}, 0.01, 4.0),
             "smears": _scores({"hann": [2.0]}, -0.02, 0.1),
             "both": _scores({"hann": [3.0]}, -0.01, 6.0)}
    assert not any(s.keeps() for s in table.values())
    assert best(table) == "both"


def _slab(noise_sd: float, condition: str) -> Slab:
    """A 5-slice slab, 3 inner slices scored: liver at 60 HU on the left, fat at -100 HU on the
    right, the low dose a +-``noise_sd`` HU checkerboard on it (no clipping in the window)."""
    reference = np.zeros((5, 32, 32))
    reference[:, :, :16], reference[:, :, 16:] = 60.0, -100.0
    z, y, x = np.indices(reference.shape)
    checker = np.where((z + y + x) % 2 == 0, 1.0, -1.0)
    low = CTVolume(hu=reference + noise_sd * checker, spacing=(1.0, 1.0, 1.0))
    liver = np.zeros((3, 32, 32), bool)
    liver[:, :, :16] = True
    regions = Regions(body=np.ones_like(liver), liver=liver, fat=~liver,
                      tumour=np.zeros_like(liver))
    return Slab("case", condition, low, slice(1, 4), reference[1:4], regions)


def test_scores_add_measures_gain_bias_and_ssim_against_the_slabs_input():
    slab = _slab(8.0, "hann")
    scores = Scores()
    out = slab.reference + 4.0  # a constant 4 HU shift, no noise left
    scores.add(slab, out)
    # PSNR on the 400 HU window: input error 8 HU = 0.02, output 4 HU = 0.01: the gain is
    # 20 log10(0.02 / 0.01) = 6.0206 dB; the shift is 4 HU in liver and fat
    assert scores.psnr == {"hann": [pytest.approx(6.0206, abs=1e-4)]}
    assert scores.bias == pytest.approx(4.0) and not scores.keeps()
    assert scores.ssim > 0  # the checkerboard gone, the structure (two flat halves) kept
    scores.add(_slab(8.0, "hann"), slab.reference - 1.0)  # a second slab: 40 - 33.98 dB
    assert scores.psnr["hann"][1] == pytest.approx(20 * np.log10(8.0), abs=1e-4)
    assert scores.worst() == pytest.approx(6.0206, abs=1e-4) and scores.bias == 4.0


def test_calibrated_gain_is_the_best_kept_not_the_best():
    """A network whose estimate at gain 1 is the noise n plus a 3.5 HU offset, stored at gain
    0.8: at gain g the result is reference + (1 - g) n - 3.5 g. Its bias, 3.5 g, stays within
    3 HU only up to g = 0.857. MSE (HU^2) with n = +-20: (1 - g)^2 400 + 12.25 g^2, smallest
    at g = 0.97 (1.0 of the gains tried: 12.25 against 13.92 at 0.9); with n = +-40 the same
    order. Kept gains 0.7 (42.0) and 0.8 (23.84): 0.8 is chosen."""
    gains = (0.7, 0.8, 0.9, 1.0, 1.1)
    stored = 0.8
    scores = {g: Scores() for g in gains}
    for noise, condition in ((20.0, "hann"), (40.0, "sharp")):
        slab = _slab(noise, condition)
        x = slab.low.hu[slab.inner]
        n = x - slab.reference
        out = x - stored * (n + 3.5)  # what the network returned at its stored gain
        for g, s in scores.items():
            s.add(slab, at_gain(x, out, stored, g))
    assert [g for g in gains if scores[g].keeps()] == [0.7, 0.8]
    assert max(gains, key=lambda g: scores[g].worst()) == 1.0  # the ungated answer
    assert best(scores) == 0.8
    # worst case at 0.8: the +-20 slab, 10 log10(400 / 23.84) = 12.248 dB
    assert scores[0.8].worst() == pytest.approx(12.248, abs=1e-3)
