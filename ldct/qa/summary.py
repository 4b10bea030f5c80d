"""From the cached measurements to the verdicts: d' and AUC with intervals per model, dose,
kernel, size and insert; detectability losses against the input at the same dose; the
dose-reduction estimate; texture, resolution and CT-number columns; one summary per model.

Losses are paired: a model and the input are scored on the same scans, and every bootstrap
replicate draws the same scans for both, so the interval of their d' difference carries only
what the model changed. A loss is a difference whose whole 95 % interval lies below zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldct.qa import phantoms
from ldct.qa.observer import Split, detectability
from ldct.qa.run import INPUT, TTF_INSERTS, Cache, Settings

GATE_DOSE = 0.25  # the selection rule checks detectability at this dose and above


def dose_needed(doses: list[float], dprimes: list[float], target: float) -> float | None:
    """The lowest dose at which d' reaches ``target``, with d'^2 linear in dose between grid
    points (exact for a linear method in quantum noise); the lowest grid dose when d' is
    already there, None when it never gets there."""
    if dprimes[0] >= target:
        return doses[0]
    for (a0, d0), (a1, d1) in zip(zip(doses, dprimes), zip(doses[1:], dprimes[1:])):
        if d1 >= target:
            s0, s1 = math.copysign(d0 * d0, d0), d1 * d1
            return a0 + (target * target - s0) * (a1 - a0) / (s1 - s0)
    return None


@dataclass
class Tables:
    """The report's rows: detectability per insert (qa.csv) and CT numbers per material."""

    rows: list[dict[str, Any]]
    ct_rows: list[dict[str, Any]]
    nps: dict[tuple, tuple[np.ndarray, np.ndarray]]  # (model, dose, kernel, size) -> curve
    ttf: dict[tuple, tuple[np.ndarray, np.ndarray]]  # (..., material) -> curve
    missing: list[str]


def tables(settings: Settings, models: list[str], cache: Cache) -> Tables:
    """Every measured condition (missing ones listed, not guessed)."""
    rows: list[dict[str, Any]] = []
    ct_rows: list[dict[str, Any]] = []
    nps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    ttf: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    missing: list[str] = []
    rng = np.random.default_rng(settings.seed)
    full = max(settings.doses)
    for size in sorted(settings.sizes):
        for kernel in settings.kernels:
            done = {(m, a): cache.measured(size, kernel, a, m) for m in models
                    for a in settings.doses}
            absent = [f"{m} {size:g}mm {kernel} {a:g}" for (m, a), p in done.items()
                      if not p.exists()]
            if absent or INPUT not in models:
                missing += absent
                continue
            data = {key: dict(np.load(path)) for key, path in done.items()}
            reference = data[INPUT, full]
            for dose in settings.doses:
                for name, nominal in phantoms.CTP404:
                    for m in models:
                        hu, t50, t10 = data[m, dose][f"ct/{name}"]
                        ct_rows.append({"model": m, "dose": dose, "kernel": kernel,
                                        "size_mm": size, "material": name,
                                        "nominal_hu": nominal, "hu": hu,
                                        "error_vs_full_dose_hu": hu - reference[f"ct/{name}"][0],
                                        "ttf50_cpmm": t50, "ttf10_cpmm": t10})
                        curve = data[m, dose][f"ttf/{name}"]
                        ttf[m, dose, kernel, size, name] = (curve[0], curve[1])
                for m in models:
                    nps[m, dose, kernel, size] = (data[m, dose]["nps/frequency"],
                                                  data[m, dose]["nps/power"])
            for d, c in phantoms.CCT189:
                insert = phantoms.rod_name(d, c)
                rows += _insert_rows(settings, models, data, size, kernel, insert, rng)
    _dose_reduction(rows, settings)
    return Tables(rows, ct_rows, nps, ttf, missing)


