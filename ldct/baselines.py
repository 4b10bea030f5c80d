"""Classical denoising baselines kept beside the networks for comparison."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gaussian_denoise(hu: np.ndarray, sigma_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Slice-wise 2D Gaussian smoothing with ``sigma_mm`` (mean-preserving, so no HU shift)."""
    sigma = (sigma_mm / pixel_mm[1], sigma_mm / pixel_mm[0])  # (rows, columns)
    out = np.empty_like(hu, dtype=np.float32)
    for k in range(hu.shape[0]):
        out[k] = ndimage.gaussian_filter(hu[k].astype(np.float32), sigma, mode="nearest")
    return out
