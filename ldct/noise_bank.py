"""Fresh noise with a low-dose scan's own statistics, for self-supervised recorruption.

A self-supervised denoiser that may not see any normal-dose image can still use the scanner's
noise model: projecting a low-dose slice and drawing the noise its dose implies gives a noise
image with the same texture and spatially varying level as the scan's own noise, but
independent of it. Drawn once per (case, dose, slice) and cached beside the prepared data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ldct.data import PreparedData, dose_key
from ldct.simulate import LowDoseParams, ParallelBeam, simulate_slice_noise

SEED = 1234  # differs from `ldct prepare`'s, so the drawn noise is not the scan's own


def _cache_path(data: PreparedData, case: str, dose: float) -> Path:
    return data.root / "noise" / f"{case}_{dose_key(dose)}.npz"


def noise_images(data: PreparedData, case: str, dose: float,
                 slices: Sequence[int]) -> np.ndarray:
    """(slices, H, W) noise images of ``case`` at ``dose``; zero outside ``slices``."""
    path = _cache_path(data, case, dose)
    settings = json.dumps(data.manifest["settings"], sort_keys=True)
    low = data.volume(case, dose)
    if path.exists():
        cached = np.load(path)
        if str(cached["settings"]) == settings and set(slices) <= set(cached["slices"].tolist()):
            return cached["noise"]
    params = LowDoseParams(**{**data.manifest["settings"]["params"], "dose": dose})
    beam = ParallelBeam(low.hu.shape[1], low.hu.shape[2], (low.spacing[0], low.spacing[1]),
                        params.views, params.kernel)
    noise = np.zeros(low.hu.shape, np.float32)
    for k in tqdm(sorted(set(slices)), desc=f"noise {case} dose {dose:g}", unit="slice",
                  leave=False):
        noise[k] = simulate_slice_noise(low.hu[k].astype(np.float32), beam, params,
                                        np.random.default_rng([SEED, k]))
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, noise=noise, slices=np.asarray(sorted(set(slices))), settings=settings)
    tmp.replace(path)
    return noise
