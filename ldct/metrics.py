"""Image-quality metrics for CT denoising (DESIGN.md §5).

PSNR/SSIM on the liver window, RMSE in HU, CT-number bias and residual noise in a mask, the
radially averaged noise power spectrum (NPS) and its peak frequency, lesion CNR. All inputs are
HU arrays shaped (slices, rows, columns) or (rows, columns); masks are boolean arrays of the
same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

LIVER_WINDOW = (-160.0, 240.0)  # W400/L40


def to_window(hu: np.ndarray, window: tuple[float, float] = LIVER_WINDOW) -> np.ndarray:
    """HU clipped to ``window`` and scaled to [0, 1]."""
    lo, hi = window
    return np.clip((np.asarray(hu, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def psnr(test: np.ndarray, reference: np.ndarray,
         window: tuple[float, float] = LIVER_WINDOW) -> float:
    """PSNR in dB of the windowed images (peak 1)."""
    mse = float(np.mean((to_window(test, window) - to_window(reference, window)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def ssim(test: np.ndarray, reference: np.ndarray,
         window: tuple[float, float] = LIVER_WINDOW) -> float:
    """Mean SSIM of the windowed images, computed per axial slice (2D, 7x7, data range 1)."""
    t, r = to_window(test, window), to_window(reference, window)
    if t.ndim == 2:
        t, r = t[None], r[None]
    return float(np.mean([structural_similarity(a, b, data_range=1.0) for a, b in zip(t, r)]))


def _masked(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return np.asarray(values, dtype=np.float64).ravel()
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {values.shape}")
    if not mask.any():
        raise ValueError("the mask is empty")
    return np.asarray(values, dtype=np.float64)[mask]


def rmse_hu(test: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square HU error, inside ``mask`` (e.g. the body) when given."""
    return float(np.sqrt(np.mean(_masked(np.asarray(test, np.float64) - reference, mask) ** 2)))


