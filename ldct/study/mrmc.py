"""Multi-reader multi-case (MRMC) analysis: Obuchowski-Rockette (OR) with Hillis's degrees of
freedom, and its sample-size planning (Hillis, Obuchowski & Berbaum).

Every reader reads every case under every modality (a factorial design). The figure of merit
(FOM) per modality and reader is the empirical (trapezoidal, Wilcoxon) AUC of the ratings
against the truth for a detection task, or the mean score for a Likert criterion. The OR model

    FOM_ij = mu + tau_i + R_j + (tau R)_ij + e_ij

takes readers (R) and cases (inside e) as random. The error covariances Var, Cov1 (same
reader, other modality), Cov2 (other reader, same modality), Cov3 (both other) come from the
FOMs' covariance over cases: DeLong's structural components for AUC (DeLong et al. 1988),
the jackknife over cases otherwise (for a mean the two agree). Tests, as in Hillis (2007) and
MRMCaov / OR-DBM MRMC:

- random readers, random cases: F = MS(T) / (MS(TR) + r max(Cov2 - Cov3, 0)), denominator df
  ddf = (MS(TR) + r max(Cov2 - Cov3, 0))^2 / (MS(TR)^2 / ((t-1)(r-1))) (Hillis 2007);
- fixed readers, random cases: chi-square (t-1) MS(T) / (Var - Cov1 + (r-1) max(Cov2-Cov3, 0));
- random readers, fixed cases: F = MS(T) / MS(TR) on (t-1, (t-1)(r-1)) df.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ldct.metrics import auc, roc_kernel

COVARIANCES = ("delong", "jackknife")


@dataclass(frozen=True)
class Components:
    """OR variance components: the FOM's error variance and covariances (over cases), the
    reader and treatment-by-reader variances, and the mean squares they come from."""

    var_error: float
    cov1: float
    cov2: float
    cov3: float
    var_reader: float
    var_treatment_reader: float
    ms_t: float
    ms_r: float
    ms_tr: float


@dataclass(frozen=True)
class Test:
    """One analysis of the difference ``fom[1] - fom[0]`` (readers and/or cases random)."""

    analysis: str  # "random readers, random cases" etc.
    difference: float
    stderr: float
    df: float  # inf: a normal (z) reference, as for fixed readers
    ci_low: float
    ci_high: float
    statistic: float  # F (or chi-square for fixed readers) of the global test
    p: float


@dataclass(frozen=True)
class Result:
    """OR analysis of two modalities: their reader-averaged FOMs and the three analyses."""

    fom: tuple[float, float]
    fom_per_reader: np.ndarray  # (2, readers)
    components: Components
    covariance: str
    random: Test  # random readers, random cases (the primary analysis)
    fixed_readers: Test
    fixed_cases: Test
    readers: int
    cases: int


# -- figures of merit and their covariance over cases ---------------------------------------
def _kernel(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel psi(positive, negative) of the ratings split by ``truth``."""
    return roc_kernel(ratings[..., truth], ratings[..., ~truth])


def _check_truth(truth: np.ndarray) -> np.ndarray:
    truth = np.asarray(truth).astype(bool)
    if truth.all() or not truth.any():
        raise ValueError("AUC needs cases with and without a lesion; the truth has only "
                         f"{'positive' if truth.all() else 'negative'} cases")
    return truth


