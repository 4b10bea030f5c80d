"""Classical denoising baselines kept beside the networks for comparison."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means

from ldct.registry import register

# Tuned for PSNR on the training volume ircadb01 (slices 60-61, simulated dose 0.25), never on
# the held-out ircadb17: Gaussian sigma 0.75 mm of {0.75, 1.0, 1.25}; NLM h = 1.6 x the
# estimated noise SD of {0.8, 1.2, 1.6, 2.0}.
GAUSS_SIGMA_MM = 0.75
NLM_PATCH, NLM_DISTANCE, NLM_H_FACTOR = 5, 6, 1.6


def gaussian_denoise(hu: np.ndarray, sigma_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Slice-wise 2D Gaussian smoothing with ``sigma_mm`` (mean-preserving, so no HU shift)."""
    sigma = (sigma_mm / pixel_mm[1], sigma_mm / pixel_mm[0])  # (rows, columns)
    out = np.empty_like(hu, dtype=np.float32)
    for k in range(hu.shape[0]):
        out[k] = ndimage.gaussian_filter(hu[k].astype(np.float32), sigma, mode="nearest")
    return out


def _noise_sd(slice_hu: np.ndarray) -> float:
    """Robust noise SD from the median absolute Laplacian-like residual inside the body."""
    residual = slice_hu - ndimage.uniform_filter(slice_hu, 3)
    body = slice_hu > -500
    values = residual[body] if body.any() else residual.ravel()
    return float(1.4826 * np.median(np.abs(values - np.median(values))) * 3 / np.sqrt(8))


@register("ldct-gauss", f"Gaussian filter (sigma {GAUSS_SIGMA_MM:g} mm)", "baseline",
          "none", kind="baseline")
def gaussian_baseline(hu: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    return gaussian_denoise(hu, GAUSS_SIGMA_MM, pixel_mm)


@register("ldct-nlm", "Non-local means (scikit-image)", "baseline", "none", kind="baseline")
def nlm_baseline(hu: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Slice-wise non-local means with its filter strength set from each slice's noise SD."""
    out = np.empty_like(hu, dtype=np.float32)
    for k in range(hu.shape[0]):
        sl = hu[k].astype(np.float32)
        sigma = _noise_sd(sl)
        out[k] = denoise_nl_means(sl, patch_size=NLM_PATCH, patch_distance=NLM_DISTANCE,
                                  h=NLM_H_FACTOR * sigma, sigma=sigma, fast_mode=True)
    return out