def hu_bias(test: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Mean HU difference test - reference inside ``mask``: CT-number fidelity (target |.| <= 2)."""
    return float(np.mean(_masked(np.asarray(test, np.float64) - reference, mask)))


def noise_sd(image: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Noise SD inside ``mask``: of the image itself, or of image - reference when given.

    With a noiseless or normal-dose reference the difference removes the anatomy, so the SD
    measures what noise (and error) is left; without one the mask must be homogeneous.
    """
    values = image if reference is None else np.asarray(image, np.float64) - reference
    return float(np.std(_masked(values, mask)))


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Voxels inside the patient: above ``threshold`` HU, holes filled per slice."""
    from scipy import ndimage

    inside = np.asarray(hu) > threshold
    if inside.ndim == 2:
        return ndimage.binary_fill_holes(inside)
    return np.stack([ndimage.binary_fill_holes(s) for s in inside])


def cnr(image: np.ndarray, lesion: np.ndarray, background: np.ndarray) -> float:
    """Contrast-to-noise ratio |mean(lesion) - mean(background)| / SD(background).

    A noiseless background (a phantom without noise) gives infinity when there is contrast,
    the limit as the noise falls; with no contrast either it is 0/0 and refused."""
    bg = _masked(image, background)
    contrast, noise = abs(_masked(image, lesion).mean() - bg.mean()), bg.std()
    if noise == 0:
        if contrast == 0:
            raise ValueError("CNR is undefined: the lesion and a noiseless background have the "
                             "same mean; measure it on an image with noise or with contrast")
        return float("inf")
    return float(contrast / noise)


def roc_kernel(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel of every (positive, negative) score pair along the last axes: 1
    when the positive case scores higher, 1/2 for a tie, 0; shape (..., m, n). Its mean is
    the empirical AUC, its row and column means DeLong's structural components."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    p, n = positive[..., :, None], negative[..., None, :]
    return (p > n) + 0.5 * (p == n)


def auc(positive: np.ndarray, negative: np.ndarray) -> float | np.ndarray:
    """Empirical (Wilcoxon-Mann-Whitney) area under the ROC curve of the scores along the last
    axis, ties counting one half: a float for 1D scores, else one AUC per leading index."""
    if np.shape(positive)[-1] == 0 or np.shape(negative)[-1] == 0:
        raise ValueError("an AUC needs at least one positive and one negative case")
    area = roc_kernel(positive, negative).mean(axis=(-2, -1))
    return float(area) if np.ndim(area) == 0 else area


@dataclass
class NPS:
    """Radially averaged noise power spectrum: frequencies in cycles/mm, power in HU^2 mm^2."""

    frequency: np.ndarray
    power: np.ndarray
    variance: float  # the integral of the 2D NPS, equal to the noise variance (HU^2)

    @property
    def mean_frequency(self) -> float:
        """AAPM TG-233's average frequency f_av = sum f NPS(f) / sum NPS(f) over the rings of
        the radial NPS: it falls when a denoiser leaves coarser, "plastic" noise."""
        return float((self.frequency * self.power).sum() / self.power.sum())

    @property
    def peak_frequency(self) -> float:
        """Frequency of the NPS maximum, ignoring the zero-frequency bin."""
        return float(self.frequency[1:][np.argmax(self.power[1:])])


def noise_rois(noise: np.ndarray, roi: int = 64, mask: np.ndarray | None = None,
               stride: int | None = None) -> np.ndarray:
    """Square ``roi`` x ``roi`` patches of noise images lying fully inside ``mask``."""
    noise = np.asarray(noise, dtype=np.float64)
    if noise.ndim == 2:
        noise = noise[None]
        mask = None if mask is None else mask[None]
    stride = stride or roi
    patches = []
    for k in range(noise.shape[0]):
        for i in range(0, noise.shape[1] - roi + 1, stride):
            for j in range(0, noise.shape[2] - roi + 1, stride):
                if mask is None or mask[k, i:i + roi, j:j + roi].all():
                    patches.append(noise[k, i:i + roi, j:j + roi])
    if not patches:
        raise ValueError(f"no {roi}x{roi} region lies fully inside the mask; use a smaller roi")
    return np.stack(patches)


def power_spectrum_2d(noise: np.ndarray, roi: int = 64, mask: np.ndarray | None = None,
                      taper: bool = False) -> np.ndarray:
    """|DFT(roi - mean)|^2 / (Nx Ny) averaged over ROIs half overlapping inside ``mask``, in
    pixel units (its mean over the frequency plane is the noise variance). ``taper`` weights
    each ROI by a Hann window (power kept): less leakage from low to high frequencies, for
    spectra that fall steeply, at the cost of resolution."""
    patches = noise_rois(noise, roi, mask, stride=max(1, roi // 2))  # 50 % overlap
    patches = patches - patches.mean(axis=(1, 2), keepdims=True)
    if taper:
        window = np.outer(np.hanning(roi), np.hanning(roi))
        patches = patches * (window / np.sqrt((window ** 2).mean()))
    return np.mean(np.abs(np.fft.fft2(patches)) ** 2, axis=0) / (roi * roi)


def nps(noise: np.ndarray, pixel_mm: tuple[float, float], roi: int = 64,
        mask: np.ndarray | None = None, bins: int | None = None) -> NPS:
    """Radially averaged NPS of noise-only images (e.g. low dose - normal dose).

    NPS(f) = dx dy / (Nx Ny) |DFT(roi - mean)|^2 averaged over ROIs (ICRU 87 convention), so
    that its integral over the frequency plane is the noise variance.
    """
    dx, dy = pixel_mm
    power2d = power_spectrum_2d(noise, roi, mask) * (dx * dy)
    frequency, power = radial_average(power2d, pixel_mm, bins or roi // 2)
    variance = float(power2d.sum() / (roi * roi * dx * dy))
    return NPS(frequency=frequency, power=power, variance=variance)


def radial_average(power2d: np.ndarray, pixel_mm: tuple[float, float],
                   bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, mean power per ring) of a square 2D spectrum in numpy's FFT order, rings
    1 / (N max(dx, dy)) wide (cycles per pixel with 1 mm pixels); empty rings hold 0."""
    roi = power2d.shape[0]
    dx, dy = pixel_mm
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(roi, d=dy), np.fft.fftfreq(roi, d=dx),
                                   indexing="ij"))
    df = 1.0 / (roi * max(dx, dy))
    index = np.minimum(np.rint(radius / df).astype(int), bins)
    counts = np.bincount(index.ravel(), minlength=bins + 1)[:bins]
    sums = np.bincount(index.ravel(), weights=power2d.ravel(), minlength=bins + 1)[:bins]
    return np.arange(bins) * df, np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
