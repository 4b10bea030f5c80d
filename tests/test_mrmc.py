"""The MRMC analysis against published results: the Van Dyke et al. (1993) study as analysed by
MRMCaov (Smith & Hillis; docs/jss/MRMCaov.tex, see tests/data/README.md), and the sample-size
method against the power the OR test reaches over repeated simulated studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldct.study.mrmc import (
    Components,
    cases_needed,
    jackknife_covariance,
    obuchowski_rockette,
    plan,
    power,
)
from ldct.study.synthetic import roe_metz

VAN_DYKE = Path(__file__).parent / "data" / "VD.lrc"


def read_lrc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ratings (2 modalities, readers, cases) and truth of a LABMRMC .lrc file."""
    lines = path.read_text().splitlines()[1:]
    ratings, truth, i = {}, {}, 0
    while lines[i] != "#":
        reader = lines[i].strip()
        i += 3 if lines[i + 1].startswith('"') else 1  # the first reader names the modalities
        for positive in (False, True):
            while lines[i] != "*":
                first, second, case = lines[i].split("\t")[:3]
                ratings[(reader, int(case))] = (float(first), float(second))
                truth[int(case)] = positive
                i += 1
            i += 1
    readers, cases = sorted({r for r, _ in ratings}), sorted(truth)
    y = np.array([[[ratings[(r, c)][m] for c in cases] for r in readers] for m in (0, 1)])
    return y, np.array([truth[c] for c in cases])


@pytest.fixture(scope="module")
def van_dyke() -> tuple[np.ndarray, np.ndarray]:
    ratings, truth = read_lrc(VAN_DYKE)
    assert ratings.shape == (2, 5, 114) and truth.sum() == 45  # 45 dissections, 69 without
    return ratings, truth


def test_van_dyke_random_readers_random_cases_delong(van_dyke):
    """MRMCaov, "Covariance Estimation Methods", cov = DeLong, empirical AUC: 1 - 2 =
    -0.04380032, StdErr 0.0206825, df 15.06611, CI [-0.0878671960, 0.0002665519], F 4.484854,
    p 0.05123303; reader 0.0015364254, treatment:reader 0.0002045840, Error 0.0007921325,
    Cov1 0.0003420090, Cov2 0.0003395265, Cov3 0.0002358497. Our difference is 2 - 1."""
    result = obuchowski_rockette(*van_dyke)  # DeLong is the default for AUC
    assert result.covariance == "delong"
    c = result.components
    published = {"var_reader": 0.0015364254, "var_treatment_reader": 0.0002045840,
                 "var_error": 0.0007921325, "cov1": 0.0003420090, "cov2": 0.0003395265,
                 "cov3": 0.0002358497}
    for name, value in published.items():
        assert getattr(c, name) == pytest.approx(value, abs=5e-11), name
    assert c.ms_t == pytest.approx(0.004796171, abs=5e-10)
    assert c.ms_tr == pytest.approx(0.0005510306, abs=5e-11)
    test = result.random
    assert test.difference == pytest.approx(0.04380032, abs=5e-9)
    assert test.stderr == pytest.approx(0.0206825, abs=5e-8)
    assert test.df == pytest.approx(15.06611, abs=5e-6)
    assert (test.ci_low, test.ci_high) == (pytest.approx(-0.0002665519, abs=5e-11),
                                           pytest.approx(0.0878671960, abs=5e-11))
    assert test.statistic == pytest.approx(4.484854, abs=5e-7)
    assert test.p == pytest.approx(0.05123303, abs=5e-9)
    assert result.fom == (pytest.approx(0.8970370, abs=5e-8), pytest.approx(0.9408374, abs=5e-8))


def test_van_dyke_fixed_readers_jackknife(van_dyke):
    """MRMCaov, "Fixed Factors", fixed(reader), jackknife: Error 0.0008022883, Cov1 0.0003466137,
    Cov2 0.0003440748, Cov3 0.0002390284; X2 5.475953 on 1 df, p 0.01927984; StdErr 0.01871748,
    CI [-0.08048591, -0.00711473]; per-reader AUCs 0.9196457 0.8587762 0.9038647 0.9731079
    0.8297907 (treatment 1) and 0.9478261 0.9053140 0.9217391 0.9993559 0.9299517 (2)."""
    result = obuchowski_rockette(*van_dyke, covariance="jackknife")
    c = result.components
    for name, value in {"var_error": 0.0008022883, "cov1": 0.0003466137, "cov2": 0.0003440748,
                        "cov3": 0.0002390284}.items():
        assert getattr(c, name) == pytest.approx(value, abs=5e-11), name
    test = result.fixed_readers
    assert test.statistic == pytest.approx(5.475953, abs=5e-7)
    assert test.p == pytest.approx(0.01927984, abs=5e-9)
    assert test.stderr == pytest.approx(0.01871748, abs=5e-9)
    assert (test.ci_low, test.ci_high) == (pytest.approx(0.00711473, abs=5e-9),
                                           pytest.approx(0.08048591, abs=5e-9))
    np.testing.assert_allclose(result.fom_per_reader,
                               [[0.9196457, 0.8587762, 0.9038647, 0.9731079, 0.8297907],
                                [0.9478261, 0.9053140, 0.9217391, 0.9993559, 0.9299517]],
                               atol=5e-8)


