"""Benchmark: memory of the Slicer module's results of a 512x512x600 CT, one and three at once.

Run: `.venv/bin/python benchmarks/slicer_results_memory.py --out
benchmarks/slicer_results_memory.md` (slicer-core from the venv gives real MRML volume nodes).

On real MRML, through the Logic the panel uses: the input node (int16), the upload file
written from it, then three results of the server's full-strength answer (an int16 NRRD with
the input's geometry) loaded at strength 0.6 side by side (replace off), the difference shown
and hidden, and the full-strength voxels released as the panel does after a while. The process's
resident memory (VmRSS) and its high-water mark (VmHWM, reset through /proc/self/clear_refs)
are read from /proc: what VTK, ITK and numpy hold, whatever the load of the machine (memory,
unlike time, does not depend on it).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "slicer_extension" / "LowDoseCTDenoise"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_export_memory import ct_node, rss_mb  # noqa: E402 - the same CT, the same reading

SHAPE = (600, 512, 512)  # slices, rows, columns
STRENGTH = 0.6


def _reset_peak() -> float:
    """The high-water mark := the resident memory now, which is returned."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb()


def measure(folder: Path) -> dict:
    import slicer
    from LowDoseCTDenoiseLib.logic import LowDoseCTDenoiseLogic
    from LowDoseCTDenoiseLib.transfer import write_nrrd

    empty = rss_mb()
    node = ct_node(SHAPE)
    logic = LowDoseCTDenoiseLogic()
    input_mb = slicer.util.arrayFromVolume(node).nbytes / 2**20
    export = logic.prepare_export(node)
    # the server's answer: the input minus 7 HU, int16, the input's geometry (as it sends it)
    answer = write_nrrd(folder / "full.nrrd", export.header,
                        (s - 7 for s in slicer.util.arrayFromVolume(node)))
    with_input = _reset_peak()
    logic.export_input(node, folder / "upload.nrrd")  # the upload file (the panel's worker)
    upload_peak = rss_mb("VmHWM") - with_input
    rows = []
    for k in range(3):
        before = _reset_peak()
        result = logic.load_result(answer, node, "vagan", STRENGTH)
        logic.show_side_by_side(node, result)
        rows.append({"result": k + 1, "load_peak_mb": rss_mb("VmHWM") - before,
                     "after_mb": rss_mb() - with_input})
    before = _reset_peak()
    logic.show_difference(True)
    shown = rss_mb() - before
    difference_peak = rss_mb("VmHWM") - before
    logic.show_difference(False)
    hidden = rss_mb() - before
    logic.release_full()
    steady = rss_mb() - with_input
    return {"input_mb": input_mb, "process_before_input_mb": empty,
            "input_rss_mb": with_input - empty, "upload_peak_mb": upload_peak, "rows": rows,
            "difference_shown_mb": shown, "difference_peak_mb": difference_peak,
            "difference_hidden_mb": hidden, "steady_three_mb": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/slicer_results_memory.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ldct-bench-") as folder:
        r = measure(Path(folder))
    budget = 1.2 * 3 * r["input_mb"]
    lines = [
        "# Slicer module: memory of results (512x512x600 CT)", "",
        "Command: `.venv/bin/python benchmarks/slicer_results_memory.py --out "
        f"{args.out}`", "",
        f"Real MRML (slicer-core) in one process on {platform.machine()} "
        f"({platform.python_version()}); resident memory read from /proc (VmRSS, VmHWM). The "
        "machine is shared and loaded: that changes times, not these byte counts.", "",
        f"- Input: {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} int16 node, {r['input_mb']:.0f} MB of "
        f"voxels ({r['input_rss_mb']:.0f} MB resident).",
        f"- Writing the upload file (gzip NRRD, a slice at a time): peak "
        f"+{r['upload_peak_mb']:.0f} MB.", "",
        f"| result at strength {STRENGTH:g} | peak while loading (MB) | resident above the "
        "input after it (MB) |", "|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['result']} | +{row['load_peak_mb']:.0f} | {row['after_mb']:.0f} |")
    verdict = "within" if r["steady_three_mb"] <= budget else "OVER"
    lines += [
        "",
        f"- Difference shown (int16, made on demand): +{r['difference_shown_mb']:.0f} MB "
        f"(peak +{r['difference_peak_mb']:.0f} MB); hidden again: "
        f"{r['difference_hidden_mb']:+.0f} MB (freed with its node).",
        f"- Three results side by side once the full-strength voxels are released (the panel "
        f"does it {120} s after the last strength change): **{r['steady_three_mb']:.0f} MB** "
        f"above the input, {verdict} the budget of 1.2 x three int16 copies of the input "
        f"({budget:.0f} MB).",
        "- Before release, the last result also keeps its full-strength int16 voxels (one "
        "input's worth) so that a new strength is blended at once, without an upload.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