def _insert_rows(settings: Settings, models: list[str], data: dict, size: float, kernel: str,
                 insert: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    full = max(settings.doses)
    reference = data[INPUT, full]
    ref_ct = {name: reference[f"ct/{name}"][0] for name, _ in phantoms.CTP404}
    ref_mean_f = reference["nps/summary"][1]
    nominal = dict(phantoms.CTP404)
    rows = []
    for dose in settings.doses:
        splits = {m: Split.halves(data[m, dose][f"present/{insert}"],
                                  data[m, dose][f"absent/{insert}"]) for m in models}
        draws = [splits[INPUT].draw(rng) for _ in range(settings.bootstrap)]
        results = {m: detectability(s, draws) for m, s in splits.items()}
        base = results[INPUT]
        for m in models:
            r, measured = results[m], data[m, dose]
            delta = r.samples - base.samples
            low, high = np.percentile(delta, [2.5, 97.5])
            sd, mean_f, peak_f, _ = measured["nps/summary"]
            ct_error = max(abs(measured[f"ct/{name}"][0] - ref_ct[name])
                           for name, _ in phantoms.CTP404)
            rows.append({
                "model": m, "dose": dose, "kernel": kernel, "size_mm": size, "insert": insert,
                "dprime": r.dprime, "dprime_low": r.dprime_low, "dprime_high": r.dprime_high,
                "auc": r.auc, "auc_low": r.auc_low, "auc_high": r.auc_high,
                "dprime_input": base.dprime, "delta_dprime": r.dprime - base.dprime,
                "delta_low": low, "delta_high": high,
                "detectability_loss": bool(m != INPUT and high < 0),
                "noise_sd_hu": sd, "nps_mean_cpmm": mean_f, "nps_peak_cpmm": peak_f,
                "nps_mean_ratio": mean_f / ref_mean_f,
                **{f"ttf{level}_{contrast}": measured[f"ct/{material}"][1 if level == 50 else 2]
                   for contrast, material in TTF_INSERTS.items() for level in (50, 10)},
                **{f"ttf_cnr_{contrast}": abs(nominal[material]) * math.sqrt(settings.ct_scans)
                   / sd for contrast, material in TTF_INSERTS.items()},
                "ct_max_abs_error_hu": ct_error})
    return rows


def _dose_reduction(rows: list[dict[str, Any]], settings: Settings) -> None:
    """Add each row's task's dose needed to match the input's full-dose d', and the
    reduction it allows (empty where the input's full-dose d' is not above zero)."""
    full = max(settings.doses)
    tasks: dict[tuple, dict[str, dict[float, dict]]] = {}
    for row in rows:
        tasks.setdefault((row["kernel"], row["size_mm"], row["insert"]), {}).setdefault(
            row["model"], {})[row["dose"]] = row
    for by_model in tasks.values():
        ref = by_model[INPUT][full]
        measurable = ref["dprime_low"] > 0
        for by_dose in by_model.values():
            doses = sorted(by_dose)
            needed = dose_needed(doses, [by_dose[a]["dprime"] for a in doses], ref["dprime"])
            for row in by_dose.values():
                row["dose_needed"] = (needed if measurable and needed is not None
                                      else float("nan"))
                row["dose_reduction"] = (float("nan") if not measurable else
                                         0.0 if needed is None else 1.0 - needed)


def model_summaries(rows: list[dict[str, Any]], source: str, command: str
                    ) -> dict[str, dict[str, Any]]:
    """Per model: the dose-reduction estimate (median and smallest over the measurable
    tasks) and every detectability loss at dose >= `GATE_DOSE` (and the count below it)."""
    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        tasks = {(r["kernel"], r["size_mm"], r["insert"]): r["dose_reduction"] for r in mine
                 if not math.isnan(r["dose_reduction"])}
        losses = [r for r in mine if r["detectability_loss"]]
        out[model] = {
            "dose_reduction_median": float(np.median(list(tasks.values()))) if tasks else None,
            "dose_reduction_smallest": min(tasks.values()) if tasks else None,
            "tasks_measured": len(tasks),
            "detectability_losses": [
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                 if k in ("dose", "kernel", "size_mm", "insert", "dprime", "dprime_input",
                          "delta_low", "delta_high")}
                for r in losses if r["dose"] >= GATE_DOSE],
            "losses_below_gate_dose": sum(r["dose"] < GATE_DOSE for r in losses),
            "sizes_mm": sorted({r["size_mm"] for r in mine}),
            "source": source, "command": command}
    return out


def loses_detectability(summary: dict[str, Any]) -> bool:
    """The selection rule's gate: any loss at dose >= `GATE_DOSE`."""
    return bool(summary.get("detectability_losses"))


def write_summaries(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(summaries, indent=1) + "\n")
