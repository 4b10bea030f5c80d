"""Projection-domain low-dose simulation (Yu et al., J Comput Assist Tomogr 2012).

Per axial slice: forward-project the normal-dose attenuation (parallel beam), add Gaussian
noise to the post-log sinogram with the variance a scan at dose fraction ``a`` would have in
excess of the full-dose scan, reconstruct that noise with filtered back-projection and add it
to the image. The noise is therefore correlated like real CT noise (mid-frequency NPS peak) and
follows photon statistics (higher where rays cross more tissue).

``i0`` counts photons per detector element (one element per pixel width) per view at full
dose, for ``views`` views over 180 degrees: the noise an ``i0`` gives depends on the views, so
the two travel together (see DESIGN.md §4). The noise the defaults give on the real data
is measured in ``benchmarks/io_simulate.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import finufft
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ldct.io import CTVolume

KERNELS = ("ram-lak", "shepp-logan", "hann", "sharp-ee")
# The edge-enhancing sharp body kernel ("sharp-ee", as clinical sharp kernels of the D45f/B60f
# class): a light cosine apodization times a Gaussian boost at mid frequencies, so the MTF
# relative to the ramp exceeds 1 there (about 1.35 at 0.38 cycles/sample) and the NPS (f W^2)
# peaks at about 0.39 cycles/sample: 0.5-0.6 cycles/mm at 0.7-0.75 mm pixels. Parameters:
# cosine window c, boost gain, boost centre and width (cycles/sample).
EDGE_ENHANCING = (0.9, 0.6, 0.40, 0.08)


@dataclass(frozen=True)
class LowDoseParams:
    """Scanner and dose settings of the simulation (defaults: quarter dose, soft-tissue kernel)."""

    dose: float = 0.25
    i0: float = 1.5e5
    electronic_noise: float = 10.0  # variance, in photons^2, per element and view
    views: int = 720
    kernel: str = "hann"
    mu_water: float = 0.0192  # 1/mm at ~70 keV effective energy (120 kVp)

    def __post_init__(self) -> None:
        if not 0.0 < self.dose <= 1.0:
            raise ValueError(f"dose must be a fraction in (0, 1], got {self.dose}")
        if self.i0 <= 0 or self.views < 16 or self.electronic_noise < 0:
            raise ValueError("i0 must be > 0, views >= 16 and electronic_noise >= 0")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")


def added_variance(p: np.ndarray, params: LowDoseParams) -> np.ndarray:
    """Post-log variance to add to line integrals ``p`` for dose fraction ``params.dose``."""
    a = params.dose
    t = np.exp(p) / params.i0
    return ((1 - a) / a) * t * (1 + ((1 + a) / a) * params.electronic_noise * t)


def cosine_window(f: np.ndarray, c: float) -> np.ndarray:
    """Generalized cosine apodization c + (1 - c) cos(2 pi f), f in cycles per sample:
    c = 0.5 is the Hann window, c = 1 none (the ram-lak kernel's plain ramp)."""
    return c + (1 - c) * np.cos(2 * math.pi * f)


def edge_enhancing_window(f: np.ndarray) -> np.ndarray:
    """The "sharp-ee" kernel's window over the ramp, f in cycles per sample (`EDGE_ENHANCING`)."""
    c, gain, centre, width = EDGE_ENHANCING
    return cosine_window(f, c) * (1.0 + gain * np.exp(-0.5 * ((f - centre) / width) ** 2))


def kernel_window(kernel: str, f: np.ndarray) -> np.ndarray:
    """A reconstruction kernel's apodization of the ramp filter, f in cycles per sample."""
    if kernel == "ram-lak":
        return np.ones_like(f)
    if kernel == "shepp-logan":
        return np.sinc(f)
    if kernel == "hann":
        return cosine_window(f, 0.5)
    if kernel == "sharp-ee":
        return edge_enhancing_window(f)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


class ParallelBeam:
    """Parallel-beam projector and FBP for one slice geometry.

    The back-projection is done in the Fourier domain (Fourier slice theorem) with a
    non-uniform FFT: exactly the discrete FBP with the band-limited ramp kernel and
    trigonometric interpolation along the detector, in O(N^2 log N) rather than O(views N^2).
    """

    def __init__(self, rows: int, cols: int, pixel_mm: tuple[float, float], views: int,
                 kernel: str = "hann") -> None:
        self.rows, self.cols = rows, cols
        self.dx, self.dy = float(pixel_mm[0]), float(pixel_mm[1])
        self.ds = min(self.dx, self.dy)
        half_diag = 0.5 * math.hypot(cols * self.dx, rows * self.dy)
        self.bins = 2 * math.ceil(half_diag / self.ds) + 3  # odd: bin (bins-1)/2 is the centre
        self.views = views
        self.theta = np.arange(views) * (math.pi / views)
        self.size = 1 << (2 * self.bins - 1).bit_length()  # FFT length, no wrap-around
        self.filter = self._frequency_filter(kernel)

    def _frequency_filter(self, kernel: str) -> np.ndarray:
        """Ramp filter from the band-limited spatial kernel (no DC error), with apodization.

        Returned for the FFT frequencies in numpy's order, times the bin width.
        """
        n = np.fft.fftfreq(self.size, d=1.0 / self.size)  # integer lags in FFT order
        h = np.zeros(self.size)
        h[n == 0] = 1.0 / (4 * self.ds**2)
        odd = (np.abs(n) % 2) == 1
        h[odd] = -1.0 / (math.pi * n[odd] * self.ds) ** 2
        ramp = np.fft.fft(h).real * self.ds
        return ramp * kernel_window(kernel, np.abs(np.fft.fftfreq(self.size)))

    def project(self, image: np.ndarray, step: int = 1) -> np.ndarray:
        """Line integrals (views, bins) of ``image`` (rows, cols, per-mm values).

        ``step`` > 1 averages the image over step x step pixels and projects that with
        step-times coarser views and rays, then interpolates back: the noise variance needs
        only a smooth estimate of the sinogram.
        """
        img = torch.as_tensor(image, dtype=torch.float32)[None, None]
        if step > 1:
            img = F.avg_pool2d(img, step, ceil_mode=True)
        theta = torch.as_tensor(self.theta[::step], dtype=torch.float32)
        ds = self.ds * step
        count = (self.bins - 1) // (2 * step)
        s = torch.arange(-count, count + 1, dtype=torch.float32) * ds
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        x = s[None, :, None] * cos - s[None, None, :] * sin
        y = s[None, :, None] * sin + s[None, None, :] * cos
        half_w = 0.5 * img.shape[-1] * self.dx * step
        half_h = 0.5 * img.shape[-2] * self.dy * step
        grid = torch.stack([x / half_w, y / half_h], -1).reshape(1, -1, len(s), 2)
        sampled = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        sino = sampled[0, 0].sum(-1).reshape(len(theta), len(s)) * ds
        if step > 1:
            coarse_s = s.numpy().astype(np.float64)
            fine_s = (np.arange(self.bins) - (self.bins - 1) / 2) * self.ds
            theta_c = self.theta[::step]
            sino = sino.numpy().astype(np.float64)
            # periodic in angle: p(theta + pi, s) = p(theta, -s)
            sino = np.concatenate([sino, sino[:1, ::-1]])
            theta_c = np.append(theta_c, math.pi)
            along_s = np.stack([np.interp(fine_s, coarse_s, row, left=0, right=0) for row in sino])
            return np.stack([np.interp(self.theta, theta_c, col) for col in along_s.T], axis=1)
        return sino.numpy().astype(np.float64)

    def fbp(self, sinogram: np.ndarray) -> np.ndarray:
        """Filtered back-projection of a (views, bins) sinogram onto the slice grid."""
        m = np.fft.fftfreq(self.size, d=1.0 / self.size)  # integer frequency indices
        centre = (self.bins - 1) // 2
        spectrum = np.fft.fft(sinogram, n=self.size, axis=1) * self.filter
        spectrum *= np.exp(2j * math.pi * m * centre / self.size)  # detector centre at s = 0
        weights = (spectrum * (math.pi / (self.views * self.size))).ravel()
        omega = 2 * math.pi * m / (self.size * self.ds)  # radians per mm
        px = (omega[None, :] * np.cos(self.theta)[:, None]).ravel() * self.dx
        py = (omega[None, :] * np.sin(self.theta)[:, None]).ravel() * self.dy
        # finufft's modes run from -N/2; pixel centres sit at index - (N-1)/2
        weights = weights * np.exp(1j * (0.5 * (1 - self.cols % 2) * px
                                         + 0.5 * (1 - self.rows % 2) * py))
        image = finufft.nufft2d1(py, px, weights.astype(np.complex128), (self.rows, self.cols),
                                 eps=1e-7, isign=1)
        return image.real


def simulate_slice_noise(hu: np.ndarray, beam: ParallelBeam, params: LowDoseParams,
                         rng: np.random.Generator) -> np.ndarray:
    """The noise (in HU) that lowering the dose to ``params.dose`` adds to one slice."""
    if params.dose >= 1.0:
        return np.zeros_like(hu, dtype=np.float32)
    mu = np.clip(params.mu_water * (1 + hu / 1000.0), 0.0, None)
    p = beam.project(mu, step=4)
    sd = np.sqrt(added_variance(p, params))
    noise = rng.standard_normal(sd.shape) * sd
    return (beam.fbp(noise) * (1000.0 / params.mu_water)).astype(np.float32)


def simulate_low_dose(volume: CTVolume, params: LowDoseParams = LowDoseParams(),
                      seed: int = 0, progress: bool = True) -> CTVolume:
    """Simulate a lower-dose scan of ``volume``: same geometry, noise added slice by slice.

    Deterministic for a seed: slice k draws its noise from a generator seeded with (seed, k).
    """
    beam = ParallelBeam(volume.hu.shape[1], volume.hu.shape[2],
                        (volume.spacing[0], volume.spacing[1]), params.views, params.kernel)
    out = np.empty_like(volume.hu, dtype=np.float32)
    slices = range(volume.hu.shape[0])
    for k in tqdm(slices, desc=f"simulate dose {params.dose:g}", unit="slice",
                  disable=not progress or len(slices) < 2):
        rng = np.random.default_rng([seed, k])
        hu = volume.hu[k].astype(np.float32)
        out[k] = hu + simulate_slice_noise(hu, beam, params, rng)
    return volume.with_hu(out)


def retexture(noise: np.ndarray, kernel: str, source: str = "hann",
              max_gain: float = 200.0) -> np.ndarray:
    """The noise another reconstruction ``kernel`` gives, from noise reconstructed with
    ``source`` (the simulation's Hann kernel).

    FBP noise is projection noise through the ramp times the kernel's window W, and in the
    image's 2D spectrum (Fourier slice theorem) the radial frequency is the detector's, so a
    noise image made with one window becomes another kernel's by the radial filter
    W_kernel(f) / W_source(f), f in cycles per pixel: exact, but for the gain cap
    ``max_gain`` at the Nyquist frequency, where the Hann window vanishes (at 200 the made
    noise's SD is within 6 % of the kernel's own, `tests/test_simulate.py`; a cap of 8 lost
    up to 30 %). The gain at f = 0 is 1, so a mean (an HU offset) passes unchanged. Filters
    the last two axes.
    """
    def gain(f: np.ndarray) -> np.ndarray:
        f = np.minimum(f, 0.5)
        target, own = kernel_window(kernel, f), kernel_window(source, f)
        return np.minimum((target + 1e-12) / (own + 1e-12), max_gain)  # 0/0 (Hann's zero): 1

    return radial_filter(noise, gain).astype(noise.dtype)


def radial_filter(image: np.ndarray,
                  gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``image`` filtered over its last two axes by ``gain`` of the radial frequency (cycles
    per pixel): how a reconstruction kernel shapes noise, isotropic in the image plane."""
    rows, cols = image.shape[-2:]
    radius = np.hypot(np.fft.fftfreq(rows)[:, None], np.fft.rfftfreq(cols)[None, :])
    spectrum = np.fft.rfft2(image, axes=(-2, -1)) * gain(radius)
    return np.fft.irfft2(spectrum, s=(rows, cols), axes=(-2, -1))
