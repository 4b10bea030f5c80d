"""The channelized Hotelling observer (CHO) with Laguerre-Gauss channels, as the FDA LCD-CT
toolbox runs it (DIDSR/LCD_CT, ``lg_cho_2d.m``): signal known exactly and at a known location,
ROIs centred on it, 5 channels of width 2/3 of the signal's radius, the Hotelling template
trained on one half of the images and scored on the other; d' from the test scores and AUC
(Mann-Whitney), with bootstrap confidence intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import eval_laguerre
from scipy.stats import norm

from ldct.metrics import auc

CHANNELS = 5


def laguerre_gauss(size: int, width: float, count: int = CHANNELS) -> np.ndarray:
    """``count`` Laguerre-Gauss channels on a ``size`` x ``size`` ROI centred on its middle
    pixel, width ``width`` pixels: u_n(r) = sqrt(2)/a exp(-pi r^2/a^2) L_n(2 pi r^2/a^2),
    each of unit norm on the continuous plane. Shape (count, size * size)."""
    c = (size - 1) / 2
    r2 = ((np.arange(size) - c)[:, None] ** 2 + (np.arange(size) - c)[None, :] ** 2).ravel()
    g = 2 * np.pi * r2 / width ** 2
    return np.stack([np.sqrt(2) / width * np.exp(-g / 2) * eval_laguerre(n, g)
                     for n in range(count)])


def channelize(rois: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Channel outputs (n, count) of ``rois`` (n, size, size)."""
    return rois.reshape(len(rois), -1).astype(np.float64) @ channels.T


def template(present: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """The Hotelling template in channel space: the mean signal through the inverse of the
    classes' average covariance."""
    signal = present.mean(0) - absent.mean(0)
    covariance = (np.cov(present, rowvar=False) + np.cov(absent, rowvar=False)) / 2
    return np.linalg.pinv(np.atleast_2d(covariance)) @ signal


def dprime(present: np.ndarray, absent: np.ndarray) -> float:
    """Detectability index of two sets of scores: mean difference over the pooled SD."""
    pooled = np.sqrt((present.var(ddof=1) + absent.var(ddof=1)) / 2)
    return float((present.mean() - absent.mean()) / pooled)


def auc_from_dprime(d: float) -> float:
    """The AUC of two equal-variance normal score distributions d' apart: Phi(d'/sqrt 2)."""
    return float(norm.cdf(d / np.sqrt(2)))


@dataclass
class Split:
    """Channel outputs of one task, split in halves: train and test, present and absent."""

    train_present: np.ndarray
    train_absent: np.ndarray
    test_present: np.ndarray
    test_absent: np.ndarray

    @classmethod
    def halves(cls, present: np.ndarray, absent: np.ndarray) -> Split:
        """First half of each class trains, second half tests."""
        p, a = len(present) // 2, len(absent) // 2
        return cls(present[:p], absent[:a], present[p:], absent[a:])

    def resampled(self, picks: tuple[np.ndarray, ...]) -> Split:
        """The split with each part drawn at the given indices (a bootstrap replicate)."""
        parts = (self.train_present, self.train_absent, self.test_present, self.test_absent)
        return Split(*(part[i] for part, i in zip(parts, picks)))

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Test scores (present, absent) of the template trained on the training half."""
        w = template(self.train_present, self.train_absent)
        return self.test_present @ w, self.test_absent @ w

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Bootstrap indices for every part (the same draw serves every model, so that
        differences between models are paired)."""
        sizes = (len(self.train_present), len(self.train_absent), len(self.test_present),
                 len(self.test_absent))
        return tuple(rng.integers(0, n, n) for n in sizes)


@dataclass
class Detectability:
    """d' and AUC of one task with 95 % bootstrap intervals, and the bootstrap d' samples."""

    dprime: float
    dprime_low: float
    dprime_high: float
    auc: float
    auc_low: float
    auc_high: float
    samples: np.ndarray


def detectability(split: Split, draws: list[tuple[np.ndarray, ...]]) -> Detectability:
    """The CHO's d' and AUC on ``split``, with intervals over the bootstrap ``draws``."""
    t1, t0 = split.scores()
    boot = [split.resampled(d).scores() for d in draws]
    d_boot = np.array([dprime(*s) for s in boot])
    a_boot = np.array([auc(*s) for s in boot])
    return Detectability(dprime(t1, t0), *np.percentile(d_boot, [2.5, 97.5]), auc(t1, t0),
                         *np.percentile(a_boot, [2.5, 97.5]), d_boot)
