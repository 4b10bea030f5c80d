"""Denoising strength chosen by the noise it leaves: a level in HU a radiologist knows.

A bare strength in [0, 1] has a different effect on every scan. Scanners instead aim at a noise
index (the noise SD a protocol asks for in flat soft tissue), so a result is asked for by that
number: the input's own noise is measured (the project's scan-noise estimate,
`ldct.noise_bank`: across-slice differences in flat soft tissue, robust SD), and the blend
between input and full result that leaves the asked noise is found by measuring the blend's
noise (the blend is linear in strength, so each try costs one weighted sum). The estimate
assumes noise independent from slice to slice and Gaussian: a network that reads adjacent
slices, or leaves heavy-tailed noise, reads low, so each shipped network carries a
`NoiseCalibration` (true noise over the estimate by strength, measured on training slabs) that
its results are matched on. Named levels (low / medium / high, and a site's presets per
reconstruction kernel) map names to HU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldct.noise_bank import MAD_TO_SD, flat_tissue, slice_differences

# The default named levels, by the noise SD (HU, flat soft tissue) they leave - how much
# denoising, not a raw strength: "low" leaves the most. They are round numbers for a routine
# abdominal scan of 3-5 mm slices (an assumption, not a measurement: thinner slices are noisier,
# e.g. ircadb17's 1.6 mm normal dose has 19.4 HU, benchmarks/quality/texture/kernels.md); a
# site sets its own per kernel (`ldct serve --noise-levels`).
DEFAULT_LEVELS: dict[str, dict[str, float]] = {"low": {"default": 20.0},
                                               "medium": {"default": 15.0},
                                               "high": {"default": 10.0}}
DEFAULT_KEY = "default"  # a level's value for a kernel it does not name
LEVELS_ENV = "LDCT_NOISE_LEVELS"  # a JSON file of the server's levels (`ldct serve --noise-levels`)
MAX_TARGET_HU = 500.0  # far above any CT noise: a larger number is a mistake, not a level
TOLERANCE = 0.01  # stop bisecting when the noise is within 1 % of the target

BLEND_SLAB = 16  # slices per step of `blend`: its temporaries are this slab's, not the volume's


class NoiseLevelError(ValueError):
    """A noise level cannot be used; the message says which and what is accepted."""


@dataclass(frozen=True)
class NoiseMatch:
    """What a ``target_noise`` request did: the input's measured noise, the strength used and
    the noise the result then has (all HU, measured the same way); ``reached`` is False when
    the target lay outside what strengths 0..1 give (the nearest end is used)."""

    target_noise: float
    input_noise: float
    strength: float
    result_noise: float
    reached: bool

    def as_dict(self) -> dict[str, Any]:
        """HU to 0.0001; the strength exact, so that it reproduces the result."""
        return {k: (round(v, 4) if isinstance(v, float) and k != "strength" else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class NoiseCalibration:
    """A model's true noise over `scan_noise`'s estimate at calibrated strengths (0 to 1,
    linear in between): its results are matched on estimate x factor. Measured by
    `benchmarks/noise_estimate.py calibrate` against repeated noise draws on training slabs."""

    strengths: tuple[float, ...]
    factors: tuple[float, ...]

    def factor(self, strength: float) -> float:
        return float(np.interp(strength, self.strengths, self.factors))

    @classmethod
    def from_json(cls, raw: Any, where: str) -> NoiseCalibration:
        """Checked: strengths rising from 0 to 1, one factor in [0.5, 2] each (an estimate
        that far off is a broken calibration, not a model)."""
        strengths = raw.get("strengths") if isinstance(raw, dict) else None
        factors = raw.get("factors") if isinstance(raw, dict) else None
        numbers = (isinstance(strengths, list) and isinstance(factors, list)
                   and len(strengths) == len(factors) >= 2
                   and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in strengths + factors))
        if not (numbers and strengths[0] == 0.0 and strengths[-1] == 1.0
                and all(a < b for a, b in zip(strengths, strengths[1:]))
                and all(0.5 <= f <= 2.0 for f in factors)):
            raise NoiseLevelError(f"{where}: a noise calibration needs 'strengths' rising from "
                                  "0 to 1 and as many 'factors', each in [0.5, 2]; run "
                                  "benchmarks/noise_estimate.py calibrate --write again")
        return cls(tuple(map(float, strengths)), tuple(map(float, factors)))


def noise_region(hu: np.ndarray) -> np.ndarray:
    """Where noise is measured: flat soft tissue of slices 1..n-2 (edges left out)."""
    if hu.shape[0] < 3:
        raise NoiseLevelError(f"a volume of {hu.shape[0]} slice(s) has no neighbours on both "
                              "sides to measure its noise from; give at least 3 slices or a "
                              "strength instead of a noise level")
    region = flat_tissue(np.asarray(hu, np.float32)[1:-1])
    if not region.any():
        raise NoiseLevelError("the volume has no flat soft tissue (HU 20-90) to measure noise "
                              "in; give a strength instead of a noise level")
    return region


def robust_sd(values: np.ndarray) -> float:
    """The SD of Gaussian values from their median absolute deviation (anatomy that changes
    across slices at edges becomes outliers, not noise)."""
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


def scan_noise(hu: np.ndarray, region: np.ndarray | None = None) -> float:
    """A volume's noise SD (HU) in flat soft tissue, measured from the volume alone."""
    region = noise_region(hu) if region is None else region
    return robust_sd(slice_differences(hu)[region])


