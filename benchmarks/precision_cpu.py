"""Benchmark: how far each CUDA precision moves every shipped network's HU from float32,
emulated on the CPU (`ldct.device.emulated_on_cpu`), on simulated quarter-dose slices of a
real scan - the measurement behind the policy in `ldct.device` (bound: mean < 0.5, max < 5 HU).

Run: `python benchmarks/precision_cpu.py --out benchmarks/precision_cpu.md` (float16 on a CPU is
slow: ~2 min per network for three 512x512 slices on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from pathlib import Path

import numpy as np
import torch

from ldct import registry
from ldct.device import INFERENCE, Precision, emulated_on_cpu
from ldct.infer import context_stack, load_network
from ldct.io import read_volume
from ldct.simulate import LowDoseParams, simulate_low_dose

BOUND_MEAN_HU, BOUND_MAX_HU = 0.5, 5.0
CANDIDATES = {"bfloat16 autocast (the policy before issue 33)": Precision(torch.bfloat16, True),
              "float16 autocast": Precision(torch.float16, True),
              "float32 with TF32 convolutions (PyTorch's default)": Precision(None, True),
              "IEEE float32 (the policy)": INFERENCE}
NETWORKS = [n for n in registry.names() if registry.get(n).kind == "network"]


def quarter_dose_slices(series: Path, centres: list[int], half: int = 2) -> np.ndarray:
    """Slices centre-half..centre+half of each centre, with simulated quarter dose."""
    volume = read_volume(series)
    picks = [k for c in centres for k in range(c - half, c + half + 1)]
    part = dataclasses.replace(volume, hu=volume.hu[picks].astype(np.float32))
    return simulate_low_dose(part, LowDoseParams(dose=0.25), seed=1, progress=False).hu


def errors(name: str, slabs: np.ndarray, half: int) -> dict[str, tuple[float, float, float]]:
    """(mean, p99, max) |HU - float32 HU| of the centre slices under every candidate."""
    net = load_network(name, "cpu")
    centres = range(half, slabs.shape[0], 2 * half + 1)
    x = torch.from_numpy(np.stack([context_stack(slabs, k, net.context) for k in centres]))
    out = {}
    with torch.inference_mode():
        reference = net(x).float()
        for label, policy in CANDIDATES.items():
            with emulated_on_cpu(net, policy):
                d = (net(x).float() - reference).abs()
            out[label] = (float(d.mean()), float(d.flatten().quantile(0.99)), float(d.max()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", default="../shared/data/ct/ircadb17/dicom")
    parser.add_argument("--centres", default="40,60,80")
    parser.add_argument("--out", default="benchmarks/precision_cpu.md")
    args = parser.parse_args()
    centres = [int(c) for c in args.centres.split(",")]
    slabs = quarter_dose_slices(Path(args.series), centres)
    lines = ["# CUDA precision emulated on the CPU: |HU - float32 HU| per network", "",
             f"Slices {args.centres} of `{args.series}` (512x512) with simulated quarter dose "
             "(`ldct.simulate`, seed 1), each with its context slices; every voxel of the "
             f"centre slices. Machine: {platform.machine()}, torch {torch.__version__}. "
             f"Bound: mean < {BOUND_MEAN_HU} HU and max < {BOUND_MAX_HU} HU.", "",
             f"Command: `python benchmarks/precision_cpu.py --centres {args.centres}`.", "",
             "| network | precision | mean HU | p99 HU | max HU | within bound |",
             "|---|---|---|---|---|---|"]
    for name in NETWORKS:
        for label, (mean, p99, worst) in errors(name, slabs, 2).items():
            ok = mean < BOUND_MEAN_HU and worst < BOUND_MAX_HU
            lines.append(f"| {name} | {label} | {mean:.3f} | {p99:.2f} | {worst:.2f} | "
                         f"{'yes' if ok else 'no'} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
