"""Benchmark: a 512x512x100 volume through the MONAI Label server on the CPU.

Starts `ldct serve` on a free loopback port, uploads an int16 NRRD of the phantom (as the
Slicer extension sends it) and reports the request's total time, the model time the server
measured, and the overhead (upload, reading, writing, download). Target: overhead <= 25 %.
Run: `python benchmarks/bench_server.py --model vagan --out benchmarks/server_overhead.md`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from monailabel.client import MONAILabelClient

from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.processes import free_port, running, serve_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vagan")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/server_overhead.md")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        volume = make_phantom(size=512, slices=args.slices, pixel_mm=0.74).volume
        upload = write_volume(volume, Path(tmp) / "ct.nrrd", dtype="int16")
        store = TokenStore(Path(tmp) / "tokens.json")
        token = store.add("bench", "radiologist")
        command = serve_command(tmp, port, "--models", args.model, "--preload")
        with running(command, f"{url}/health", Path(tmp) / "server.log",
                     env={AUTH_FILE_ENV: str(store.path)}):
            client = MONAILabelClient(url, tmpdir=tmp)
            client.update_auth({"token_type": "Bearer", "access_token": token})
            start = time.perf_counter()
            _, params = client.infer(args.model, "", {"result_dtype": "int16"}, file=str(upload))
            total = time.perf_counter() - start
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
