"""Fine-tune a shipped network on a site's own scans; the result becomes a new model version.

A site's routine scans carry its scanner's noise texture, kernel and slice thickness. Those that
are really normal dose (`normal_dose_scans`) are used as the normal-dose side and lower doses
are simulated from them with the noise texture measured from each scan itself (its own noise
across slices, :func:`ldct.noise_bank.own_textured`), not the simulator's Hann kernel; a
method that learns from noisy scans alone (n2n25d) takes every scan as it is, low doses
included, and measures their noise. Every method starts from the weights in use. The new
version lands in ``registry.site_models_dir()/<name>/versions/<timestamp>/`` with a
``finetune.json`` saying what made it, is recorded with its SHA-256 in the model's version
manifest and used from the next request on (`ldct models use NAME shipped` rolls back).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldct import registry
from ldct.data import Case, prepare
from ldct.io import read_volume
from ldct.noise_bank import OWN, scan_noise_kernel
from ldct.train.loop import method_class, train

FINETUNE_DOSES = (0.5, 0.25, 0.1)  # the range the shipped models are trained for
# Normal-dose noise in flat soft tissue is about 14 HU (smooth kernel) to 29 HU (sharp), a
# quarter dose's 32 to 69 HU (DESIGN.md 4): above this a scan is taken for low dose. A smooth
# kernel's low dose stays below it; its description or tags must say so.
LOW_DOSE_NOISE_HU = 45.0
LOW_DOSE_WORDS = ("low dose", "low-dose", "lowdose", "quarter dose", "denoised")
logger = logging.getLogger(__name__)
DEFAULTS = {"steps": 200, "max_images": 20, "max_slices": 32, "doses": list(FINETUNE_DOSES),
            "device": "auto"}
LIMITS = {"steps": 5000, "max_images": 100, "max_slices": 256}  # a fine-tune, not a training


def check_settings(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A fine-tuning request's settings over `DEFAULTS`, each checked (never coerced)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError("the fine-tuning settings must be a JSON object")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; fine-tuning takes "
                         f"{', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **raw}
    for key, limit in LIMITS.items():
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise ValueError(f"{key} must be a whole number from 1 to {limit}, got {value!r}")
    doses = settings["doses"]
    if (not isinstance(doses, list) or not doses
            or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 < d < 1
                       for d in doses)):
        raise ValueError(f"doses must be a list of dose fractions between 0 and 1, got {doses!r}")
    if settings["device"] not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {settings['device']!r}")
    return settings


def normal_dose_scans(images: Sequence[str | Path], low_dose_too: bool = False
                      ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The scans fit to be the normal-dose side of fine-tuning, and the others with the reason:
    derived series (a denoised result written back is one), series whose description says low
    dose or denoised, and scans whose own noise (measured across slices in flat soft tissue) is
    that of a low dose. Fine-tuning on those would teach a network to keep noise. With
    ``low_dose_too`` (a method that learns from noisy scans alone) only derived and denoised
    series are left out: they have no noise left to learn from."""
    kept, excluded = [], []
    for image in images:
        volume = read_volume(image)
        header = volume.dicom
        description = str(header.get("SeriesDescription", "")) if header is not None else ""
        kernel = scan_noise_kernel(volume.hu)
        noise = float(np.sqrt((kernel ** 2).sum())) if kernel is not None else 0.0
        if header is not None and "DERIVED" in list(header.get("ImageType", [])):
            excluded.append((Path(image), "a derived series (ImageType DERIVED), e.g. a result "
                                          "written back"))
        elif any(word in description.lower()
                 for word in (("denoised",) if low_dose_too else LOW_DOSE_WORDS)):
            excluded.append((Path(image), f"its description '{description}' says "
                                          + ("denoised" if low_dose_too
                                             else "low dose or denoised")))
        elif noise > LOW_DOSE_NOISE_HU and not low_dose_too:
            excluded.append((Path(image), f"its own noise, {noise:.0f} HU in flat soft tissue, "
                                          f"is a low dose's (above {LOW_DOSE_NOISE_HU:g} HU)"))
        else:
            kept.append(Path(image))
    for path, reason in excluded:
        logger.warning("fine-tuning leaves out %s: %s", path, reason)
    logger.info("fine-tuning on %d of %d scans", len(kept), len(kept) + len(excluded))
    return kept, excluded


def finetune(name: str, images: Sequence[str | Path], steps: int = 200,
             doses: Sequence[float] = FINETUNE_DOSES, max_slices: int | None = 32,
             device: str = "auto", progress: bool = False) -> Path:
    """Fine-tune network ``name`` on ``images`` (any volume `ldct.io` reads); returns the
    new version's folder."""
    info = registry.get(name)
    if info.kind != "network":
        raise ValueError(f"{name} is a baseline; only networks can be fine-tuned.")
    if not info.available():
        raise FileNotFoundError(f"{name} has no trained weights to start from at {info.weights}.")
    if not images:
        raise ValueError("no images to fine-tune on: add the site's CT scans to the datastore.")
    scans_alone = method_class(name).scans_alone
    images, excluded = normal_dose_scans(images, low_dose_too=scans_alone)
    if not images:
        raise ValueError(f"no {'' if scans_alone else 'normal-dose '}scan to fine-tune on: "
                         + "; ".join(f"{p.name}: {why}" for p, why in excluded))
    base = info.weights
    catalogue = [Case(f"site{k:03d}", str(Path(path).resolve()), "train")
                 for k, path in enumerate(images)]
    info.versions_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=info.versions_dir) as work:
        work = Path(work)
        if scans_alone:  # the scans as they are (dose 1: no simulated dose), noise measured
            prepare(Path("/"), work / "data", doses=(), max_slices=max_slices,
                    progress=progress, catalogue=catalogue)
            overrides: dict[str, Any] = {"steps": steps, "doses": [1.0]}
            texture = "the scans' own noise, measured from them (no simulated dose)"
        else:
            prepare(Path("/"), work / "data", doses=doses, max_slices=max_slices,
                    progress=progress, catalogue=catalogue, kernels=(OWN,))
            overrides = {"steps": steps, "kernels": [OWN]}
            texture = "simulated lower doses in each scan's own measured noise texture"
        result = train(name, work / "data", work / "run", overrides=overrides,
                       device=device, progress=progress, init_weights=base)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        staged = work / stamp
        staged.mkdir()
        shutil.copy2(result.out_dir / "model.pt", staged / "model.pt")
        shutil.copy2(result.out_dir / "log.csv", staged / "train_log.csv")
        record: dict[str, Any] = {
            "model": name, "version": stamp, "base_weights": str(base),
            "images": [str(p) for p in images],
            "excluded": [{"image": str(p), "reason": why} for p, why in excluded],
            "doses": [] if scans_alone else list(doses), "noise": texture,
            "steps": result.steps,
            "max_slices": max_slices, "wall_s": round(result.wall_s, 1)}
        (staged / "finetune.json").write_text(json.dumps(record, indent=1))
        os.replace(staged, info.versions_dir / stamp)  # complete or absent, never half-written
    info.record_version(info.versions_dir / stamp, record)
    return info.versions_dir / stamp
