"""Benchmark: is the server responsive and bounded under load (CPU, 127.0.0.1)?

Starts `ldct serve` with a fresh token file and a datastore holding a 512x512x40 phantom and a
small 128x128x4 one, creates a reader study, then measures:
1. while the 512x512x40 volume is denoised (vagan, default settings), the latency of
   `GET /info/` and of a reader's `GET .../next` (target: p95 < 200 ms);
2. 8 concurrent small requests: every answer is 200 or 503 (no 5xx, no connection error);
3. throughput and latency percentiles for 1, 2, 4 and 8 clients sending small requests;
4. the server process's memory (RSS) before and after 200 requests.
Run: `python benchmarks/server_load.py --out benchmarks/server_load.md`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import yaml

from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.processes import free_port, rss_mb, running, serve_command

SMALL = {"image": "small", "output": "json"}


def _percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} | {ms.max():.0f}")


def _timed(call) -> tuple[float, int]:
    start = time.perf_counter()
    status = call()
    return time.perf_counter() - start, status


def _small(url: str, auth: dict, model: str = "ldct-gauss") -> int:
    try:
        return requests.post(f"{url}/infer/{model}", params=SMALL, headers=auth,
                             timeout=300).status_code
    except requests.ConnectionError:
        return -1


def responsiveness(url: str, auth: dict, reader_url: str, reader: dict) -> list[str]:
    """Latency of /info/ and a reader's next item while the large volume is denoised."""
    done = threading.Event()
    result = {}

    def big():
        result["big"] = _timed(lambda: requests.post(
            f"{url}/infer/vagan", params={"image": "big", "output": "json"}, headers=auth,
            timeout=900).status_code)
        done.set()

    threading.Thread(target=big).start()
    while not any(j["state"] == "running" for j in
                  requests.get(f"{url}/jobs/", headers=auth, timeout=30).json()):
        time.sleep(0.05)  # polling until the large job runs
    info, nexts = [], []
    while not done.is_set() and len(info) < 100:
        info.append(_timed(lambda: requests.get(f"{url}/info/", headers=auth,
                                                timeout=30).status_code)[0])
        nexts.append(_timed(lambda: requests.get(reader_url, headers=reader,
                                                 timeout=30).status_code)[0])
    done.wait()
    seconds, status = result["big"]
    return ["| route during the 512x512x40 inference | samples | p50 ms | p95 ms | max ms |",
            "|---|---|---|---|---|",
            f"| GET /info/ | {len(info)} | {_percentiles(info)} |",
            f"| GET /study/.../next (reader) | {len(nexts)} | {_percentiles(nexts)} |", "",
            f"The 512x512x40 vagan request itself: {seconds:.1f} s, HTTP {status}."]


def concurrency(url: str, auth: dict) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _small(url, auth, "vagan"), range(8)))
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    return [f"8 concurrent small vagan requests: statuses {counts} "
            f"({'all 200 or 503' if set(statuses) <= {200, 503} else 'FAILED'})."]


def throughput(url: str, auth: dict, per_client: int) -> list[str]:
    lines = ["| clients | requests | requests/s | p50 ms | p95 ms | max ms | statuses |",
             "|---|---|---|---|---|---|---|"]
    for clients in (1, 2, 4, 8):
        def client(_):
            return [_timed(lambda: _small(url, auth, "vagan")) for _ in range(per_client)]

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            timings = [t for batch in pool.map(client, range(clients)) for t in batch]
        wall = time.perf_counter() - start
        statuses = sorted({s for _, s in timings})
        lines.append(f"| {clients} | {len(timings)} | {len(timings) / wall:.1f} | "
                     f"{_percentiles([t for t, _ in timings])} | {statuses} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/server_load.md")
    parser.add_argument("--per-client", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        studies = tmp / "studies"
        studies.mkdir()
        write_volume(make_phantom(size=512, slices=40, pixel_mm=0.74).volume,
                     studies / "big.nrrd", dtype="int16")
        write_volume(make_phantom(size=128, slices=4).volume, studies / "small.nrrd",
                     dtype="int16")
        store = TokenStore(tmp / "tokens.json")
        auth = {"Authorization": f"Bearer {store.add('bench', 'radiologist')}"}
        coordinator = {"Authorization": f"Bearer {store.add('coord', 'coordinator')}"}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = serve_command(str(studies), port, "--models", "vagan,ldct-gauss",
                                "--study-root", str(tmp / "reader-studies"), "--preload")
        with running(command, f"{url}/health", tmp / "server.log",
                     env={AUTH_FILE_ENV: str(store.path)}) as proc:
            study = {"name": "Load", "seed": 1, "presentation": "pairs", "readers": ["r1"],
                     "cases": [{"id": "c", "datastore": "small"}],
                     "conditions": [{"name": "original"}, {"name": "g", "model": "ldct-gauss"}],
                     "criteria": [{"name": "q", "question": "Q", "anchors": {1: "a", 5: "b"}}]}
            created = requests.post(f"{url}/study/", data=yaml.safe_dump(study), timeout=60,
                                    headers={"Content-Type": "text/plain", **coordinator}).json()
            while requests.get(f"{url}/study/load/status", headers=coordinator,
                               timeout=30).json()["state"] != "open":
                time.sleep(0.1)  # polling the study's preparation
            reader = {"Authorization": f"Bearer {created['reader_tokens']['r1']}"}
            _small(url, auth, "vagan")  # warm-up
            sections = responsiveness(url, auth, f"{url}/study/load/readers/r1/next", reader)
            sections += ["", *concurrency(url, auth), "",
                         *throughput(url, auth, args.per_client)]
            before = rss_mb(proc.pid)
            statuses = [_small(url, auth) for _ in range(200)]
            after = rss_mb(proc.pid)
    lines = ["# Server load: responsiveness, concurrency, throughput, memory (CPU, loopback)", "",
             f"`python benchmarks/server_load.py` on {os_summary()}. Small requests: "
             "128x128x4 by datastore id, `output=json`.", "", *sections, "",
             f"Server RSS before / after 200 small ldct-gauss requests: {before:.0f} MB / "
             f"{after:.0f} MB (statuses {sorted(set(statuses))}); median small request "
             f"time is in the table above."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def os_summary() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"


if __name__ == "__main__":
    main()
