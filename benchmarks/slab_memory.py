"""Benchmark: memory beyond the input and the result does not grow with the slices (issue 32).

For each case (a denoiser and the written voxel type) and each length (N and 4N slices of
512x512), a fresh Python process imports everything, warms up on two slices, then reads its
resident memory (VmRSS), makes the input volume, runs `ldct.infer.denoise` at strength 0.5
(the blend) and `ldct.io.write_volume` (.nrrd, compressed), and reports its peak (VmHWM).
extra = peak - (memory before + the input's bytes + the result's float32 bytes). Cases:
ldct-gauss (a baseline: slice-wise filter, then the blend) and n2n25d with its recursive
filter switched on (weight 0.5, the paper preset's: network, recursive filter, blend).
Run: `python benchmarks/slab_memory.py --out benchmarks/slab_memory.md` (PYTHONPATH at the
tree to measure: this branch, or a copy of main for the before).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, tempfile
import numpy as np
from ldct.infer import denoise, load_network
from ldct.io import CTVolume, write_volume

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

model, dtype, slices = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
def volume(n):
    hu = rng.standard_normal((n, 512, 512), dtype=np.float32)  # no float64 copy
    hu *= 20
    hu += 40
    return CTVolume(hu, (0.7, 0.7, 2.0))
if model != "ldct-gauss":
    load_network(model, "cpu").recursive = 0.5  # the paper preset's filter, on the shipped net
with tempfile.TemporaryDirectory() as folder:
    write_volume(denoise(volume(2), model, 0.5, device="cpu"), folder + "/w.nrrd", dtype=dtype)
    before = status("VmRSS")
    source = volume(slices)
    result = denoise(source, model, 0.5, device="cpu")
    write_volume(result, folder + "/r.nrrd", dtype=dtype)
    print(json.dumps({"before": before, "peak": status("VmHWM"), "input": source.hu.nbytes,
                      "result": result.hu.nbytes}))
"""

CASES = (("ldct-gauss", "float32"), ("ldct-gauss", "int16"), ("n2n25d", "float32"))


def measure(model: str, dtype: str, slices: int) -> dict[str, float]:
    """One fresh process's numbers (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, model, dtype, str(slices)],
                              capture_output=True, text=True, check=True, timeout=1800,
                              env={**os.environ, "TMPDIR": tmp})
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    mb = {k: v / 2**20 for k, v in raw.items()}
    mb["extra"] = mb["peak"] - mb["before"] - mb["input"] - mb["result"]
    return mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32, help="N (the long volume is 4N)")
    parser.add_argument("--label", default="this branch", help="what tree was measured")
    parser.add_argument("--out", type=Path, default=None, help="append the table here")
    args = parser.parse_args()
    lines = [f"### {args.label}", "",
             f"512x512 slices; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs; MB", "",
             "| denoiser | written as | slices | input | result | peak over before | extra |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for model, dtype in CASES:
        for slices in (args.slices, 4 * args.slices):
            m = measure(model, dtype, slices)
            lines.append(f"| {model} | {dtype} | {slices} | {m['input']:.0f} | "
                         f"{m['result']:.0f} | {m['peak'] - m['before']:.0f} | "
                         f"{m['extra']:.0f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n\n"
    if args.out:
        with open(args.out, "a") as out:
            out.write(text)
    print(text)


if __name__ == "__main__":
    main()
