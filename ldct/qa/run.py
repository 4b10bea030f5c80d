"""Every model on the phantoms' scans, per patient size, dose and kernel, cached per condition.

Cheap by design: noise is simulated once per realization and size (`ldct.qa.scan`), cropped to
patches around the rods, the CT-number inserts and the water centre, and those patches are what
the models denoise (a margin of `Settings.margin` pixels around each measured ROI keeps the
networks' field of view). Realizations are the slices of a patch stack, so 2.5D networks see a
cylinder along z with independent noise per slice. Each step writes its result to the cache
before the next starts: a run stopped at any point resumes where it was.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ldct import metrics
from ldct.qa import phantoms
from ldct.qa.nps import residuals
from ldct.qa.observer import CHANNELS, channelize, laguerre_gauss
from ldct.qa.phantoms import Disc, Grid
from ldct.qa.scan import Protocol, Scanner, kernel_filter
from ldct.qa.ttf import disc_ttf

logger = logging.getLogger(__name__)
INPUT = "input"  # the unprocessed reconstruction, as a model
SLICE_MM = 3.0
SIDE_STEP = 16  # the networks' input sides are multiples of this (their downsampling)
MOSAIC = 256  # patches run as mosaics about this wide: networks run faster on large images
MIN_SLICES = 4  # ... but at least this many mosaics, so 2.5D networks get distinct neighbours
# A centred cylinder scanned over 180 degrees in 720 views has noise whose statistics do not
# change under a quarter turn (the views map onto views, the pixel grid onto itself), and the
# rods sit on the diagonals: each scan's noise, turned 0-3 quarters, gives each rod four samples
# from four regions of the scan 40 % of a radius apart (samples of one scan stay together in the
# train/test split).
QUARTER_TURNS = 4
TTF_INSERTS = {"high": "delrin", "low": "polystyrene"}  # +365 HU and -47 HU over water


@dataclass(frozen=True)
class Settings:
    """What is scanned and how many times."""

    sizes: tuple[float, ...] = phantoms.SIZES_MM
    doses: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)
    kernels: tuple[str, ...] = ("hann", "sharp-ee")  # a smooth and a sharp body kernel
    matrix: int = 512
    pairs: int = 16  # signal-present and -absent scans each (x4 samples): half train, half test
    ct_scans: int = 4  # scans of the CT-number module (averaged for CT numbers and the TTF)
    nps_scans: int = 8  # signal-absent scans whose centre patch measures the noise texture
    margin: int = 8
    bootstrap: int = 200
    seed: int = 0

    def key(self) -> str:
        """What a cached scan depends on (a change starts a fresh cache)."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "bootstrap"})


QUICK = Settings(sizes=(112.0, 200.0), doses=(0.25, 1.0), kernels=("hann",), matrix=128,
                 pairs=6, ct_scans=2, nps_scans=6, bootstrap=50)


