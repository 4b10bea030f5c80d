"""Benchmark: `ldct simulate` seconds per 512x512 slice, and DICOM read/write of 512x512x130.

Uses ircadb17 slices when ../shared/data is present (else the 512 phantom); writes a markdown
report. Run: `make bench` (or `python benchmarks/bench_io_simulate.py --out FILE`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ldct.data import crop_slices
from ldct.io import CTVolume, read_mask, read_volume, write_dicom_series
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose

CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "ircadb17"
SHARED = CASE / "dicom"


def _source(slices: int) -> tuple[str, CTVolume]:
    if SHARED.exists():
        volume = read_volume(SHARED)
        reps = int(np.ceil(slices / volume.hu.shape[0]))
        hu = np.concatenate([volume.hu] * reps)[:slices]
        return "ircadb17", CTVolume(hu=hu, spacing=volume.spacing, origin=volume.origin,
                                    direction=volume.direction, dicom=volume.dicom)
    return "phantom", make_phantom(size=512, slices=slices).volume


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _calibration() -> list[str]:
    """Added-noise SD in the liver of ircadb17 (central 8 slices) per dose, default settings."""
    if not SHARED.exists():
        return []
    volume, window = crop_slices(read_volume(SHARED), 8)
    liver = read_mask(CASE / "masks" / "liver.nii.gz")[window]
    lines = ["", "## Calibration: added noise in the liver of ircadb17 (defaults: I0 1.5e5 at 720 "
             "views)", "", "| dose | added SD (HU) | SD / SD at dose 0.5 | expected sqrt((1-a)/a) "
             "ratio |", "|---|---|---|---|"]
    sds = {}
    for dose in (0.5, 0.25, 0.1):
        low = simulate_low_dose(volume, LowDoseParams(dose=dose), seed=5, progress=False)
        sds[dose] = float((low.hu - volume.hu)[liver].std())
        expected = np.sqrt((1 - dose) / dose)
        lines.append(f"| {dose:g} | {sds[dose]:.1f} | {sds[dose] / sds.get(0.5, sds[dose]):.2f} "
                     f"| {expected:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/io_simulate.md")
    parser.add_argument("--slices", type=int, default=130)
    parser.add_argument("--sim-slices", type=int, default=8)
    args = parser.parse_args()
    source, volume = _source(args.slices)
    lines = ["# I/O and simulation benchmark", "",
             f"Machine: {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads (OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), load average "
             f"{os.getloadavg()[0]:.1f} at the start, torch {torch.__version__}. "
             f"Source: {source}.",
             "", "Command: `make bench` (`python benchmarks/bench_io_simulate.py`).", ""]
    lines += ["## `ldct simulate` (dose 0.25, defaults: 720 views, Hann kernel)", "",
              "| slices | total s | s per 512x512 slice |", "|---|---|---|"]
    sim = CTVolume(hu=volume.hu[: args.sim_slices], spacing=volume.spacing)
    simulate_low_dose(sim.with_hu(sim.hu[:1].repeat(args.sim_slices, 0)), progress=False)  # warm
    (t,) = _timed(lambda: simulate_low_dose(sim, LowDoseParams(dose=0.25), progress=False), 1)
    lines.append(f"| {args.sim_slices} | {t:.2f} | {t / args.sim_slices:.3f} |")
    lines += _calibration()
    lines += ["", f"## DICOM series {volume.hu.shape[2]}x{volume.hu.shape[1]}x{volume.hu.shape[0]}"
              " (int16, explicit VR little endian)", "",
              "| operation | runs | best s | mean s |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(100))
        writes = _timed(lambda: write_dicom_series(volume, Path(tmp) / f"w{next(counter)}"), 3)
        reads = _timed(lambda: read_volume(Path(tmp) / "w0"), 3)
    for name, times in (("write", writes), ("read", reads)):
        lines.append(f"| {name} | {len(times)} | {min(times):.2f} | {np.mean(times):.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
