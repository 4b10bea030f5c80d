"""`ldct batch` scaling on this machine: slices/s with 1 and 2 Ray workers over the same
worklist, and the memory of the whole batch (driver, Ray and its workers) series by series.

    python benchmarks/batch_scaling.py [--series 50] [--size 256] [--slices 8] [--model vagan]

Writes benchmarks/batch_scaling.md. A folder of DICOM series (noisy phantoms) is denoised to a
folder, so the numbers are the workers' own (read, denoise, write); a PACS adds its transfer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from ldct.batch import worklist
from ldct.batch.ledger import Ledger
from ldct.batch.run import run_batch
from ldct.batch.workers import Job, model_version
from ldct.io import write_dicom_series
from ldct.phantom import make_phantom

REPORT = Path(__file__).with_name("batch_scaling.md")


def tree_rss_mb() -> float:
    """Resident memory of this process and all its descendants (local Ray runs under it)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def make_worklist(folder: Path, series: int, size: int, slices: int) -> None:
    base = make_phantom(size=size, slices=slices, seed=0).volume
    rng = np.random.default_rng(0)
    for k in range(series):
        noisy = base.with_hu(base.hu + rng.normal(0, 30, base.hu.shape).astype(np.float32))
        write_dicom_series(noisy, folder / f"s{k:03d}", description=f"LD bench {k}")


def run(folder: Path, workers: int, model: str, tmp: Path) -> dict:
    out = tmp / f"out-{workers}"
    job = Job(model, model_version(model), 1.0, out=str(out))
    memory: list[float] = []
    seen: list[tuple[float, int]] = []  # (time, slices) of each finished series

    def heard(outcome) -> None:
        memory.append(tree_rss_mb())
        seen.append((time.perf_counter(), outcome.slices))

    summary = run_batch(worklist.from_folder(folder), job, Ledger(out / "ledger.sqlite"),
                        out / "audit.log", workers=workers, progress=False, on_outcome=heard)
    # steady rate: the series after the first, over the time since it (worker start-up and
    # model loading excluded)
    steady = sum(n for _, n in seen[1:]) / (seen[-1][0] - seen[0][0])
    return {"workers": workers, "summary": summary, "memory": memory, "steady": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--model", default="vagan")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ldct-batch-bench-") as tmp:
        tmp = Path(tmp)
        make_worklist(tmp / "series", args.series, args.size, args.slices)
        load_before = os.getloadavg()
        runs = [run(tmp / "series", w, args.model, tmp) for w in (1, 2)]
        load_after = os.getloadavg()
    rate = {r["workers"]: r["steady"] for r in runs}
    lines = [
        "# `ldct batch` scaling on this machine",
        "",
        f"Command: `python benchmarks/batch_scaling.py --series {args.series} --size "
        f"{args.size} --slices {args.slices} --model {args.model}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"A folder of {args.series} DICOM series of {args.size}x{args.size}x{args.slices} "
        f"(noisy phantoms) denoised with `{args.model}` to a folder by local Ray workers "
        "(1 CPU each), the same worklist for each worker count. Machine: "
        f"{os.cpu_count()} cores, shared with other jobs: load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after, so these timings were "
        "taken under load: what the other jobs took varied during the runs.",
        "",
        "| workers | done | failed | slices | wall s (with start-up) | slices/s overall | "
        "slices/s steady |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        s = r["summary"]
        lines.append(f"| {r['workers']} | {s.done} | {s.failed} | {s.slices} | "
                     f"{s.wall_s:.1f} | {s.slices / s.wall_s:.2f} | {r['steady']:.2f} |")
    lines += ["", f"Ratio 2 workers / 1 worker (steady): **{rate[2] / rate[1]:.2f}x**. Steady: "
              "the series after the first, over the time since it (Ray start, worker start and "
              "model loading excluded; the overall rate includes them).", "",
              "Memory of the whole batch (driver + local Ray + workers, resident), sampled "
              "after each series:", "",
              "| workers | after series 1-10 (mean MB) | last 10 (mean MB) | max MB |",
              "|---:|---:|---:|---:|"]
    for r in runs:
        m = r["memory"]
        lines.append(f"| {r['workers']} | {np.mean(m[:10]):.0f} | {np.mean(m[-10:]):.0f} | "
                     f"{max(m):.0f} |")
    lines += ["", "Series are fetched and written by the workers; the driver holds UIDs and "
              "paths, and at most 2 series per worker are in flight, so memory does not grow "
              "with the worklist.", ""]
    REPORT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