@dataclass
class Patch:
    """A square crop around a centre pixel (row, col): the measured ROI (2 half + 1 pixels,
    centred) inside ``margin`` more pixels on every side."""

    name: str
    centre: tuple[int, int]
    half: int
    margin: int
    disc: Disc | None = None

    @property
    def outer(self) -> int:
        return self.half + self.margin

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The patch of an image (or stack) on the full grid."""
        (r, c), h = self.centre, self.outer
        return image[..., r - h:r + h + 1, c - h:c + h + 1]

    def roi(self, patch: np.ndarray) -> np.ndarray:
        """The measured ROI of a patch (or stack of patches)."""
        m = self.margin
        return patch[..., m:patch.shape[-2] - m, m:patch.shape[-1] - m]

    @property
    def roi_origin(self) -> tuple[int, int]:
        """The full grid's pixel at the ROI's (0, 0)."""
        return self.centre[0] - self.half, self.centre[1] - self.half


@dataclass
class Layout:
    """Where the patches of one patient size lie."""

    grid: Grid
    rods: list[Patch] = field(default_factory=list)
    inserts: list[Patch] = field(default_factory=list)
    water: Patch | None = None

    @classmethod
    def of(cls, diameter: float, grid: Grid, margin: int) -> Layout:
        px = grid.pixel_mm
        # the ROI reaches 0.75 diameters from the rod's centre: 2.25 channel widths, where the
        # channels have fallen to below 1 % of their peak
        rods = [Patch(d.name, grid.centre(d), max(math.ceil(0.75 * d.diameter / px), 6),
                      margin, d) for d in phantoms.rods(diameter, grid)]
        inserts = [Patch(d.name, grid.centre(d), math.ceil(0.9 * d.diameter / px) + 1, margin,
                         d) for d in phantoms.ctp404(diameter, grid)[1:]]
        centre = (grid.matrix // 2, grid.matrix // 2)
        return cls(grid, rods, inserts, Patch("water", centre, grid.matrix // 8, margin))


def condition_name(size: float, kernel: str, dose: float) -> str:
    return f"{size:g}mm_{kernel}_{dose:g}"


class Cache:
    """Scans and measurements on disk, one file per size and condition (and model)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / "settings.json"
        if stamp.exists() and stamp.read_text() != settings.key():
            raise SystemExit(f"{self.root} holds a run with other settings; give another "
                             "--cache folder or remove it")
        stamp.write_text(settings.key())

    def scans(self, size: float, kernel: str, dose: float) -> Path:
        return self.root / "scans" / f"{condition_name(size, kernel, dose)}.npz"

    def measured(self, size: float, kernel: str, dose: float, model: str) -> Path:
        return self.root / "measured" / condition_name(size, kernel, dose) / f"{model}.npz"


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Write complete or not at all (a stopped run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)


def scan_size(settings: Settings, size: float, cache: Cache) -> None:
    """Simulate every realization of one patient size once; save its patches per dose and
    kernel (present and absent rods, the water centre, the CT-number inserts)."""
    conditions = [(k, a) for k in settings.kernels for a in settings.doses]
    if all(cache.scans(size, k, a).exists() for k, a in conditions):
        return
    protocol = Protocol(size, settings.matrix)
    grid = protocol.grid
    layout = Layout.of(size, grid, settings.margin)
    scanner = Scanner(protocol)
    objects = {"present": phantoms.cct189(size, grid, True),
               "absent": phantoms.cct189(size, grid, False), "ct": phantoms.ctp404(size, grid)}
    images = {name: phantoms.rasterize(discs, grid) for name, discs in objects.items()}
    variance = {name: scanner.variance(image) for name, image in images.items()}
    clean = {(name, k): kernel_filter(image, k) for name, image in images.items()
             for k in settings.kernels}
    groups = {"present": [(p.name, p) for p in layout.rods],
              "absent": [(p.name, p) for p in layout.rods] + [("water", layout.water)],
              "ct": [(p.name, p) for p in layout.inserts]}
    counts = {"present": settings.pairs, "absent": settings.pairs, "ct": settings.ct_scans}
    out: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {c: {} for c in conditions}
    for kind, count in counts.items():
        turns = QUARTER_TURNS if kind != "ct" else 1
        for j in range(count):
            rng = np.random.default_rng([settings.seed, int(size), list(counts).index(kind), j])
            sources = scanner.sources(variance[kind], rng)
            for k, a in conditions:
                noise = Scanner.noise(sources, a, k)
                for turn in range(turns):
                    image = clean[kind, k] + np.rot90(noise, turn)
                    for name, patch in groups[kind]:
                        if name == "water" and (turn or j >= settings.nps_scans):
                            continue
                        out[k, a].setdefault(f"{kind}/{name}", []).append(patch.crop(image))
        logger.info("scanned %g mm: %d %s scans", size, count, kind)
    for (k, a), patches in out.items():
        _save(cache.scans(size, k, a), **{key: np.stack(v) for key, v in patches.items()})


