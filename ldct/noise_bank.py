"""Fresh noise with a low-dose scan's own statistics, for self-supervised recorruption.

A self-supervised denoiser that may not see any normal-dose image can still use the scanner's
noise model: projecting a low-dose slice and drawing the noise its dose implies gives a noise
image with the same texture and spatially varying level as the noise the lower dose adds, but
independent of it. The scan's noise also holds what the normal dose itself carries (a real
scanner's kernel, often finer-grained than the simulation's): recorrupting with the added part
alone teaches the network to keep that part, so a second, independent term with the normal
dose's own texture and level is added, measured from the scan (see :func:`scan_noise_kernel`).
The two parts are kept apart, so that a sampler that gives a low dose's added noise another
kernel's texture can give the added part of its noise image the same one.
Drawn once per (case, dose, slice) and cached beside the prepared data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage, signal
from tqdm import tqdm

from ldct.data import PreparedData, dose_key
from ldct.metrics import power_spectrum_2d
from ldct.simulate import ParallelBeam, simulate_slice_noise

SEED = 1234  # differs from `ldct prepare`'s, so the drawn noise is not the scan's own
KIND = "added, normal-dose texture"  # what the cached images hold (older caches: other parts)
FLAT_HU = (20.0, 90.0)  # soft tissue whose 9x9 local mean lies here counts as flat


class NoiseImages(NamedTuple):
    """The two independent parts of the recorruption noise images, (slices, H, W) HU each."""

    added: np.ndarray  # what the lower dose adds: the simulation's kernel texture
    scan: np.ndarray  # the normal dose's own noise texture (zero where it cannot be measured)


def scan_noise_kernel(hu: np.ndarray, roi: int = 32) -> np.ndarray | None:
    """A (roi, roi) kernel: unit white noise convolved with it has the scan's own noise.

    The noise is measured from second differences across slices, k - (k-1 + k+1) / 2, scaled
    to one slice's variance: noise that is independent from slice to slice survives it, smooth
    anatomy does not. Its power spectrum over ROIs of flat soft tissue gives the kernel (zero
    phase). None when the scan has fewer than 3 slices or no ROI of flat tissue.
    """
    if hu.shape[0] < 3:
        return None
    hu = np.asarray(hu, np.float64)
    second = (hu[1:-1] - 0.5 * (hu[:-2] + hu[2:])) / np.sqrt(1.5)
    local = ndimage.uniform_filter(hu[1:-1], size=(1, 9, 9))
    flat = (local > FLAT_HU[0]) & (local < FLAT_HU[1])
    try:
        power = power_spectrum_2d(second, roi, flat)
    except ValueError:  # no ROI of flat tissue
        return None
    return np.fft.fftshift(np.fft.ifft2(np.sqrt(power)).real)


def textured_noise(kernel: np.ndarray, shape: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """A noise image of ``shape`` with the texture and level that ``kernel`` describes."""
    pad = kernel.shape[0] - 1
    white = rng.standard_normal((shape[0] + pad, shape[1] + pad))
    return signal.fftconvolve(white, kernel, mode="valid").astype(np.float32)


def _cache_path(data: PreparedData, case: str, dose: float) -> Path:
    return data.root / "noise" / f"{case}_{dose_key(dose)}.npz"


def noise_images(data: PreparedData, case: str, dose: float,
                 slices: Sequence[int]) -> NoiseImages:
    """The noise images of ``case`` at ``dose``; zero outside ``slices``."""
    path = _cache_path(data, case, dose)
    settings = json.dumps(data.manifest["settings"], sort_keys=True)
    low = data.volume(case, dose)
    if path.exists():
        cached = np.load(path)
        if (str(cached["settings"]) == settings and str(cached.get("kind", "")) == KIND
                and set(slices) <= set(cached["slices"].tolist())):
            return NoiseImages(cached["added"], cached["scan"])
    params = data.simulation(dose)
    beam = ParallelBeam(low.hu.shape[1], low.hu.shape[2], (low.spacing[0], low.spacing[1]),
                        params.views, params.kernel)
    kernel = scan_noise_kernel(data.volume(case).hu)
    noise = NoiseImages(np.zeros(low.hu.shape, np.float32), np.zeros(low.hu.shape, np.float32))
    for k in tqdm(sorted(set(slices)), desc=f"noise {case} dose {dose:g}", unit="slice",
                  leave=False):
        rng = np.random.default_rng([SEED, k])
        noise.added[k] = simulate_slice_noise(low.hu[k].astype(np.float32), beam, params, rng)
        if kernel is not None:
            noise.scan[k] = textured_noise(kernel, low.hu.shape[1:], rng)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, added=noise.added, scan=noise.scan, slices=np.asarray(sorted(set(slices))),
             settings=settings, kind=KIND)
    tmp.replace(path)
    return noise
