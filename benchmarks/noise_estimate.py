"""The scan-noise estimate behind ``target_noise`` against a result's true noise: each network's
calibration, measured on training slabs, and its check on the held-out case.

The truth needs repeated scans of one object, which no archive has: the normal dose, blurred
in-plane (Gaussian, 1.5 pixels), stands in for a noiseless object, and two independent draws
of the noise a simulated dose adds to that case (low dose - normal dose, in each kernel's
texture) are added to it. A result's true noise is the SD of the difference of its two draws
over sqrt(2), in flat soft tissue (what a physicist measures on a repeated scan); the estimate
is `ldct.noise_level.scan_noise` of one result alone (the mean over the two draws).

``calibrate`` measures true / estimate at strengths 0, 0.2, ..., 1 for every shipped network on
the training slabs of `select_model.py` (both training cases, every kernel) and with
``--write`` stores the mean per strength, with the weights' SHA-256, in
models/noise_calibration.json (`ldct.registry.ModelInfo.noise_calibration`). ``check`` asks the
held-out case (never used to calibrate) for noise levels in every kernel, matched as
`ldct.infer.denoise_to_noise` matches them (the model's calibration), and reports the true
noise of each result against the asked level.

    python benchmarks/noise_estimate.py calibrate --data PREPARED_TRAIN --write
    python benchmarks/noise_estimate.py check --data PREPARED_TEST
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ldct import registry
from ldct.data import PreparedData
from ldct.infer import denoise
from ldct.io import CTVolume
from ldct.noise_level import blend, match_noise, noise_region, scan_noise
from ldct.simulate import KERNELS, simulate_low_dose

sys.path.insert(0, str(Path(__file__).parent))
from select_model import SLABS  # noqa: E402  (the selection's training slabs)

STRENGTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SEEDS = (21, 22)  # the two noise draws (training slabs); the check uses 0 and 1
LEVELS = (20.0, 15.0, 10.0)  # the default named levels low / medium / high (HU)
# levels between the full result's true noise and the input's (log scale), so that every model
# and kernel has levels in reach: near full strength, halfway
BETWEEN = (0.1, 0.5)
TOLERANCE = 0.10  # issue 37: a result within 10 % of the asked level


@dataclass
class Repeated:
    """One object (the blurred normal dose) under two independent draws of one kernel's noise,
    and the flat soft tissue (of slices 1..n-2) where noise is read."""

    draws: tuple[CTVolume, CTVolume]
    region: np.ndarray

    def true_noise(self, results: tuple[np.ndarray, np.ndarray]) -> float:
        difference = (results[0] - results[1])[1:-1][self.region]
        return float(difference.std() / np.sqrt(2))

    def estimate(self, results: tuple[np.ndarray, np.ndarray]) -> float:
        return float(np.mean([scan_noise(r, self.region) for r in results]))


def repeated(data: PreparedData, normal: CTVolume, dose: float, kernel: str,
             seeds: tuple[int, int]) -> Repeated:
    """The stand-in object with two draws of ``kernel``'s noise at ``dose``."""
    clean = np.stack([ndimage.gaussian_filter(s, 1.5) for s in normal.hu]).astype(np.float32)
    draws = tuple(normal.with_hu(clean + (simulate_low_dose(
        normal, data.simulation(dose, kernel), seed=seed, progress=False).hu - normal.hu))
        for seed in seeds)
    return Repeated(draws, noise_region(draws[0].hu))


def networks() -> list[str]:
    return [n for n in registry.names()
            if registry.get(n).kind == "network" and registry.get(n).available()]