def tile(stack: np.ndarray) -> tuple[np.ndarray, int]:
    """A stack of n square patches as mosaics of g x g patches (g <= `MOSAIC` // side, and
    at least `MIN_SLICES` mosaics), padded
    to sides that are multiples of `SIDE_STEP`: slice z holds patches z*g*g ... in row-major
    tiles, so a tile's neighbours across slices are other realizations of the same object, as
    the slices of a cylinder scanned along z. The last mosaic repeats patches to fill up."""
    n, side = stack.shape[0], stack.shape[-1]
    g = max(1, min(MOSAIC // side, math.isqrt(n // MIN_SLICES)))
    slices = math.ceil(n / (g * g))
    picks = np.arange(slices * g * g) % n
    mosaic = stack[picks].reshape(slices, g, g, side, side).transpose(0, 1, 3, 2, 4)
    mosaic = mosaic.reshape(slices, g * side, g * side)
    pad = (-g * side) % SIDE_STEP
    return np.pad(mosaic, ((0, 0), (0, pad), (0, pad)), mode="reflect"), g


def untile(mosaic: np.ndarray, g: int, n: int, side: int) -> np.ndarray:
    """The n patches of `tile`'s mosaics."""
    m = mosaic[:, :g * side, :g * side].reshape(-1, g, side, g, side).transpose(0, 1, 3, 2, 4)
    return m.reshape(-1, side, side)[:n]


def apply(model: str, stack: np.ndarray, pixel_mm: float) -> np.ndarray:
    """The model's output for a stack of patches of one object (realizations), run as
    mosaics (the margin keeps a tile's seams away from its ROI)."""
    if model == INPUT:
        return stack
    from ldct.infer import denoise
    from ldct.io import CTVolume

    mosaic, g = tile(stack.astype(np.float32))
    volume = CTVolume(hu=mosaic, spacing=(pixel_mm, pixel_mm, SLICE_MM))
    return untile(denoise(volume, model, device="cpu", batch_size=8).hu, g, len(stack),
                  stack.shape[-1])


def measure(settings: Settings, size: float, kernel: str, dose: float, model: str,
            cache: Cache) -> None:
    """One model on one condition's scans: LCD channel outputs per rod, noise texture of the
    water centre, CT number and TTF of each insert."""
    target = cache.measured(size, kernel, dose, model)
    if target.exists():
        return
    grid = Protocol(size, settings.matrix).grid
    layout = Layout.of(size, grid, settings.margin)
    px = grid.pixel_mm
    scans = np.load(cache.scans(size, kernel, dose))
    result: dict[str, np.ndarray] = {}
    for patch in layout.rods:
        width = (2 / 3) * patch.disc.diameter / 2 / px  # 2/3 of the radius (LCD-CT toolbox)
        channels = laguerre_gauss(2 * patch.half + 1, width, CHANNELS)
        for kind in ("present", "absent"):
            out = apply(model, scans[f"{kind}/{patch.name}"], px)
            result[f"{kind}/{patch.name}"] = channelize(patch.roi(out), channels)
    water = layout.water.roi(apply(model, scans["absent/water"], px))
    tex = metrics.nps(residuals(water.astype(np.float64)), (px, px), roi=water.shape[-1] // 2)
    result.update({"nps/frequency": tex.frequency, "nps/power": tex.power,
                   "nps/summary": np.array([math.sqrt(tex.variance), tex.mean_frequency,
                                            tex.peak_frequency, water.mean()])})
    for patch in layout.inserts:
        mean = patch.roi(apply(model, scans[f"ct/{patch.name}"], px)).mean(0)
        n = mean.shape[-1]
        mask = phantoms.disc_mask(patch.disc, grid, 0.5, (n, n), patch.roi_origin)
        ttf = disc_ttf(mean, ((n - 1) / 2, (n - 1) / 2), patch.disc.diameter / 2 / px, px)
        result[f"ct/{patch.name}"] = np.array([mean[mask].mean(), ttf.at_fraction(0.5),
                                               ttf.at_fraction(0.1)])
        result[f"ttf/{patch.name}"] = np.stack([ttf.frequency, ttf.ttf])
    _save(target, **result)


def run(settings: Settings, models: list[str], cache_dir: Path) -> Cache:
    """Scan and measure everything not yet in the cache: sizes in turn, each condition with
    every model, so an interrupted run has whole sizes done."""
    cache = Cache(cache_dir, settings)
    for size in settings.sizes:
        scan_size(settings, size, cache)
        for kernel in settings.kernels:
            for dose in settings.doses:
                for model in models:
                    measure(settings, size, kernel, dose, model, cache)
                logger.info("measured %s", condition_name(size, kernel, dose))
    return cache