def match_noise(low: np.ndarray, full: np.ndarray, target: float,
                region: np.ndarray | None = None, tolerance: float = TOLERANCE,
                calibration: NoiseCalibration | None = None) -> tuple[float, NoiseMatch]:
    """The strength s whose blend low + s (full - low) has noise ``target`` (HU), found by
    bisection on the measured noise (which falls as s rises), and what it measured;
    ``region`` (of slices 1..n-2) is where, by default `noise_region`; ``calibration``
    (the model's) corrects each estimate."""
    if not 0.0 < target <= MAX_TARGET_HU:
        raise NoiseLevelError(f"target_noise must be a noise SD in HU above 0 and at most "
                              f"{MAX_TARGET_HU:g}, got {target!r}")
    region = noise_region(low) if region is None else region
    d_low = slice_differences(low)[region]
    d_step = slice_differences(full)[region] - d_low

    def noise(s: float) -> float:
        estimate = robust_sd(d_low + np.float32(s) * d_step)
        return estimate * calibration.factor(s) if calibration else estimate

    given, least = noise(0.0), noise(1.0)
    if target >= given:
        return 0.0, NoiseMatch(target, given, 0.0, given, math.isclose(target, given,
                                                                       rel_tol=tolerance))
    if target <= least:
        return 1.0, NoiseMatch(target, given, 1.0, least, math.isclose(target, least,
                                                                       rel_tol=tolerance))
    lo, hi, s, level = 0.0, 1.0, 0.5, given
    for _ in range(40):
        s = 0.5 * (lo + hi)
        level = noise(s)
        if abs(level - target) <= tolerance * target:
            break
        lo, hi = (s, hi) if level > target else (lo, s)
    return s, NoiseMatch(target, given, s, level, True)


def blend(low: np.ndarray, full: np.ndarray, strength: float,
          out: np.ndarray | None = None) -> np.ndarray:
    """The result at ``strength``: the input plus that share of what the model changed.

    Computed a slab of `BLEND_SLAB` slices at a time into ``out`` (which may be ``full``
    itself), in place, so that a volume costs no volume-sized temporaries."""
    out = np.empty(np.shape(full), np.float32) if out is None else out
    share = np.float32(strength)
    for start in range(0, len(out), BLEND_SLAB):
        part = slice(start, start + BLEND_SLAB)
        step = out[part]  # a view: the three operations below write into the result
        np.subtract(full[part], low[part], out=step)
        step *= share
        step += low[part]
    return out


@dataclass(frozen=True)
class NoiseLevels:
    """Named noise levels (HU), each with a value per reconstruction kernel and a default."""

    levels: dict[str, dict[str, float]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> NoiseLevels:
        """The defaults, with a site's file (JSON ``{"name": HU or {"KERNEL": HU, "default":
        HU}}``) added over them."""
        levels = {name: dict(values) for name, values in DEFAULT_LEVELS.items()}
        if path is None:
            return cls(levels)
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise NoiseLevelError(f"noise levels file {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise NoiseLevelError(f"noise levels file {path}: expected a JSON object of "
                                  'name: HU or name: {"KERNEL": HU, "default": HU}')
        for name, value in raw.items():
            levels[name] = _per_kernel(name, value, path)
        return cls(levels)

    def resolve(self, name: str, kernel: str = "") -> float:
        """The HU of level ``name`` for ``kernel`` (the scan's DICOM ConvolutionKernel, ''
        when unknown): its own value, else the level's default."""
        if name not in self.levels:
            raise NoiseLevelError(f"no noise level {name!r} on this server; it has "
                                  f"{', '.join(sorted(self.levels))}, or give target_noise in HU")
        values = self.levels[name]
        if kernel in values:
            return values[kernel]
        if DEFAULT_KEY in values:
            return values[DEFAULT_KEY]
        raise NoiseLevelError(f"noise level {name!r} has no value for kernel {kernel or '(none)'}"
                              f" and no default; it names {', '.join(sorted(values))}")


def _per_kernel(name: str, value: Any, path: str | Path) -> dict[str, float]:
    values = value if isinstance(value, dict) else {DEFAULT_KEY: value}
    if not values:
        raise NoiseLevelError(f"noise levels file {path}: level {name!r} has no value")
    for kernel, hu in values.items():
        if (not isinstance(hu, (int, float)) or isinstance(hu, bool)
                or not 0.0 < hu <= MAX_TARGET_HU):
            raise NoiseLevelError(f"noise levels file {path}: level {name!r} kernel {kernel!r} "
                                  f"must be a noise SD in HU in (0, {MAX_TARGET_HU:g}], got {hu!r}")
    return {str(k): float(v) for k, v in values.items()}


def scan_kernel(dicom: Any) -> str:
    """The reconstruction kernel a DICOM header names ('' without one)."""
    kernel = getattr(dicom, "ConvolutionKernel", "") if dicom is not None else ""
    if not isinstance(kernel, str):  # a multi-valued kernel (e.g. Siemens' ["Br38f", "3"])
        kernel = "\\".join(str(k) for k in kernel)
    return kernel
