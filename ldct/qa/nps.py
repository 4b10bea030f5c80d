"""Noise-only images from repeated scans of one phantom, for the NPS (``ldct.metrics.nps``)."""

from __future__ import annotations

import numpy as np


def residuals(images: np.ndarray) -> np.ndarray:
    """Noise of repeated images of one object: each minus the ensemble mean, scaled by
    sqrt(n / (n - 1)) so that its variance is the images' own (the object and any
    deterministic change a denoiser makes to it cancel)."""
    n = len(images)
    return (images - images.mean(0)) * np.sqrt(n / (n - 1))