def calibrate(args: argparse.Namespace) -> None:
    data = PreparedData(args.data)
    models = args.models or networks()
    ratios: dict[str, list[list[float]]] = {m: [] for m in models}  # per condition, per strength
    lines = ["# Noise calibration: true noise over the scan-noise estimate, training slabs", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Command: `python benchmarks/noise_estimate.py calibrate --data DIR --dose "
             f"{args.dose:g}{' --write' if args.write else ''}` (slabs "
             + ", ".join(f"{c} {a}-{b}" for c, a, b in SLABS) + f"; draws seeded {SEEDS})", "",
             "| slab | kernel | model | " + " | ".join(f"s={s:g}" for s in STRENGTHS) + " |",
             "|---|---|---|" + "---|" * len(STRENGTHS)]
    for case, first, stop in SLABS:
        if data.manifest["cases"][case]["role"] != "train":
            raise SystemExit(f"{case} is not a training case: calibrate on training data")
        whole = data.volume(case)
        normal = replace(whole, hu=whole.hu[first:stop])
        for kernel in args.kernels:
            rep = repeated(data, normal, args.dose, kernel, SEEDS)
            for model in models:
                fulls = [denoise(d, model, 1.0, device="cpu").hu for d in rep.draws]
                row = []
                for s in STRENGTHS:
                    results = tuple(blend(d.hu, f, s) for d, f in zip(rep.draws, fulls))
                    row.append(rep.true_noise(results) / rep.estimate(results))
                ratios[model].append(row)
                lines.append(f"| {case} {first}-{stop} | {kernel} | {model} | "
                             + " | ".join(f"{r:.3f}" for r in row) + " |")
                print(lines[-1], flush=True)
    factors = {m: [float(np.mean(column)) for column in zip(*rows)] for m, rows in ratios.items()}
    lines += ["", "## Stored factors (mean over slabs and kernels)", "",
              "| model | " + " | ".join(f"s={s:g}" for s in STRENGTHS) + " |",
              "|---|" + "---|" * len(STRENGTHS)]
    lines += [f"| {m} | " + " | ".join(f"{f:.3f}" for f in fs) + " |" for m, fs in factors.items()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.write:
        stored = registry.noise_calibrations()
        for model, fs in factors.items():
            info = registry.get(model)
            stored[model] = {"strengths": list(STRENGTHS), "factors": [round(f, 4) for f in fs],
                             "weights_sha256": registry.file_sha256(info.weights),
                             "measured_on": f"training slabs {SLABS}, kernels {args.kernels}, "
                                            f"dose {args.dose:g}, draws {SEEDS}; {args.out}"}
        registry.NOISE_CALIBRATION_FILE.write_text(json.dumps(stored, indent=1) + "\n")


def check(args: argparse.Namespace) -> None:
    data = PreparedData(args.data)
    case = data.cases("test")[0]
    whole = data.volume(case)
    start = (whole.hu.shape[0] - args.slices) // 2
    normal = replace(whole, hu=whole.hu[start:start + args.slices])
    models = args.models or networks()
    lines = [f"# target_noise on the held-out case: true noise against the asked level ({case}, "
             f"dose {args.dose:g}, {args.slices} slices)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Asked: the default named levels {', '.join(f'{v:g}' for v in LEVELS)} HU and, so "
             "that every model and kernel has levels in reach, full ** (1 - a) x input ** a of "
             "the full result's and the input's true noise for a = "
             f"{', '.join(f'{a:g}' for a in BETWEEN)}; a level out of reach takes the nearest "
             "strength and says so (`reached` no), and is not a miss. Calibration: "
             "models/noise_calibration.json (training slabs only).", "",
             f"Command: `python benchmarks/noise_estimate.py check --data DIR --dose "
             f"{args.dose:g} --slices {args.slices}`", "",
             "| kernel | model | asked HU | strength | true noise HU | true / asked | reached | "
             "raw estimate / true |", "|---|---|---|---|---|---|---|---|"]
    worst: dict[tuple[str, str], float] = {}
    for kernel in args.kernels:
        rep = repeated(data, normal, args.dose, kernel, (0, 1))
        given = rep.true_noise(tuple(d.hu for d in rep.draws))
        lines.append(f"| {kernel} | input | - | 0 | {given:.1f} | - | - | - |")
        for model in models:
            calibration = registry.get(model).noise_calibration()
            fulls = [denoise(d, model, 1.0, device="cpu").hu for d in rep.draws]
            at_full = rep.true_noise(tuple(fulls))
            between = (at_full ** (1 - a) * given ** a for a in BETWEEN)
            for asked in (*LEVELS, *between):
                # what denoise_to_noise does with the full result of the first draw
                strength, match = match_noise(rep.draws[0].hu, fulls[0], asked,
                                              calibration=calibration)
                results = tuple(blend(d.hu, f, strength) for d, f in zip(rep.draws, fulls))
                true = rep.true_noise(results)
                raw = rep.estimate(results) / true
                if match.reached:
                    key = (kernel, model)
                    worst[key] = max(worst.get(key, 0.0), abs(true / asked - 1))
                lines.append(f"| {kernel} | {model} | {asked:.1f} | {strength:.3f} | {true:.1f} |"
                             f" {true / asked:.2f} | {'yes' if match.reached else 'no'} | "
                             f"{raw:.2f} |")
                print(lines[-1], flush=True)
    misses = {k: v for k, v in worst.items() if v > TOLERANCE}
    lines += ["", f"Largest |true / asked - 1| over the reached levels: {max(worst.values()):.3f}; "
              f"{len(misses)} model-kernel pairs outside {TOLERANCE:.0%}"
              + (": " + ", ".join(f"{m} {k} ({v:.2f})" for (k, m), v in misses.items())
                 if misses else "") + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, out in (("calibrate", "benchmarks/quality/noise_calibration.md"),
                      ("check", "benchmarks/quality/noise_estimate.md")):
        sub = commands.add_parser(name)
        sub.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
        sub.add_argument("--dose", type=float, default=0.25)
        sub.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
        sub.add_argument("--models", nargs="+", help="networks (default: every shipped one)")
        sub.add_argument("--out", default=out)
    commands.choices["calibrate"].add_argument("--write", action="store_true",
                                               help="store the factors for target_noise")
    commands.choices["check"].add_argument("--slices", type=int, default=16,
                                           help="central slices of the held-out case")
    args = parser.parse_args()
    (calibrate if args.command == "calibrate" else check)(args)


if __name__ == "__main__":
    main()
