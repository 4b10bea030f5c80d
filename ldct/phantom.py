"""A synthetic contrast-enhanced abdominal CT phantom with known anatomy and lesions.

Tests and the demo need a CT-like volume with ground truth when no real data is present:
body outline with a fat layer, abdominal muscle wall, liver with vessels and low-contrast
lesions of known contrast, spine, kidneys and aorta, all in HU, with matching masks.
Shapes are ellipses/ellipsoids scaled to the field of view so the phantom works at any size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ldct.io import CTVolume

HU = {
    "air": -1000.0, "fat": -100.0, "muscle": 50.0, "soft_tissue": 40.0, "liver": 100.0,
    "vessel": 180.0, "kidney": 160.0, "aorta": 200.0, "bone": 700.0, "marrow": 250.0,
}
# Lesion contrasts relative to the liver (HU): hypodense metastases and a subtle hyperdense one.
LESION_CONTRASTS = (-40.0, -20.0, -10.0, 15.0)


@dataclass
class Phantom:
    """The phantom volume and its masks (bool arrays, same shape as the volume)."""

    volume: CTVolume
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    lesion_contrasts: tuple[float, ...] = LESION_CONTRASTS


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def make_phantom(size: int = 256, slices: int = 16, pixel_mm: float | None = None,
                 slice_mm: float = 2.0, seed: int = 0) -> Phantom:
    """Build the phantom: ``size`` x ``size`` slices covering a 380 mm field of view by default.

    The liver and kidneys change size along z like ellipsoids; lesions are spheres placed in
    the liver's middle slices. ``seed`` only jitters vessel positions, so it is reproducible.
    """
    if size < 32 or slices < 1:
        raise ValueError("the phantom needs size >= 32 and slices >= 1")
    pixel_mm = pixel_mm if pixel_mm is not None else 380.0 / size
    rng = np.random.default_rng(seed)
    # coordinates in mm, centred; y grows towards the patient's back (LPS rows)
    coords = (np.arange(size) - (size - 1) / 2) * pixel_mm
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    zc = (np.arange(slices) - (slices - 1) / 2) * slice_mm
    z_half = max(slices * slice_mm / 2, 1e-6)

    names = ("body", "fat", "muscle", "liver", "vessels", "lesions", "spine", "kidneys", "aorta")
    masks = {n: np.zeros((slices, size, size), dtype=bool) for n in names}
    lesion_labels = np.zeros((slices, size, size), dtype=np.uint8)
    hu = np.full((slices, size, size), HU["air"], dtype=np.float32)
    # (x, y) in mm: the liver sits on the patient's right (image left), centred near (-70, -20)
    vessel_xy = [(rng.uniform(-115, -30), rng.uniform(-60, 15)) for _ in range(6)]
    lesion_xy = [(-100.0, -35.0), (-65.0, -62.0), (-40.0, -15.0), (-85.0, 12.0)]
    lesion_r = 9.0

    for k, z in enumerate(zc):
        taper = np.sqrt(max(0.0, 1.0 - (z / (1.25 * z_half)) ** 2))
        body = _ellipse(yy, xx, 0, 0, 120, 165)
        inner = _ellipse(yy, xx, 0, 0, 104, 148)  # inside the subcutaneous fat
        cavity = _ellipse(yy, xx, 2, 0, 92, 136)  # inside the muscle wall
        spine = _ellipse(yy, xx, 62, 0, 22, 22)
        marrow = _ellipse(yy, xx, 62, 0, 17, 17)
        aorta = _ellipse(yy, xx, 30, 18, 11, 11)
        ry, rx = 28 * taper + 4, 18 * taper + 3
        kidneys = cavity & ~aorta & (_ellipse(yy, xx, 45, -60, ry, rx, 0.4)
                                     | _ellipse(yy, xx, 45, 60, ry, rx, -0.4))
        liver = (_ellipse(yy, xx, -10 - 10 * taper, -70, 62 * taper + 8, 58 * taper + 8, 0.3)
                 & cavity & ~kidneys & ~aorta & ~spine)
        vessels = np.zeros_like(body)
        for vx, vy in vessel_xy:
            vessels |= _ellipse(yy, xx, vy, vx, 4.0, 4.0)
        vessels &= liver

        sl = hu[k]
        sl[body] = HU["fat"]
        sl[inner] = HU["muscle"]
        sl[cavity] = HU["soft_tissue"]
        sl[liver] = HU["liver"]
        sl[vessels] = HU["vessel"]
        sl[kidneys] = HU["kidney"]
        sl[aorta] = HU["aorta"]
        sl[spine] = HU["bone"]
        sl[marrow] = HU["marrow"]
        for label, ((lx, ly), contrast) in enumerate(zip(lesion_xy, LESION_CONTRASTS), start=1):
            r2 = lesion_r**2 - z**2
            if r2 <= 0:
                continue
            lesion = _ellipse(yy, xx, ly, lx, np.sqrt(r2), np.sqrt(r2)) & liver & ~vessels
            sl[lesion] = HU["liver"] + contrast
            lesion_labels[k][lesion] = label
        masks["body"][k] = body
        masks["fat"][k] = body & ~inner
        masks["muscle"][k] = inner & ~cavity & ~spine
        masks["liver"][k] = liver & ~vessels & (lesion_labels[k] == 0)
        masks["vessels"][k] = vessels
        masks["lesions"][k] = lesion_labels[k] > 0
        masks["spine"][k] = spine
        masks["kidneys"][k] = kidneys
        masks["aorta"][k] = aorta
    for label in range(1, len(LESION_CONTRASTS) + 1):
        masks[f"lesion{label}"] = lesion_labels == label
    origin = (-(size - 1) / 2 * pixel_mm, -(size - 1) / 2 * pixel_mm, float(zc[0]))
    volume = CTVolume(hu=hu, spacing=(pixel_mm, pixel_mm, slice_mm), origin=origin)
    return Phantom(volume=volume, masks=masks)


def water_cylinder(size: int = 128, pixel_mm: float = 1.0, radius_mm: float | None = None,
                   slices: int = 1) -> CTVolume:
    """A noiseless water cylinder (0 HU) in air: the reference object of the physics checks."""
    radius_mm = radius_mm if radius_mm is not None else 0.42 * size * pixel_mm
    coords = (np.arange(size) - (size - 1) / 2) * pixel_mm
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    sl = np.where(xx**2 + yy**2 <= radius_mm**2, 0.0, HU["air"]).astype(np.float32)
    return CTVolume(hu=np.repeat(sl[None], slices, axis=0),
                    spacing=(pixel_mm, pixel_mm, 2.0))
