"""Task transfer function from the edge of a circular insert (Richard et al., Med Phys 2012;
Chen et al., Med Phys 2014): the edge spread function binned by distance from the insert's
centre at sub-pixel steps, differentiated to the line spread function, Fourier transformed and
normalised at zero frequency. Measured on the mean of repeated scans, so a nonlinear method's
resolution at that contrast and noise level is what it reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal.windows import tukey

BIN = 0.1  # ESF bin width, pixels


@dataclass
class TTF:
    frequency: np.ndarray  # cycles/mm
    ttf: np.ndarray

    def at_fraction(self, level: float) -> float:
        """The first frequency where the TTF falls to ``level`` (linear between samples)."""
        below = np.flatnonzero(self.ttf < level)
        if not len(below):
            return float("nan")
        k = below[0]
        if k == 0:
            return 0.0
        f0, f1, t0, t1 = self.frequency[k - 1], self.frequency[k], self.ttf[k - 1], self.ttf[k]
        return float(f0 + (t0 - level) * (f1 - f0) / (t0 - t1))


def disc_ttf(image: np.ndarray, centre: tuple[float, float], radius_px: float,
             pixel_mm: float, reach: float = 0.8) -> TTF:
    """TTF of the disc of ``radius_px`` centred at ``centre`` (row, col; pixels) in ``image``,
    from the pixels within ``reach`` x radius of its edge."""
    rows, cols = np.indices(image.shape)
    r = np.hypot(rows - centre[0], cols - centre[1]).ravel()
    lo, hi = radius_px * (1 - reach), radius_px * (1 + reach)
    keep = (r >= lo) & (r < hi)
    index = ((r[keep] - lo) / BIN).astype(int)
    bins = int(np.ceil((hi - lo) / BIN))
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=image.ravel()[keep], minlength=bins)
    centres = lo + (np.arange(bins) + 0.5) * BIN
    filled = counts > 0
    esf = np.interp(centres, centres[filled], sums[filled] / counts[filled])
    lsf = np.gradient(esf) * tukey(bins, 0.5)  # taper the noisy tails, keep the middle
    spectrum = np.abs(np.fft.rfft(lsf))
    return TTF(np.fft.rfftfreq(bins, BIN * pixel_mm), spectrum / spectrum[0])