def fom(ratings: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """FOM of every (modality, reader): empirical AUC against ``truth``, else the mean score.
    ``ratings``: (modalities, readers, cases)."""
    ratings = np.asarray(ratings, dtype=float)
    if truth is None:
        return ratings.mean(axis=-1)
    truth = _check_truth(truth)
    return auc(ratings[..., truth], ratings[..., ~truth])


def delong_covariance(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Covariance of the AUCs of all (modality, reader) pairs, flattened modality-major, from
    DeLong's structural components: S10 / m + S01 / n."""
    truth = _check_truth(truth)
    psi = _kernel(np.asarray(ratings, dtype=float), truth).reshape(-1, truth.sum(),
                                                                   (~truth).sum())
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # per positive, per negative case
    return np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


def jackknife_covariance(ratings: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Covariance of the FOMs of all (modality, reader) pairs, flattened modality-major, by
    the jackknife over cases: (K-1)/K sum_k (FOM_-k - mean)(FOM_-k - mean)^T."""
    ratings = np.asarray(ratings, dtype=float)
    flat = ratings.reshape(-1, ratings.shape[-1])
    if truth is None:
        k = flat.shape[1]
        leave_out = (flat.sum(axis=1, keepdims=True) - flat) / (k - 1)
    else:
        truth = _check_truth(truth)
        psi = _kernel(flat, truth)
        m, n = psi.shape[1], psi.shape[2]
        total = psi.sum(axis=(1, 2))[:, None]
        without_positive = (total - psi.sum(axis=2)) / ((m - 1) * n)
        without_negative = (total - psi.sum(axis=1)) / (m * (n - 1))
        leave_out = np.concatenate([without_positive, without_negative], axis=1)
    k = leave_out.shape[1]
    centred = leave_out - leave_out.mean(axis=1, keepdims=True)
    return (k - 1) / k * centred @ centred.T


# -- Obuchowski-Rockette --------------------------------------------------------------------
def or_components(foms: np.ndarray, covariance: np.ndarray) -> Components:
    """OR components from the FOMs (t, r) and their covariance matrix (t*r, t*r)."""
    t, r = foms.shape
    modality = np.repeat(np.arange(t), r)
    reader = np.tile(np.arange(r), t)
    same_t = modality[:, None] == modality[None, :]
    same_r = reader[:, None] == reader[None, :]
    var = float(np.mean(np.diag(covariance)))
    cov1 = float(covariance[~same_t & same_r].mean()) if t > 1 else 0.0
    cov2 = float(covariance[same_t & ~same_r].mean()) if r > 1 else 0.0
    cov3 = float(covariance[~same_t & ~same_r].mean()) if t > 1 and r > 1 else 0.0
    grand = foms.mean()
    ms_t = r * float(((foms.mean(axis=1) - grand) ** 2).sum()) / max(t - 1, 1)
    ms_r = t * float(((foms.mean(axis=0) - grand) ** 2).sum()) / max(r - 1, 1)
    interaction = foms - foms.mean(axis=1, keepdims=True) - foms.mean(axis=0) + grand
    ms_tr = float((interaction ** 2).sum()) / max((t - 1) * (r - 1), 1)
    return Components(var, cov1, cov2, cov3,
                      var_reader=(ms_r - ms_tr) / t - cov1 + cov3,
                      var_treatment_reader=ms_tr - var + cov1 + cov2 - cov3,
                      ms_t=ms_t, ms_r=ms_r, ms_tr=ms_tr)


def _test(analysis: str, difference: float, stderr: float, df: float, statistic: float,
          alpha: float) -> Test:
    reference = stats.norm() if np.isinf(df) else stats.t(df)
    half = float(reference.ppf(1 - alpha / 2)) * stderr
    if stderr > 0:
        p = float(2 * reference.sf(abs(difference) / stderr))
    else:  # no variation at all: any difference is certain
        p = 1.0 if difference == 0 else 0.0
    return Test(analysis, difference, stderr, df, difference - half, difference + half,
                statistic, p)


def obuchowski_rockette(ratings: np.ndarray, truth: np.ndarray | None = None,
                        covariance: str | None = None, alpha: float = 0.05) -> Result:
    """OR analysis of ``ratings`` (2 modalities, readers, cases): modality 1 against modality 0
    (difference = FOM[1] - FOM[0]). ``covariance``: 'delong' (AUC only; the default for AUC) or
    'jackknife' (the default for mean scores)."""
    ratings = np.asarray(ratings, dtype=float)
    if ratings.ndim != 3 or ratings.shape[0] != 2:
        raise ValueError("ratings must be (2 modalities, readers, cases)")
    t, r, k = ratings.shape
    if r < 2 or k < 2:
        raise ValueError(f"an MRMC analysis needs at least 2 readers and 2 cases read by all "
                         f"of them under both modalities; got {r} readers, {k} cases")
    covariance = covariance or ("delong" if truth is not None else "jackknife")
    if covariance not in COVARIANCES or (covariance == "delong" and truth is None):
        raise ValueError(f"covariance must be one of {COVARIANCES} (delong for AUC only)")
    foms = fom(ratings, truth)
    cov = (delong_covariance(ratings, truth) if covariance == "delong"
           else jackknife_covariance(ratings, truth))
    c = or_components(foms, cov)
    difference = float(foms[1].mean() - foms[0].mean())
    spread = max(c.cov2 - c.cov3, 0.0)

    denominator = c.ms_tr + r * spread
    ddf = denominator ** 2 / (c.ms_tr ** 2 / ((t - 1) * (r - 1))) if c.ms_tr > 0 else np.inf
    random = _test("random readers, random cases", difference, np.sqrt(2 / r * denominator),
                   ddf, c.ms_t / denominator if denominator > 0 else np.inf, alpha)
    fixed_denominator = c.var_error - c.cov1 + (r - 1) * spread
    fixed_readers = _test("fixed readers, random cases", difference,
                          np.sqrt(2 / r * fixed_denominator), np.inf,
                          (t - 1) * c.ms_t / fixed_denominator if fixed_denominator > 0
                          else np.inf, alpha)
    fixed_cases = _test("random readers, fixed cases", difference, np.sqrt(2 / r * c.ms_tr),
                        (t - 1) * (r - 1), c.ms_t / c.ms_tr if c.ms_tr > 0 else np.inf, alpha)
    return Result((float(foms[0].mean()), float(foms[1].mean())), foms, c, covariance,
                  random, fixed_readers, fixed_cases, r, k)


# -- sample size (Hillis, Obuchowski & Berbaum 2011) ----------------------------------------
def power(effect: float, readers: int, cases: int, components: Components,
          pilot_cases: int, alpha: float = 0.05) -> float:
    """Power of the random-reader random-case OR test of two modalities for a true FOM
    difference ``effect`` with ``readers`` x ``cases``, from pilot OR components estimated
    on ``pilot_cases`` cases: the error (co)variances scale as pilot_cases / cases, reader
    variances stay; noncentral F with Hillis's ddf (Hillis, Obuchowski & Berbaum, Acad Radiol
    2011, eqs. for OR)."""
    c = components
    scale = pilot_cases / cases
    var_tr = max(c.var_treatment_reader, 0.0)
    spread = max(c.cov2 - c.cov3, 0.0) * scale
    own = (c.var_error - c.cov1) * scale
    denominator = var_tr + own + (readers - 1) * spread
    ms_tr = var_tr + own - spread  # expected MS(TR) for two modalities
    if denominator <= 0:
        return 1.0
    ddf = denominator ** 2 / (ms_tr ** 2 / (readers - 1)) if ms_tr > 0 else np.inf
    noncentrality = readers * effect ** 2 / (2 * denominator)
    critical = stats.f.ppf(1 - alpha, 1, ddf)
    return float(stats.ncf.sf(critical, 1, ddf, noncentrality))


def cases_needed(effect: float, readers: int, components: Components, pilot_cases: int,
                 target: float = 0.8, alpha: float = 0.05, most: int = 100_000) -> int | None:
    """The fewest cases giving ``target`` power with ``readers`` readers (None: not even
    ``most`` cases do, as when the reader variance alone leaves too little power)."""
    def enough(cases: int) -> bool:
        return power(effect, readers, cases, components, pilot_cases, alpha) >= target

    if not enough(most):
        return None
    low, high = 1, most  # enough(high); power grows with cases
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def plan(effect: float, components: Components, pilot_cases: int,
         readers: range = range(3, 16), target: float = 0.8, alpha: float = 0.05
         ) -> list[dict[str, Any]]:
    """Readers x cases giving ``target`` power: one row per reader count."""
    rows = []
    for r in readers:
        cases = cases_needed(effect, r, components, pilot_cases, target, alpha)
        rows.append({"readers": r, "cases": cases,
                     "power": None if cases is None else power(effect, r, cases, components,
                                                                pilot_cases, alpha)})
    return rows
