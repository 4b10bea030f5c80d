"""The QA report: ``qa.csv`` (one row per model x dose x kernel x size x insert), the
CT-number table ``qa_ctnumbers.csv``, ``qa.md`` and its figures."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from ldct.qa import phantoms
from ldct.qa.run import INPUT, TTF_INSERTS, Settings
from ldct.qa.summary import GATE_DOSE, Tables

COLUMNS = ("model", "dose", "kernel", "size_mm", "insert", "dprime", "dprime_low",
           "dprime_high", "auc", "auc_low", "auc_high", "dprime_input", "delta_dprime",
           "delta_low", "delta_high", "detectability_loss", "dose_needed", "dose_reduction",
           "noise_sd_hu", "nps_mean_cpmm", "nps_peak_cpmm", "nps_mean_ratio", "ttf50_high",
           "ttf10_high", "ttf50_low", "ttf10_low", "ttf_cnr_high", "ttf_cnr_low",
           "ct_max_abs_error_hu")
TTF_MIN_CNR = 5.0  # the report shows a TTF only where its edge stands this far above the noise
CT_COLUMNS = ("model", "dose", "kernel", "size_mm", "material", "nominal_hu", "hu",
              "error_vs_full_dose_hu", "ttf50_cpmm", "ttf10_cpmm")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[_fmt(r[c]) for c in columns] for r in rows])


def _figures(tables: Tables, settings: Settings, models: list[str], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    sizes = sorted({r["size_mm"] for r in tables.rows})
    kernels = [k for k in settings.kernels if any(r["kernel"] == k for r in tables.rows)]
    if not sizes:
        return names
    # d' vs dose per size (mean over the four rods), one row per kernel
    fig, axes = plt.subplots(len(kernels), len(sizes), figsize=(3.2 * len(sizes),
                                                                 2.8 * len(kernels)),
                             squeeze=False, sharex=True)
    for i, kernel in enumerate(kernels):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            for m in models:
                pts = sorted((r["dose"], r["dprime"]) for r in tables.rows
                             if r["model"] == m and r["kernel"] == kernel
                             and r["size_mm"] == size)
                by = {}
                for a, d in pts:
                    by.setdefault(a, []).append(d)
                ax.plot(list(by), [np.mean(v) for v in by.values()], marker="o",
                        lw=2.5 if m == INPUT else 1, color="k" if m == INPUT else None,
                        label=m)
            ax.set_title(f"{kernel}, {size:g} mm", fontsize=9)
            ax.set_xscale("log")
            if i == len(kernels) - 1:
                ax.set_xlabel("dose fraction")
            if j == 0:
                ax.set_ylabel("mean d' (4 rods)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "qa_dprime.png", dpi=90)
    plt.close(fig)
    names.append("qa_dprime.png")
    size = 200.0 if 200.0 in sizes else sizes[0]
    dose = GATE_DOSE if GATE_DOSE in settings.doses else min(settings.doses)
    for what, title, curves in (
            ("nps", "NPS (HU^2 mm^2)", {(m, k): tables.nps.get((m, dose, k, size))
                                       for m in models for k in kernels}),
            ("ttf", "TTF", {(m, k, c): tables.ttf.get((m, dose, k, size, material))
                            for m in models for k in kernels
                            for c, material in TTF_INSERTS.items()})):
        panels = sorted({key[1:] for key in curves})
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            for m in models:
                curve = curves.get((m, *panel))
                if curve is not None:
                    ax.plot(*curve, lw=2.5 if m == INPUT else 1,
                            color="k" if m == INPUT else None, label=m)
            ax.set_title(f"{', '.join(panel)}; {size:g} mm, dose {dose:g}", fontsize=9)
            ax.set_xlabel("cycles/mm")
            ax.set_ylabel(title)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"qa_{what}.png", dpi=90)
        plt.close(fig)
        names.append(f"qa_{what}.png")
    return names


def write_report(tables: Tables, summaries: dict[str, dict[str, Any]], settings: Settings,
                 models: list[str], out: Path, command: str, recommended: str | None = None
                 ) -> Path:
    """qa.csv, qa_ctnumbers.csv, figures and qa.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(tables.rows, COLUMNS, out / "qa.csv")
    write_csv(tables.ct_rows, CT_COLUMNS, out / "qa_ctnumbers.csv")
    figures = _figures(tables, settings, models, out)
    sizes = sorted({r["size_mm"] for r in tables.rows})
    lines = [
        "# Task-based image quality: CT numbers, noise texture, resolution, low-contrast "
        "detectability", "",
        f"Command: `{command}`. Written by `ldct qa` (`ldct/qa/`); per-condition results are "
        "cached, so the same command resumes a stopped run and rewrites this report. Timings: "
        "a 2-core machine shared with other jobs.", "",
        "## What was scanned", "",
        f"- Patient sizes measured: {', '.join(f'{s:g}' for s in sizes)} mm "
        f"(of {', '.join(f'{s:g}' for s in sorted(settings.sizes))}); water cylinders, field "
        f"of view {phantoms.FOV_FACTOR:g} x the diameter on a {settings.matrix}^2 matrix (so "
        "the pixel shrinks with the patient, as a clinical reconstruction fitted to the body).",
        f"- Doses {', '.join(f'{a:g}' for a in settings.doses)} of full; kernels "
        f"{', '.join(settings.kernels)} (the simulator's smooth soft-tissue and sharp "
        "edge-enhancing body kernels); full-dose tube output scaled with size as an exposure "
        "control would (`ldct/qa/scan.py`).",
        "- CT-number module: Catphan CTP404 materials at pylinac's nominal CT numbers "
        "(jrkerns/pylinac `pylinac/ct.py`), 12.2 mm inserts on a ring at 0.585 of the radius.",
        "- Low-contrast module: CCT189 (MITA-LCD) as the FDA LCD-CT toolbox models it "
        "(DIDSR/LCD_CT `LCD phantom creation/CCT189_obj.m`): rods of 3, 5, 7, 10 mm at 14, 7, "
        "5, 3 HU at 0.4 of the radius; the signal-absent module is the same cylinder without "
        "rods, which is also the uniform water section (noise, NPS).",
        f"- Per size, {settings.pairs} signal-present and {settings.pairs} signal-absent "
        f"scans (half train, half test), {settings.ct_scans} CT-module scans, NPS from "
        f"{settings.nps_scans} water scans; noise simulated once per scan and shared by "
        "every model (models denoise patches around the ROIs, realizations as slices).", "",
        "## Method", "",
        "- Observer: channelized Hotelling, 5 Laguerre-Gauss channels of width 2/3 of the "
        "rod's radius (as the LCD-CT toolbox), signal known exactly at a known location, "
        "trained on one half and tested on the other; d' from the test scores, AUC by "
        f"Mann-Whitney; 95 % intervals from {settings.bootstrap} bootstrap replicates of "
        "both halves. Validated in `tests/test_qa.py` against the ideal observer on white "
        "noise.",
        "- Detectability loss (red): the model's d' below the input's at the same dose, "
        "kernel, size and rod, with the whole 95 % interval of the paired difference (same "
        "scans, same bootstrap draws) below zero.",
        "- Dose-reduction estimate: per kernel, size and rod, the lowest dose at which the "
        "model's d' reaches the input's full-dose d' (d'^2 linear in dose between grid doses; "
        "the lowest grid dose when already reached there), as 1 - that dose; 0 when never "
        "reached; only for tasks whose full-dose input d' interval is above zero.",
        "- Noise SD and NPS (ICRU 87) on the water centre after removing the ensemble mean; "
        "NPS mean frequency (AAPM TG-233's f_av, sum f NPS(f) / sum NPS(f) over the radial "
        "NPS) against the input's at full dose (below 1: the texture moved to "
        "low frequencies, the 'plastic' look). TTF from the insert edges on the mean of the "
        f"CT-module scans (high contrast: {TTF_INSERTS['high']}, +365 HU; low contrast: "
        f"{TTF_INSERTS['low']}, -47 HU).",
        "- Precision: the four rods of a size share its scans (each rod's samples are the same "
        "scan regions, turned) and every dose reuses the same noise draws (scaled), so a size's "
        "d' values rise or fall together with its draw; with half the samples training the "
        "template, the CHO's d' is biased low where the signal is weak. Compare models within "
        "a condition (the losses are paired), not one size with another; more scans "
        "(`--pairs`) narrow the intervals.", ""]
    lines += ["## Verdict per model", "",
              "| model | dose-reduction estimate: median (smallest) | tasks | losses at dose "
              f">= {GATE_DOSE:g} | losses below it |",
              "|---|---|---|---|---|"]
    for m, s in summaries.items():
        if s["dose_reduction_median"] is None:
            reduction = "n/a"
        else:
            reduction = (f"{100 * s['dose_reduction_median']:.0f} % "
                         f"({100 * s['dose_reduction_smallest']:.0f} %)")
        losses = len(s["detectability_losses"])
        shown = f'<span style="color:red">**{losses}**</span>' if losses else "0"
        lines.append(f"| {m}{' (recommended)' if m == recommended else ''} | {reduction} | "
                     f"{s['tasks_measured']} | {shown} | {s['losses_below_gate_dose']} |")
    lines += ["", "## Detectability losses (red) at dose >= "
              f"{GATE_DOSE:g}", ""]
    lost = [(m, loss) for m, s in summaries.items() for loss in s["detectability_losses"]]
    if lost:
        lines += ["| model | dose | kernel | size mm | rod | d' | input d' | difference 95 % |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f'| <span style="color:red">{m}</span> | {x["dose"]:g} | {x["kernel"]} | '
                  f'{x["size_mm"]:g} | {x["insert"]} | {x["dprime"]:.2f} | '
                  f'{x["dprime_input"]:.2f} | [{x["delta_low"]:+.2f}, {x["delta_high"]:+.2f}] |'
                  for m, x in lost]
    else:
        lines.append("None.")
    lines += ["", "## d' per condition (mean over the four rods; per-rod values with "
              "intervals in `qa.csv`)", ""]
    lines += _condition_table(tables.rows, models, "dprime", "{:.2f}")
    lines += ["", "## Noise SD (HU) / NPS mean frequency ratio to the full-dose input", ""]
    lines += _condition_table(tables.rows, models, ("noise_sd_hu", "nps_mean_ratio"),
                              "{:.0f} / {:.2f}", per_rod=False)
    lines += ["", "## TTF50 (cycles/mm): high contrast / low contrast", "",
              f"'-' where the averaged scans' contrast-to-noise ratio (insert contrast x "
              f"sqrt({settings.ct_scans} scans) / noise SD) is below {TTF_MIN_CNR:g}: there "
              "the edge is lost in the noise and the TTF says nothing (all values, with that "
              "ratio, in `qa.csv`).", ""]
    for row in tables.rows:
        for contrast in TTF_INSERTS:
            row[f"ttf50_{contrast}_shown"] = (row[f"ttf50_{contrast}"]
                                              if row[f"ttf_cnr_{contrast}"] >= TTF_MIN_CNR
                                              else float("nan"))
    lines += _condition_table(tables.rows, models, ("ttf50_high_shown", "ttf50_low_shown"),
                              "{:.2f} / {:.2f}", per_rod=False)
    lines += ["", f"## CT numbers at dose {GATE_DOSE:g} (HU; error against the full-dose "
              "input in brackets; all doses in `qa_ctnumbers.csv`)", ""]
    lines += _ct_table(tables.ct_rows, models)
    lines += ["", "## Figures", "", *(f"![{f}]({f})" for f in figures)]
    if tables.missing:
        lines += ["", "## Not yet measured", "",
                  f"{len(tables.missing)} model x condition results are not in the cache "
                  "(their size and kernel are left out above): "
                  + ", ".join(sorted({' '.join(x.split()[1:3]) for x in tables.missing}))
                  + ". Run the same command again to finish them."]
    (out / "qa.md").write_text("\n".join(lines) + "\n")
    return out / "qa.md"


