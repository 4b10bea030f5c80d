"""Motion-compensated, motion-adaptive recursive filter across a denoised volume's slices.

The correlated-noise module of the MSR2AU paper (msr2au-fluoroscopy-unsupervised): a network's
residual noise is spatially correlated within a frame but independent from frame to frame,
so averaging along the sequence removes what a per-frame network leaves. Here frames are CT
slices and "motion" is the anatomy's in-plane offset from one slice to the next:

    out[k] = den[k] + r * w * (aligned(out[k-1] -> k) - den[k])

``r`` is the recursion's weight, the alignment a subpixel phase-correlation shift, and ``w``
(0-1) falls where the aligned previous slice disagrees with the current one beyond the noise
(the anatomy changed, so the current slice is kept). The filter runs down and up the volume
and averages the two, so neither slice direction is favoured. It never shifts CT numbers: it
only blends slices that agree within the noise.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation
from skimage.registration import phase_cross_correlation

# a larger in-plane offset between adjacent slices (1-5 mm apart) is a failed registration
# (flat or repetitive slices), not anatomy: such slices are blended unshifted, where w guards
MAX_OFFSET_PX = 8.0
AGREEMENT_SD = 3.0  # differences within this many noise SDs count as noise (w near 1)
DIFFERENCE_SIGMA_PX = 1.0  # the difference is smoothed before it is judged: w stays smooth
NOISE_FLOOR_HU = 1.0  # noise SD assumed at least (noise-free or flat slices)


def slice_offset(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """The in-plane shift (rows, columns; subpixel) that moves ``moving`` onto ``reference``,
    or zero when the registration finds an implausibly large one."""
    with warnings.catch_warnings():  # flat slices: the RMS error it warns about is unused
        warnings.simplefilter("ignore", UserWarning)
        offset, _, _ = phase_cross_correlation(reference, moving, upsample_factor=10,
                                               normalization=None)
    return offset if np.abs(offset).max() <= MAX_OFFSET_PX else np.zeros_like(offset)


def agreement(difference: np.ndarray) -> np.ndarray:
    """Per-pixel weight (0-1) of the previous slice: 1 where the (smoothed) difference between
    the slices is noise, falling to 0 where it is anatomy. The noise SD is the difference's
    robust spread over the pixels where the slices differ at all (padding outside the field
    of view, identical in both, would make it look smaller)."""
    smooth = ndimage.gaussian_filter(difference, DIFFERENCE_SIGMA_PX)
    differing = smooth[np.abs(smooth) > 1e-3]
    noise = median_abs_deviation(differing, scale="normal") if differing.size else 0.0
    scale = AGREEMENT_SD * max(float(noise), NOISE_FLOOR_HU)
    return np.exp(-0.5 * (smooth / scale) ** 2)


def _step(previous: np.ndarray, current: np.ndarray, offset: np.ndarray,
          recursive: float) -> np.ndarray:
    """The filtered slice: ``current`` blended with the filtered ``previous`` aligned to it."""
    aligned = ndimage.shift(previous, offset, order=3, mode="nearest")
    difference = aligned - current
    return (current + recursive * agreement(difference) * difference).astype(np.float32)


def recursive_filter(volume: np.ndarray, recursive: float,
                     out: np.ndarray | None = None) -> np.ndarray:
    """The volume (slices, rows, columns; HU) filtered along its slices, down and up averaged.

    ``recursive`` (0-1): the weight of the aligned previous slice where it agrees with the
    current one; 0 returns the volume unchanged. The result goes to ``out`` (which may be the
    volume itself); the down pass waits in a temporary file, slice by slice, so that memory
    beyond the volume and the result does not grow with the slices.
    """
    den = np.asarray(volume, dtype=np.float32)
    if not 0.0 <= recursive < 1.0:
        raise ValueError(f"recursive must be in [0, 1), got {recursive}")
    out = np.empty_like(den) if out is None else out
    if recursive == 0.0 or len(den) < 2:
        out[...] = den
        return out
    offsets = np.array([slice_offset(den[k + 1], den[k]) for k in range(len(den) - 1)],
                       np.float64)  # 16 bytes a slice
    size = den[0].nbytes
    with tempfile.TemporaryFile(prefix="ldct-recursive-") as down:
        previous = den[0].copy()
        down.write(previous.tobytes())
        for k in range(1, len(den)):
            previous = _step(previous, den[k], offsets[k - 1], recursive)
            down.write(previous.tobytes())
        previous = den[-1].copy()
        for k in range(len(den) - 1, -1, -1):
            if k < len(den) - 1:
                previous = _step(previous, den[k], -offsets[k], recursive)
            down.seek(k * size)
            ahead = np.frombuffer(down.read(size), np.float32).reshape(den[k].shape)
            out[k] = 0.5 * (ahead + previous)  # den[k] is read before out[k] replaces it
    return out
