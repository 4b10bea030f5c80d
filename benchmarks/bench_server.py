"""Benchmark: a 512x512x100 volume through the MONAI Label server on the CPU.

Starts `ldct serve` on a free loopback port, uploads an int16 NRRD of the phantom (as the
Slicer extension sends it) and reports the request's total time, the model time the server
measured, and the overhead (upload, reading, writing, download). Target: overhead <= 25 %.
Run: `python benchmarks/bench_server.py --model vagan --out benchmarks/server_overhead.md`.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from monailabel.client import MONAILabelClient

from ldct.io import write_volume
from ldct.phantom import make_phantom


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vagan")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/server_overhead.md")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        volume = make_phantom(size=512, slices=args.slices, pixel_mm=0.74).volume
        upload = write_volume(volume, Path(tmp) / "ct.nrrd", dtype="int16")
        server = subprocess.Popen([sys.executable, "-m", "ldct.cli", "serve", "--studies", tmp,
                                   "--port", str(port), "--models", args.model, "--preload"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    requests.get(f"{url}/info/", timeout=2).raise_for_status()
                    break
                except requests.RequestException:
                    time.sleep(0.5)  # waiting for start-up
            client = MONAILabelClient(url, tmpdir=tmp)
            start = time.perf_counter()
            _, params = client.infer(args.model, "", {"result_dtype": "int16"}, file=str(upload))
            total = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    model_s = params["model_seconds"]
    overhead = total - model_s
    lines = ["# Server overhead: 512x512x%d through MONAI Label on the CPU" % args.slices, "",
             f"Model `{args.model}`, int16 NRRD upload, `result_dtype` int16, server on 127.0.0.1 "
             f"(load average {os.getloadavg()[0]:.1f} at the end; torch threads per "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}).", "",
             "Command: `python benchmarks/bench_server.py --model %s`." % args.model, "",
             "| total s | model s (server-measured) | overhead s | overhead % |",
             "|---|---|---|---|",
             f"| {total:.2f} | {model_s:.2f} | {overhead:.2f} | {100 * overhead / total:.1f} |"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
