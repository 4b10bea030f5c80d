"""Scanning a digital phantom with the project's projection-domain simulator (ldct.simulate).

The simulator adds to a real normal-dose image the noise in excess of it; a digital phantom is
noiseless, so here it gets the whole noise of a scan at dose fraction ``a``: per post-log ray,
variance e^p / (a I0) (quanta) + se2 e^(2p) / (a I0)^2 (electronics), whose excess over the
full dose is exactly the simulator's ``added_variance``. The two terms are drawn and
reconstructed separately (parallel beam, FBP without apodization), so one pair of FBPs gives
every dose (quanta scale as 1/sqrt(a), electronics as 1/a) and every reconstruction kernel (its
window over the ramp applied as a radial filter, as ``ldct.simulate.retexture`` does). The
object itself is blurred by the kernel's window up to the detector's Nyquist frequency, which
is what the FBP of its exact projections gives.

Tube current follows the patient as an automatic exposure control would: the full-dose I0 is
the simulator's at a 300 mm reference, times exp(-mu_water (300 - diameter)), the LCD-CT
toolbox's convention (DIDSR/LCD_CT, ``makeCT_CCT189.m``), so every size gets the same photons
through its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ldct.qa.phantoms import Grid
from ldct.simulate import LowDoseParams, ParallelBeam, kernel_window, radial_filter

REFERENCE_DIAMETER_MM = 300.0


@dataclass(frozen=True)
class Protocol:
    """How one patient size is scanned: grid, scanner settings at full dose and exposure."""

    diameter: float
    matrix: int = 512
    params: LowDoseParams = field(default_factory=lambda: LowDoseParams(dose=1.0))

    @property
    def grid(self) -> Grid:
        return Grid.for_diameter(self.diameter, self.matrix)

    @property
    def i0(self) -> float:
        """Full-dose photons per detector element and view after the exposure control."""
        p = self.params
        return p.i0 * math.exp(-p.mu_water * (REFERENCE_DIAMETER_MM - self.diameter))


@dataclass
class NoiseSources:
    """One realization's reconstructed quantum and electronic noise at full dose, unapodized
    (HU); `Scanner.noise` turns them into any dose and kernel."""

    quantum: np.ndarray
    electronic: np.ndarray


class Scanner:
    """The simulator's parallel-beam geometry for one protocol."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        grid = protocol.grid
        self.beam = ParallelBeam(grid.matrix, grid.matrix, (grid.pixel_mm, grid.pixel_mm),
                                 protocol.params.views, "ram-lak")

    def variance(self, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Post-log (quantum, electronic) variance per ray of a full-dose scan of ``hu``."""
        params = self.protocol.params
        mu = np.clip(params.mu_water * (1 + hu / 1000.0), 0.0, None)
        t = np.exp(self.beam.project(mu, step=4)) / self.protocol.i0
        return t, params.electronic_noise * t * t

    def sources(self, variance: tuple[np.ndarray, np.ndarray],
                rng: np.random.Generator) -> NoiseSources:
        """One noise realization (two FBPs)."""
        scale = 1000.0 / self.protocol.params.mu_water
        quantum, electronic = (self.beam.fbp(rng.standard_normal(v.shape) * np.sqrt(v)) * scale
                               for v in variance)
        return NoiseSources(quantum.astype(np.float32), electronic.astype(np.float32))

    @staticmethod
    def noise(sources: NoiseSources, dose: float, kernel: str) -> np.ndarray:
        """The realization's noise (HU) at ``dose`` (fraction of full) with ``kernel``."""
        return (kernel_filter(sources.quantum, kernel) / math.sqrt(dose)
                + kernel_filter(sources.electronic, kernel) / dose).astype(np.float32)


def kernel_filter(image: np.ndarray, kernel: str) -> np.ndarray:
    """``image`` through a reconstruction kernel's window, band-limited at the detector's
    Nyquist frequency (0.5 cycles per pixel; detector elements are one pixel wide)."""
    return radial_filter(image, lambda f: kernel_window(kernel, f) * (f <= 0.5)).astype(
        np.float32)
