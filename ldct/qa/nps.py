"""Noise texture: the 2D noise power spectrum of a stack of noise-only patches, its radial
profile, mean and peak frequency (ICRU 87 convention, via ``ldct.metrics``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldct.metrics import power_spectrum_2d, radial_average


@dataclass
class Texture:
    """Noise SD (HU), 2D NPS (HU^2 mm^2, numpy's FFT order) and its radial profile."""

    sd: float
    power2d: np.ndarray
    frequency: np.ndarray  # cycles/mm, ring centres
    power: np.ndarray
    mean_frequency: float  # cycles/mm: the NPS-weighted mean radial frequency
    peak_frequency: float  # cycles/mm: the radial profile's maximum, past the DC ring


def residuals(images: np.ndarray) -> np.ndarray:
    """Noise of repeated images of one object: each minus the ensemble mean, scaled by
    sqrt(n / (n - 1)) so that its variance is the images' own (the object and any
    deterministic change a denoiser makes to it cancel)."""
    n = len(images)
    return (images - images.mean(0)) * np.sqrt(n / (n - 1))


def texture(noise: np.ndarray, pixel_mm: float, roi: int) -> Texture:
    """The NPS of noise-only patches (n, rows, cols) from ``roi``-pixel squares half
    overlapping, with its mean and peak frequency."""
    power2d = power_spectrum_2d(noise, roi) * pixel_mm ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(roi, pixel_mm), np.fft.fftfreq(roi, pixel_mm),
                              indexing="ij"))
    frequency, power = radial_average(power2d, (pixel_mm, pixel_mm), roi // 2)
    variance = power2d.sum() / (roi * pixel_mm) ** 2
    return Texture(sd=float(np.sqrt(variance)), power2d=power2d, frequency=frequency,
                   power=power, mean_frequency=float((f * power2d).sum() / power2d.sum()),
                   peak_frequency=float(frequency[1:][np.argmax(power[1:])]))
