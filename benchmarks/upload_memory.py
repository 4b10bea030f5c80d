"""Benchmark: eight concurrent large uploads stay within one decode's memory (issue 32).

Starts `ldct serve` (denoiser ldct-gauss, so that decoding and the result, not a network, set
the memory) with a fresh token file, sends 8 uploads of a 512x512xSLICES int16 NRRD at once,
and samples every 20 ms the resident memory (RSS) of the server process and of the server with
its decoding children. The uploads wait on disk and decode one at a time in the worker (each
in a child process, `ldct.server.decode`), so the peak should be about one volume's pipeline,
not eight. Run: `python benchmarks/upload_memory.py --out benchmarks/upload_memory.md`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.processes import free_port, running, serve_command


class Sampler(threading.Thread):
    """Peak RSS (MB) of a process and of it with its children, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.stop = psutil.Process(pid), threading.Event()
        self.server_mb = self.tree_mb = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                server = self.process.memory_info().rss / 2**20
                children = sum(c.memory_info().rss for c in self.process.children(True)) / 2**20
            except psutil.Error:
                continue  # a child ended while it was read
            self.server_mb = max(self.server_mb, server)
            self.tree_mb = max(self.tree_mb, server + children)
            time.sleep(0.02)  # the sampling period


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/upload_memory.md")
    parser.add_argument("--slices", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ[AUTH_FILE_ENV] = str(tmp / "tokens.json")
        auth = {"Authorization": f"Bearer {TokenStore().add('bench', 'radiologist')}"}
        (tmp / "studies").mkdir()
        volume = make_phantom(size=512, slices=args.slices, pixel_mm=0.74).volume
        upload = write_volume(volume, tmp / "upload.nrrd", dtype="int16",
                              compress=False).read_bytes()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with running(serve_command(str(tmp / "studies"), port, "--models", "ldct-gauss"),
                     f"{url}/health", tmp / "server.log") as proc:
            requests.post(f"{url}/infer/ldct-gauss", params={"output": "json"}, headers=auth,
                          files={"file": ("warm.nrrd", upload)}, timeout=600)  # warm-up
            idle = psutil.Process(proc.pid).memory_info().rss / 2**20

            def send(k: int) -> int:
                return requests.post(f"{url}/infer/ldct-gauss", params={"output": "json"},
                                     headers=auth, files={"file": (f"v{k}.nrrd", upload)},
                                     timeout=1800).status_code

            runs = {}
            for clients in (1, 8):
                sampler = Sampler(proc.pid)
                sampler.start()
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    statuses = list(pool.map(send, range(clients)))
                sampler.stop.set()
                sampler.join()
                runs[clients] = (sampler, statuses, time.perf_counter() - started)
    voxels = volume.hu.size
    lines = [
        "# Eight concurrent large uploads: memory", "",
        f"Command: `python benchmarks/upload_memory.py --slices {args.slices}`; "
        f"{platform.machine()}, {os.cpu_count()} CPUs (a shared, loaded machine: times are "
        "indicative).", "",
        f"Uploads of a 512x512x{args.slices} int16 NRRD ({len(upload) / 2**20:.0f} MB each, "
        f"{voxels / 1e6:.1f} M voxels, {voxels * 4 / 2**20:.0f} MB as float32), denoiser "
        f"ldct-gauss, after one warm-up request; server idle at {idle:.0f} MB RSS.", "",
        "| uploads at once | statuses | seconds | server peak RSS MB | with decoding children |",
        "|---|---|---|---|---|"]
    for clients, (sampler, statuses, wall) in runs.items():
        lines.append(f"| {clients} | {sorted(set(statuses))} | {wall:.0f} | "
                     f"{sampler.server_mb:.0f} (+{sampler.server_mb - idle:.0f}) | "
                     f"{sampler.tree_mb:.0f} (+{sampler.tree_mb - idle:.0f}) |")
    lines += ["", "The uploads wait on disk and are decoded and denoised one at a time in the "
              "worker (the queue admits at most `LDCT_QUEUE_LIMIT`=8 and answers 503 beyond), "
              "so eight at once should peak about where one does; eight decodes at once would "
              f"hold at least 8 x {voxels * 4 / 2**20:.0f} MB of float32 input alone."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
