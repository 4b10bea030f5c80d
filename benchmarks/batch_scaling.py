"""`ldct batch` scaling on this machine: slices/s with 1 and 2 Ray workers over the same
worklist, and the memory of the whole batch (driver, Ray and its workers) series by series.

    python benchmarks/batch_scaling.py [--series 50] [--size 256] [--slices 8] [--model vagan]
        [--pacs http://127.0.0.1:8042/dicom-web]

Writes benchmarks/batch_scaling.md. A folder of DICOM series (noisy phantoms) is denoised to a
folder (the workers' own work: read, denoise, write); with --pacs URL the same series are also
stored in that PACS and denoised from it back into it (query, fetch, STOW-RS).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pydicom

from ldct.batch import dicomweb, worklist
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


def run(items: list, job: Job, workers: int, home: Path) -> dict:
    """One batch; its summary, the memory after each series and the steady rate."""
    memory: list[float] = []
    seen: list[tuple[float, int]] = []  # (time, slices) of each finished series
    derived: list[str] = []

    def heard(outcome) -> None:
        memory.append(tree_rss_mb())
        seen.append((time.perf_counter(), outcome.slices))
        derived.append(outcome.derived)

    summary = run_batch(items, job, Ledger(home / "ledger.sqlite"), home / "audit.log",
                        workers=workers, progress=False, on_outcome=heard)
    # steady rate: the series after the first, over the time since it (worker start-up and
    # model loading excluded)
    steady = sum(n for _, n in seen[1:]) / (seen[-1][0] - seen[0][0])
    return {"workers": workers, "summary": summary, "memory": memory, "steady": steady,
            "derived": derived}


def folder_runs(folder: Path, model: str, tmp: Path) -> list[dict]:
    """The worklist from a folder to a folder, with 1 then 2 workers."""
    return [run(list(worklist.from_folder(folder)),
                Job(model, model_version(model), 1.0, out=str(tmp / f"out-{w}")), w,
                tmp / f"out-{w}") for w in (1, 2)]


def pacs_runs(url: str, folder: Path, model: str, tmp: Path) -> list[dict]:
    """The worklist stored in the PACS, then read and written back (STOW-RS) with 1 then 2
    workers (strengths 1 and 0.9, so that the second run's results are new series)."""
    tag = uuid.uuid4().hex[:8]
    pacs = dicomweb.client(url)
    for k, series in enumerate(sorted(folder.iterdir())):
        datasets = [pydicom.dcmread(f) for f in sorted(series.iterdir())]
        for ds in datasets:
            ds.SeriesDescription = f"LD bench {tag} {k}"
        pacs.store_instances(datasets)
    runs, results = [], set()
    for workers, strength in ((1, 1.0), (2, 0.9)):
        items = list(worklist.from_query(url, description=f"LD bench {tag} *",
                                         exclude=results))
        job = Job(model, model_version(model), strength, source_pacs=url, write_pacs=url)
        runs.append(run(items, job, workers, tmp / f"pacs-{workers}"))
        results |= set(runs[-1]["derived"])
    return runs


def table(title: str, runs: list[dict]) -> list[str]:
    lines = [f"### {title}", "",
             "| workers | done | failed | slices | wall s (with start-up) | slices/s overall | "
             "slices/s steady |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        s = r["summary"]
        lines.append(f"| {r['workers']} | {s.done} | {s.failed} | {s.slices} | "
                     f"{s.wall_s:.1f} | {s.slices / s.wall_s:.2f} | {r['steady']:.2f} |")
    ratio = runs[1]["steady"] / runs[0]["steady"]
    lines += ["", f"Ratio 2 workers / 1 worker (steady): **{ratio:.2f}x**.",
              "", "| workers | memory, series 1-10 (mean MB) | last 10 (mean MB) | max MB |",
              "|---:|---:|---:|---:|"]
    for r in runs:
        m = r["memory"]
        lines.append(f"| {r['workers']} | {np.mean(m[:10]):.0f} | {np.mean(m[-10:]):.0f} | "
                     f"{max(m):.0f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--model", default="vagan")
    parser.add_argument("--pacs", help="also through this DICOMweb PACS (stored, read, written "
                                       "back); e.g. a local Orthanc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ldct-batch-bench-") as tmp:
        tmp = Path(tmp)
        make_worklist(tmp / "series", args.series, args.size, args.slices)
        load_before = os.getloadavg()
        folder = folder_runs(tmp / "series", args.model, tmp)
        pacs = pacs_runs(args.pacs, tmp / "series", args.model, tmp) if args.pacs else []
        load_after = os.getloadavg()
    command = (f"python benchmarks/batch_scaling.py --series {args.series} --size {args.size} "
               f"--slices {args.slices} --model {args.model}"
               + (" --pacs http://127.0.0.1:PORT/dicom-web" if args.pacs else ""))
    lines = [
        "# `ldct batch` scaling on this machine", "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", "",
        f"{args.series} DICOM series of {args.size}x{args.size}x{args.slices} (noisy phantoms) "
        f"denoised with `{args.model}` by local Ray workers (1 CPU each), the same worklist for "
        f"each worker count. Machine: {os.cpu_count()} cores, shared with other jobs: load "
        f"average {load_before[0]:.1f} before and {load_after[0]:.1f} after, so these timings "
        "were taken under load: what the other jobs took varied during the runs. Steady rate: "
        "the series after the first, over the time since it (Ray start, worker start and model "
        "loading excluded; the overall rate includes them). Memory: the whole batch (driver, "
        "local Ray, workers), resident, sampled after each series.", "",
        *table("A folder of series to a folder", folder)]
    if pacs:
        lines += table("Through a PACS: query, WADO-RS fetch, STOW-RS write-back (Orthanc on "
                       "this machine)", pacs)
    lines += ["Series are fetched and written by the workers; the driver holds UIDs and paths, "
              "and at most 2 series per worker are in flight, so memory does not grow with the "
              "worklist.", ""]
    REPORT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