def _condition_table(rows: list[dict[str, Any]], models: list[str], key: str | tuple,
                     fmt: str, per_rod: bool = True) -> list[str]:
    keys = (key,) if isinstance(key, str) else key
    conditions = sorted({(r["size_mm"], r["kernel"], r["dose"]) for r in rows})
    lines = ["| size mm | kernel | dose | " + " | ".join(models) + " |",
             "|---|---|---|" + "---|" * len(models)]
    for size, kernel, dose in conditions:
        cells = []
        for m in models:
            mine = [r for r in rows if (r["size_mm"], r["kernel"], r["dose"], r["model"])
                    == (size, kernel, dose, m)]
            values = [np.mean([r[k] for r in mine]) for k in keys]
            cell = fmt.format(*values).replace("nan", "-")
            if per_rod and any(r["detectability_loss"] for r in mine):
                cell = f'<span style="color:red">{cell}</span>'
            cells.append(cell)
        lines.append(f"| {size:g} | {kernel} | {dose:g} | " + " | ".join(cells) + " |")
    return lines


def _ct_table(ct_rows: list[dict[str, Any]], models: list[str]) -> list[str]:
    picked = [r for r in ct_rows if r["dose"] == GATE_DOSE]
    lines = ["| size mm | kernel | material | nominal | " + " | ".join(models) + " |",
             "|---|---|---|---|" + "---|" * len(models)]
    for size, kernel, name in sorted({(r["size_mm"], r["kernel"], r["material"])
                                      for r in picked}):
        cell = {r["model"]: f"{r['hu']:.0f} ({r['error_vs_full_dose_hu']:+.1f})"
                for r in picked if (r["size_mm"], r["kernel"], r["material"])
                == (size, kernel, name)}
        nominal = dict(phantoms.CTP404)[name]
        lines.append(f"| {size:g} | {kernel} | {name} | {nominal:g} | "
                     + " | ".join(cell.get(m, "") for m in models) + " |")
    return lines
