"""Fresh noise with a scan's own statistics, measured from that scan alone, for recorruption.

A self-supervised denoiser that may not see any normal-dose image, nor assume a scanner model,
can still learn the scan's noise from the scan: CT noise is close to independent from one
reconstructed slice to the next while anatomy changes slowly, so the second difference across
slices, k - (k-1 + k+1) / 2 (scaled to one slice's variance), is noise with little anatomy in
it. Its power spectrum over flat soft tissue gives the texture, i.e. the reconstruction kernel's
(:func:`scan_noise_kernel`); its robust local SD gives the level, which varies across the body
with the photons each ray gets (:func:`noise_level_map`). A recorruption patch is white noise
through the texture kernel scaled to unit SD, times that level (:class:`ScanNoise`). Nothing of
it comes from the physics simulator or from a normal-dose scan, so a site's low-dose scans are
enough, whatever their kernel, dose or slice thickness.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from ldct.metrics import power_spectrum_2d, radial_average
from ldct.simulate import radial_filter

FLAT_HU = (20.0, 90.0)  # soft tissue whose 9x9 local mean lies here counts as flat
LEVEL_BLOCK = 16  # pixels per side of the blocks the local noise level is measured over
MAD_TO_SD = 1.4826  # the SD of a Gaussian over its median absolute deviation
OWN = "own"  # a prepared texture: what a lower dose adds, in the scan's own measured texture


def slice_differences(hu: np.ndarray) -> np.ndarray:
    """Noise estimates of slices 1..n-2: k - (k-1 + k+1) / 2 over sqrt(1.5), which has one
    slice's noise variance when slices have independent noise of equal level."""
    hu = np.asarray(hu, np.float32)
    return (hu[1:-1] - 0.5 * (hu[:-2] + hu[2:])) / np.float32(np.sqrt(1.5))


def flat_tissue(hu: np.ndarray, size: int = 9) -> np.ndarray:
    """Soft tissue whose in-plane ``size`` x ``size`` local mean lies in `FLAT_HU`: where a
    scan's noise is measured without edges."""
    local = ndimage.uniform_filter(np.asarray(hu, np.float32), size=(1, size, size))
    return (local > FLAT_HU[0]) & (local < FLAT_HU[1])


