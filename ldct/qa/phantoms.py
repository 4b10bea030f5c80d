"""Digital phantoms: a Catphan CTP404-like CT-number module, a MITA-LCD (CCT189)-like
low-contrast module and a uniform water section, as water cylinders of any patient diameter.

Sources of the numbers:
- CTP404 materials and nominal CT numbers: the values pylinac checks Catphan scans against
  (jrkerns/pylinac, ``pylinac/ct.py``: AIR -1000, PMP -196, LDPE -104, POLY -47, ACRYLIC 115,
  BONE_20 237, DELRIN 365, BONE_50 725, TEFLON 1000); inserts 12.2 mm across on a circle of
  radius 58.5 mm in the 200 mm Catphan, scaled here with the diameter (background: water, where
  the real module's body is an epoxy near water).
- CCT189 rods: the FDA LCD-CT toolbox's model of the phantom (DIDSR/LCD_CT,
  ``LCD phantom creation/CCT189_obj.m``): a 200 mm water disc with rods of 3, 5, 7 and 10 mm at
  14, 7, 5 and 3 HU, centred 40 mm from the centre on the diagonals; for other diameters the
  toolbox's size-adjustable version keeps the rods at 0.4 of the radius, as here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WATER_HU, AIR_HU = 0.0, -1000.0
# (name, nominal HU): CTP404 as pylinac's constants, in their order around the module
CTP404 = (("air", -1000.0), ("pmp", -196.0), ("ldpe", -104.0), ("polystyrene", -47.0),
          ("acrylic", 115.0), ("bone20", 237.0), ("delrin", 365.0), ("bone50", 725.0),
          ("teflon", 1000.0))
CTP404_DIAMETER_MM, CTP404_RING = 12.2, 0.585  # ring radius as a fraction of the radius
# (diameter mm, contrast HU): CCT189 as the LCD-CT toolbox models it, at 45, 135, 225, 315 deg
CCT189 = ((3.0, 14.0), (5.0, 7.0), (7.0, 5.0), (10.0, 3.0))
CCT189_RING = 0.4
# a small child to a large adult, in the order a run takes them: the MITA phantom's own 200 mm
# first, then the extremes
SIZES_MM = (200.0, 350.0, 112.0, 292.0, 151.0)
FOV_FACTOR = 1.1  # field of view over the patient diameter (reconstruction fitted to the body)


@dataclass(frozen=True)
class Disc:
    """A cylinder seen in one slice: centre (x right, y down, mm from the isocentre), diameter
    (mm) and CT number (HU), with a name for its measurements."""

    name: str
    x: float
    y: float
    diameter: float
    hu: float


@dataclass(frozen=True)
class Grid:
    """A square reconstruction grid: ``matrix`` pixels of ``pixel_mm`` centred on the isocentre
    (pixel centres at (index - (matrix - 1) / 2) * pixel_mm, as the simulator's FBP)."""

    matrix: int
    pixel_mm: float

    @classmethod
    def for_diameter(cls, diameter_mm: float, matrix: int) -> Grid:
        return cls(matrix, FOV_FACTOR * diameter_mm / matrix)

    def index(self, mm: float) -> float:
        """The (fractional) pixel index of a coordinate in mm."""
        return mm / self.pixel_mm + (self.matrix - 1) / 2

    def snap(self, mm: float) -> float:
        """The coordinate of the pixel centre nearest ``mm`` (signals centred on a pixel)."""
        return (round(self.index(mm)) - (self.matrix - 1) / 2) * self.pixel_mm

    def centre(self, disc: Disc) -> tuple[int, int]:
        """(row, column) of the pixel nearest the disc's centre."""
        return round(self.index(disc.y)), round(self.index(disc.x))


def _ring(grid: Grid, radius: float, angles_deg: list[float]) -> list[tuple[float, float]]:
    return [(grid.snap(radius * math.cos(math.radians(a))),
             grid.snap(-radius * math.sin(math.radians(a)))) for a in angles_deg]


def ctp404(diameter: float, grid: Grid) -> list[Disc]:
    """The CT-number module: a water cylinder with the CTP404 inserts evenly around a ring."""
    ring = _ring(grid, CTP404_RING * diameter / 2, [90 + 360 * k / len(CTP404)
                                                    for k in range(len(CTP404))])
    return [Disc("body", 0.0, 0.0, diameter, WATER_HU),
            *(Disc(name, x, y, CTP404_DIAMETER_MM, hu)
              for (name, hu), (x, y) in zip(CTP404, ring))]


def rod_name(diameter: float, contrast: float) -> str:
    """The low-contrast insert's name in reports: '3mm 14HU'."""
    return f"{diameter:g}mm {contrast:g}HU"


def cct189(diameter: float, grid: Grid, present: bool = True) -> list[Disc]:
    """The low-contrast module (``present``) or its signal-absent background module."""
    ring = _ring(grid, CCT189_RING * diameter / 2, [45, 135, 225, 315])
    rods = [Disc(rod_name(d, c), x, y, d, c) for (d, c), (x, y) in zip(CCT189, ring)]
    return [Disc("body", 0.0, 0.0, diameter, WATER_HU), *(rods if present else [])]


def rods(diameter: float, grid: Grid) -> list[Disc]:
    """The low-contrast rods (their positions are also the signal-absent ROIs')."""
    return cct189(diameter, grid)[1:]


def rasterize(discs: list[Disc], grid: Grid, supersample: int = 4) -> np.ndarray:
    """HU image of discs painted in order over air, each pixel the area-weighted mean of its
    ``supersample`` x ``supersample`` sub-pixels (partial volume at the edges)."""
    n, s = grid.matrix, supersample
    sub = ((np.arange(n * s) + 0.5) / s - n / 2) * grid.pixel_mm  # sub-pixel centres, mm
    image = np.full((n, n), AIR_HU)
    for disc in discs:
        r = disc.diameter / 2
        rows = np.flatnonzero(np.abs(sub - disc.y) <= r + grid.pixel_mm)
        cols = np.flatnonzero(np.abs(sub - disc.x) <= r + grid.pixel_mm)
        r0, r1, c0, c1 = rows[0] // s, rows[-1] // s + 1, cols[0] // s, cols[-1] // s + 1
        yy, xx = sub[r0 * s:r1 * s, None], sub[None, c0 * s:c1 * s]
        inside = ((yy - disc.y) ** 2 + (xx - disc.x) ** 2 <= r * r).astype(np.float64)
        frac = inside.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3))
        block = image[r0:r1, c0:c1]
        image[r0:r1, c0:c1] = block + frac * (disc.hu - block)
    return image.astype(np.float32)


def disc_mask(disc: Disc, grid: Grid, radius_fraction: float = 0.5,
              shape: tuple[int, int] | None = None, origin: tuple[int, int] = (0, 0)
              ) -> np.ndarray:
    """Pixels whose centres lie within ``radius_fraction`` of the disc's radius (an ROI away
    from its edge), on a ``shape`` patch whose (0, 0) is grid pixel ``origin``."""
    rows, cols = shape or (grid.matrix, grid.matrix)
    y = (np.arange(rows) + origin[0] - (grid.matrix - 1) / 2) * grid.pixel_mm
    x = (np.arange(cols) + origin[1] - (grid.matrix - 1) / 2) * grid.pixel_mm
    r = radius_fraction * disc.diameter / 2
    return (y[:, None] - disc.y) ** 2 + (x[None, :] - disc.x) ** 2 <= r * r
