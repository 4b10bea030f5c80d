"""Benchmark (needs a CUDA GPU): seconds per 512x512 slice of every shipped network at batch
1, 8 and 32 in the inference policy (`ldct.device.INFERENCE`, IEEE float32) against the other
CUDA precisions, through the same `ldct.infer` path the server runs, with peak GPU memory and
the largest HU difference from the policy's result.

Run on a GPU machine: `bash benchmarks/cuda_check.sh` (it runs the CUDA tests first).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ldct import registry
from ldct.device import INFERENCE, Precision
from ldct.infer import _run_network, load_network
from ldct.phantom import make_phantom

NETWORKS = [n for n in registry.names() if registry.get(n).kind == "network"]
BATCHES = (1, 8, 32)
SLICES = 32
POLICIES = {"IEEE float32 (policy)": INFERENCE,
            "float32 + TF32 convs": Precision(None, True),
            "float16 autocast": Precision(torch.float16, True),
            "bfloat16 autocast (before)": Precision(torch.bfloat16, True)}


def timed(net, hu: np.ndarray, batch: int, policy: Precision, repeats: int
          ) -> tuple[float, float, np.ndarray]:
    """(best seconds per slice over ``repeats``, peak GiB, the result) after one warm-up."""
    device = torch.device("cuda")
    _run_network(net, hu[:batch], 1.0, device, batch, 1, False, policy=policy)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = _run_network(net, hu, 1.0, device, batch, 1, False, policy=policy)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / hu.shape[0])
    return best, torch.cuda.max_memory_allocated() / 2**30, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/cuda_precision.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark times the GPU path")
    volume = make_phantom(size=512, slices=SLICES, pixel_mm=0.7, seed=0).volume
    hu = volume.hu + np.random.default_rng(0).normal(0, 25, volume.hu.shape).astype(np.float32)
    lines = ["# CUDA inference per 512x512 slice: the precision policy against the others", "",
             f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
             f"{platform.machine()}; {SLICES} phantom slices with 25 HU white noise, one view, "
             f"best of {args.repeats} after a warm-up; data copied to and from the GPU "
             "included (the server's path). max dHU: largest |HU difference| from the "
             "policy's result on the same GPU.", "",
             "Command: `bash benchmarks/cuda_check.sh`.", "",
             "| network | batch | precision | ms/slice | peak GiB | max dHU |",
             "|---|---|---|---|---|---|"]
    for name in NETWORKS:
        net = load_network(name, "cuda")
        for batch in BATCHES:
            reference = None
            for label, policy in POLICIES.items():
                seconds, peak, out = timed(net, hu, batch, policy, args.repeats)
                reference = out if reference is None else reference
                diff = float(np.abs(out - reference).max())
                lines.append(f"| {name} | {batch} | {label} | {seconds * 1e3:.2f} | "
                             f"{peak:.2f} | {diff:.2f} |")
                print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
