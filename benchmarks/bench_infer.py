"""Benchmark: CPU (and CUDA when present) seconds per 512x512 slice and GFLOP per slice for
every denoiser network, through the same `ldct.infer` path the CLI and server use.

Run: `make bench` (or `python benchmarks/bench_infer.py --out benchmarks/infer_speed.md`).
Speed does not depend on the trained weights, so freshly built networks are timed when a
model has no weights yet (marked in the table). Each network is timed in one pass and with 4
views; the default (`ldct.infer.DEFAULT_ENSEMBLE` views per slice, what `ldct denoise` and the
server run unless told otherwise) is marked.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ldct import registry
from ldct.infer import DEFAULT_ENSEMBLE, _run_network, load_network

SLICES = 8


def gflop_per_slice(net: torch.nn.Module, context: int) -> float:
    x = torch.zeros(1, context, 512, 512)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/infer_speed.md")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    runs = sorted({1, 4, DEFAULT_ENSEMBLE})
    hu = np.random.default_rng(0).normal(40, 50, (SLICES, 512, 512)).astype(np.float32)
    lines = ["# Inference speed per 512x512 slice", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}; {SLICES} slices, batch 4, after one warm-up batch.", "",
             "Command: `make bench` (`python benchmarks/bench_infer.py`).", "",
             "| model | weights | parameters | GFLOP/slice (one pass) | " +
             " | ".join(f"{d.type} s/slice, {views} view{'s' * (views > 1)}"
                        + (" (default)" if views == DEFAULT_ENSEMBLE else "")
                        for d in devices for views in runs) + " |",
             "|---|---|---|---|" + "---|" * len(devices) * len(runs)]
    for name in registry.names():
        info = registry.get(name)
        if info.kind != "network":
            continue
        trained = info.weights.exists()
        net = load_network(name, "cpu") if trained else info.build().eval()
        cells = []
        for device in devices:
            net.to(device)
            _run_network(net, hu[:4], 1.0, device, 4, 1, False)  # warm-up
            for views in runs:
                start = time.perf_counter()
                _run_network(net, hu, 1.0, device, 4, views, False)
                cells.append(f"{(time.perf_counter() - start) / SLICES:.3f}")
        net.cpu()
        params = sum(p.numel() for p in net.parameters())
        lines.append(f"| {name} | {'trained' if trained else 'untrained'} | {params:,} | "
                     f"{gflop_per_slice(net, net.context):.1f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