def test_van_dyke_fixed_cases(van_dyke):
    """MRMCaov, fixed(case): F 8.704 on (1, 4) df, p 0.04195875, StdErr 0.01484629,
    CI [-0.08502022, -0.00258042]."""
    test = obuchowski_rockette(*van_dyke).fixed_cases
    assert (test.statistic, test.df) == (pytest.approx(8.704, abs=5e-4), 4)
    assert test.p == pytest.approx(0.04195875, abs=5e-9)
    assert test.stderr == pytest.approx(0.01484629, abs=5e-9)
    assert (test.ci_low, test.ci_high) == (pytest.approx(0.00258042, abs=5e-9),
                                           pytest.approx(0.08502022, abs=5e-9))


def test_van_dyke_jackknife_random_readers_matches_hillis():
    """Hillis, Berbaum & Metz (Acad Radiol 2008, "Recent developments in the DBM procedure"),
    Van Dyke with jackknife covariances: F = 4.46, ddf = 15.26, p = 0.0517."""
    test = obuchowski_rockette(*read_lrc(VAN_DYKE), covariance="jackknife").random
    assert round(test.statistic, 2) == 4.46
    assert round(test.df, 2) == 15.26
    assert round(test.p, 4) == 0.0517


def test_sample_size_matches_rjafroc_on_van_dyke():
    """RJafroc (dataset02 = Van Dyke, Wilcoxon AUC, OR with jackknife components, random
    readers and cases, effect = the observed difference): its tests ("Sample Size ROC":
    SsPowerGivenJK(J = 6, K = 111) power 0.5526116 within 5e-8; SsSampleSizeKGivenJ(J = 6)
    K = 251, power 0.801) and its sample-size vignette (J = 10: K = 163, power 0.8015625)."""
    result = obuchowski_rockette(*read_lrc(VAN_DYKE), covariance="jackknife")
    effect, c = result.random.difference, result.components
    assert power(effect, 6, 111, c, pilot_cases=114) == pytest.approx(0.5526116, abs=5e-8)
    assert cases_needed(effect, 6, c, pilot_cases=114) == 251
    assert round(power(effect, 6, 251, c, pilot_cases=114), 3) == 0.801
    assert cases_needed(effect, 10, c, pilot_cases=114) == 163
    assert power(effect, 10, 163, c, pilot_cases=114) == pytest.approx(0.8015625, abs=5e-8)


def test_mean_score_covariance_is_the_variance_of_a_mean():
    """For a mean score the jackknife gives the textbook variance of a mean, s^2 / K, and the
    covariance of two means of paired scores, cov(x, y) / K (here by hand: scores 1, 2, 4 and
    2, 2, 5 have means 7/3 and 3, s^2 = 7/3 and 3, cov = 5/2)."""
    ratings = np.array([[[1, 2, 4]], [[2, 2, 5]]], dtype=float)
    np.testing.assert_allclose(jackknife_covariance(ratings),
                               [[7 / 9, 5 / 6], [5 / 6, 1.0]], rtol=1e-12)


def test_planned_power_matches_simulated_studies():
    """The planner's power, from OR components measured on 5-reader 60-case studies, predicts
    how often the OR test rejects in simulated 8-reader 120-case studies of the same model;
    with no effect it rejects at most at about the nominal 5 %. The method is slightly
    conservative here (runs of 600 studies: observed 0.700 and 0.715 where it predicted 0.674
    and 0.662), so the observed rate must lie within 0.08 of the prediction (3.5 binomial SEs
    of 400 studies)."""
    rng = np.random.default_rng(8)
    studies = 400

    def run(readers, cases, separation):
        return [obuchowski_rockette(*roe_metz(readers, cases, separation, rng))
                for _ in range(studies)]

    pilots = run(5, 60, (1.4, 1.8))
    pilot = Components(*np.mean([list(vars(p.components).values()) for p in pilots], axis=0))
    effect = float(np.mean([p.random.difference for p in pilots]))  # the true AUC difference
    predicted = power(effect, 8, 120, pilot, pilot_cases=60)
    observed = np.mean([s.random.p < 0.05 for s in run(8, 120, (1.4, 1.8))])
    assert 0.4 < predicted < 0.95  # a design where power is informative
    assert abs(observed - predicted) < 0.08, (observed, predicted)
    null = np.mean([s.random.p < 0.05 for s in run(5, 60, (1.4, 1.4))])
    assert null < 0.05 + 3 * np.sqrt(0.05 * 0.95 / studies)
    rows = plan(effect, pilot, pilot_cases=60, readers=range(8, 9), target=predicted)
    assert rows[0]["cases"] == pytest.approx(120, abs=1)  # the same design back