def _own_noise_power(hu: np.ndarray, roi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(2D power spectrum of the scan's own noise, the region of slices 1..n-2 it was measured
    in): over ``roi``-pixel ROIs of flat soft tissue, else half-size ROIs of flat tissue, then
    of any tissue (a scan too small or too busy for the first). None without 3 slices or
    tissue."""
    if hu.shape[0] < 3:
        return None
    flat = flat_tissue(hu[1:-1])
    tissue = ndimage.uniform_filter(np.asarray(hu[1:-1], np.float32), size=(1, 9, 9)) > -300.0
    differences = slice_differences(hu).astype(np.float64)
    for size, region in ((roi, flat), (roi // 2, flat), (roi // 2, tissue)):
        try:
            return power_spectrum_2d(differences, size, region, taper=True), region
        except ValueError:  # no ROI of that size inside the region
            continue
    return None


def scan_noise_kernel(hu: np.ndarray, roi: int = 32) -> np.ndarray | None:
    """A square kernel: unit white noise convolved with it has the scan's own noise.

    The noise is measured from :func:`slice_differences`, its power spectrum over flat soft
    tissue (see :func:`_own_noise_power`) gives the kernel (zero phase). None when the scan has
    fewer than 3 slices or no tissue at all.
    """
    measured = _own_noise_power(hu, roi)
    if measured is None:
        return None
    return np.fft.fftshift(np.fft.ifft2(np.sqrt(measured[0])).real)


def own_textured(added: np.ndarray, normal: np.ndarray, dose: float,
                 roi: int = 32, max_gain: float = 200.0) -> np.ndarray:
    """The noise a lower ``dose`` adds to ``normal``, given the scan's own noise texture.

    A normal-dose scan's own noise (measured across slices) is quantum noise through the site's
    reconstruction kernel; a dose fraction a multiplies its variance by 1/a, so the part a
    lower dose adds has the same texture and (1/a - 1) times its variance. The simulated
    ``added`` noise keeps where it is strong (photon statistics); its spectrum is reshaped
    radially to the measured one and its level set by that rule in flat soft tissue, so no
    kernel or photon count of the simulator is assumed. The gain is capped at ``max_gain``
    (as :func:`ldct.simulate.retexture`'s) where the simulated noise has almost no power.
    """
    measured = _own_noise_power(normal, roi)
    if measured is None or not measured[0].any():
        raise ValueError("the scan's own noise cannot be measured (it needs at least 3 slices "
                         "and some soft tissue); fine-tune with the simulator's kernel instead")
    own, region = measured
    simulated = power_spectrum_2d(np.asarray(added[1:-1], np.float64), own.shape[0], region,
                                  taper=True)
    rings = int(np.rint(own.shape[0] / np.sqrt(2))) + 1  # out to the spectrum's corners
    f, own_ring = radial_average(own, (1.0, 1.0), rings)
    _, simulated_ring = radial_average(simulated, (1.0, 1.0), rings)
    ring_gain = np.minimum(np.sqrt(own_ring / np.maximum(simulated_ring, 1e-30)), max_gain)
    shaped = radial_filter(  # gain 1 at f = 0: no HU offset
        added, lambda radius: np.where(radius > 0, np.interp(radius, f, ring_gain), 1.0))
    target = np.sqrt(own.mean() * (1.0 / dose - 1.0))  # the 2D power's mean is the variance
    level = shaped[1:-1][region].std()
    return (shaped * (target / level)).astype(np.float32)


def noise_level_map(hu: np.ndarray, block: int = LEVEL_BLOCK) -> np.ndarray:
    """Local noise SD (HU) per slice on a grid of ``block`` x ``block`` pixel blocks.

    The median absolute deviation of :func:`slice_differences` in each block (robust to the
    anatomy that changes across slices at edges), then a 3x3x3 median over blocks; the first
    and last slices take their neighbour's map.
    """
    diff = slice_differences(hu)
    n, rows, cols = diff.shape
    pad = (-rows) % block, (-cols) % block
    diff = np.pad(diff, ((0, 0), (0, pad[0]), (0, pad[1])), mode="edge")
    blocks = diff.reshape(n, diff.shape[1] // block, block, diff.shape[2] // block, block)
    blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(n, diff.shape[1] // block,
                                                     diff.shape[2] // block, -1)
    centred = blocks - np.median(blocks, axis=-1, keepdims=True)
    level = MAD_TO_SD * np.median(np.abs(centred), axis=-1)
    level = ndimage.median_filter(level, size=3, mode="nearest")
    return np.concatenate([level[:1], level, level[-1:]]).astype(np.float32)


def textured_noise(kernel: np.ndarray, shape: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """A noise image of ``shape`` with the texture and level that ``kernel`` describes."""
    pad = kernel.shape[0] - 1
    white = rng.standard_normal((shape[0] + pad, shape[1] + pad))
    return signal.fftconvolve(white, kernel, mode="valid").astype(np.float32)


class ScanNoise:
    """Draws noise patches with a scan's measured texture and local level (see the module)."""

    def __init__(self, hu: np.ndarray, block: int = LEVEL_BLOCK) -> None:
        if hu.shape[0] < 3:
            raise ValueError(f"a scan of {hu.shape[0]} slice(s) has no neighbours on both "
                             "sides to measure its noise from; give at least 3 slices")
        kernel = scan_noise_kernel(hu)
        if kernel is None or not kernel.any():
            # no flat soft tissue: the texture of white noise, the level still measured
            kernel = np.zeros((1, 1))
            kernel[0, 0] = 1.0
        self.unit = (kernel / np.sqrt((kernel ** 2).sum())).astype(np.float64)
        self.level = noise_level_map(hu, block)
        self.block = block

    def patch(self, k: int, i: int, j: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """A (1, size, size) noise patch for slice ``k`` centred at row ``i``, column ``j``."""
        rows = (i - size // 2 + np.arange(size) + 0.5) / self.block - 0.5
        cols = (j - size // 2 + np.arange(size) + 0.5) / self.block - 0.5
        grid = np.meshgrid(rows, cols, indexing="ij")
        level = ndimage.map_coordinates(self.level[k], grid, order=1, mode="nearest")
        return (textured_noise(self.unit, (size, size), rng) * level)[None]
