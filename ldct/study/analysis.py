"""Statistics of a reader study from its exported score table (one row per reader, item side,
criterion: see ``StudyService.export_rows``).

The primary analysis is MRMC (`ldct.study.mrmc`): Obuchowski-Rockette with Hillis's df, random
readers and cases, of each model against the reference per criterion: AUC for a detection
criterion, mean score for a Likert one. The rest is secondary, on the Likert criteria:

- per condition and criterion: mean with a 95 % t confidence interval;
- paired Wilcoxon signed-rank tests of each model against the reference, pairing the mean
  score of a (reader, case) under both conditions, Holm-corrected over all tests;
- forced choice: the rate at which a model was preferred to the reference, Wilson 95 % CI and
  a two-sided binomial test against 0.5;
- inter-reader agreement per criterion: quadratic-weighted Cohen's kappa for two readers,
  Krippendorff's alpha (ordinal) for more;
- reading time per item and condition.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from ldct.messages import clip
from ldct.study.mrmc import Components, obuchowski_rockette

ALPHA = 0.05
FIELDS = ("reader", "case", "position", "presentation", "reference", "condition",
          "compared_with", "side", "criterion", "score", "chosen", "reading_seconds", "task",
          "truth")
COMPONENTS = ("var_reader", "var_treatment_reader", "var_error", "cov1", "cov2", "cov3")
PILOT_FIELDS = ("criterion", "model", "cases", *COMPONENTS)  # enough of mrmc.csv to plan
OPTIONAL = {"task": "likert", "truth": ""}  # exports made before detection tasks lack them
MRMC_FIELDS = ("criterion", "task", "model", "fom", "fom_model", "fom_original", "difference",
               "ci_low", "ci_high", "df", "p", "F", "readers", "cases", "covariance",
               "fixed_readers_ci_low", "fixed_readers_ci_high", "fixed_readers_p",
               "fixed_cases_ci_low", "fixed_cases_ci_high", "fixed_cases_df", "fixed_cases_p",
               *COMPONENTS)


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """The exported CSV, typed; refused (ValueError naming the file, row and column) when a
    column is missing, it has no rows, or a cell is not the number it must be."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = sorted(set(FIELDS) - set(OPTIONAL) - set(reader.fieldnames or ()))
        if missing:
            raise ValueError(f"{path}: not a study export: no column {', '.join(missing)}; "
                             "export it with `ldct study export`.")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no score rows (zero cases); export the study once its "
                         "readers have scored it (`ldct study export`).")
    for number, row in enumerate(rows, start=1):
        for key, default in OPTIONAL.items():
            if row.get(key) is None:
                row[key] = default
        where = f"{path}, row {number}"
        row["truth"] = _cell(where, row, "truth", int, optional=True)
        row["score"] = _cell(where, row, "score", int)
        row["chosen"] = _cell(where, row, "chosen", int, optional=True)
        row["reading_seconds"] = _cell(where, row, "reading_seconds", float)
    return rows


def _cell(where: str, row: dict[str, Any], column: str, kind: type,
          optional: bool = False) -> Any:
    """One cell as a finite int or float (None when ``optional`` and empty)."""
    text = row.get(column)
    if text is None:
        raise ValueError(f"{where}: the row ends before column {column!r}")
    if optional and text == "":
        return None
    try:
        value = kind(text)
        finite = bool(np.isfinite(value))
    except (ValueError, TypeError, OverflowError):  # not a number; an int past float's range
        value, finite = None, False
    if not finite:
        raise ValueError(f"{where}, column {column!r}: {clip(text)!r} is not a "
                         f"{'whole number' if kind is int else 'finite number'}")
    return value


def write_scores(rows: list[dict[str, Any]], target: str | Path | TextIO) -> None:
    """The export CSV, to a file path or an open text stream."""
    if isinstance(target, (str, Path)):
        with open(target, "w", newline="") as f:
            write_scores(rows, f)
        return
    writer = csv.DictWriter(target, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row.get(k, OPTIONAL.get(k))
                      for k in FIELDS} for row in rows)


@dataclass
class Analysis:
    reference: str
    conditions: list[str]
    criteria: list[str]
    readers: list[str]
    means: list[dict[str, Any]]  # condition, criterion, n, mean, ci_low, ci_high
    tests: list[dict[str, Any]]  # condition, criterion, n_pairs, median_diff, p, p_holm, sig
    preferences: list[dict[str, Any]]  # condition, n, preferred, rate, ci_low, ci_high, p
    agreement: list[dict[str, Any]]  # criterion, statistic, value, n_items
    reading: list[dict[str, Any]]  # condition, n, median_s, mean_s
    per_reader: dict[str, dict[str, float]]  # reader -> condition -> mean over criteria


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its t confidence interval (the mean twice for a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.sem(values) * stats.t.ppf(0.5 + level / 2, len(values) - 1))
    return mean, mean - half, mean + half


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


def krippendorff_alpha_ordinal(units: list[list[int]], categories: tuple[int, ...] = (1, 2, 3,
                                                                                       4, 5)
                               ) -> float:
    """Krippendorff's alpha with the ordinal metric; ``units`` = the ratings of each item."""
    index = {c: k for k, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for ratings in units:
        if len(ratings) < 2:
            continue
        for a in range(len(ratings)):
            for b in range(len(ratings)):
                if a != b:
                    coincidence[index[ratings[a]], index[ratings[b]]] += 1.0 / (len(ratings) - 1)
    marginals = coincidence.sum(axis=1)
    n = marginals.sum()
    if n <= 1:
        return float("nan")
    delta = np.zeros_like(coincidence)
    for c in range(len(categories)):
        for k in range(len(categories)):
            low, high = min(c, k), max(c, k)
            delta[c, k] = (marginals[low:high + 1].sum() - (marginals[c] + marginals[k]) / 2) ** 2
    observed = (coincidence * delta).sum() / n
    expected = (np.outer(marginals, marginals) * delta).sum() / (n * (n - 1))
    return float(1.0 - observed / expected) if expected > 0 else float("nan")


def analyse(rows: list[dict[str, Any]]) -> Analysis:
    """Every secondary statistic of the report from the exported rows (scores of detection
    criteria are confidence ratings: only the MRMC analysis uses them)."""
    conditions = sorted({r["condition"] for r in rows})
    readers = sorted({r["reader"] for r in rows})
    reference = rows[0]["reference"]
    everything, rows = rows, [r for r in rows if r.get("task") != "detection"]
    criteria = sorted({r["criterion"] for r in rows})
    cell: dict[tuple, list[int]] = defaultdict(list)  # (criterion, condition, reader, case)
    for r in rows:
        cell[(r["criterion"], r["condition"], r["reader"], r["case"])].append(r["score"])

    means = []
    for criterion in criteria:
        for condition in conditions:
            values = np.array([r["score"] for r in rows if r["criterion"] == criterion
                               and r["condition"] == condition], dtype=float)
            mean, low, high = mean_ci(values)
            means.append({"condition": condition, "criterion": criterion, "n": len(values),
                          "mean": mean, "ci_low": low, "ci_high": high})

    tests = []
    for criterion in criteria:
        for condition in (c for c in conditions if c != reference):
            diffs = []
            for reader in readers:
                for case in sorted({r["case"] for r in rows}):
                    ours = cell.get((criterion, condition, reader, case))
                    base = cell.get((criterion, reference, reader, case))
                    if ours and base:
                        diffs.append(np.mean(ours) - np.mean(base))
            diffs = np.array(diffs)
            nonzero = diffs[diffs != 0]
            p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else 1.0
            tests.append({"condition": condition, "criterion": criterion,
                          "n_pairs": len(diffs), "mean_diff": float(diffs.mean())
                          if len(diffs) else 0.0, "p": p})
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["p_holm"] = adjusted
        test["significant"] = adjusted < ALPHA

    preferences = []
    choices = {}
    for r in everything:
        if r["chosen"] is not None and r["compared_with"]:
            choices[(r["reader"], r["case"], r["condition"], r["compared_with"])] = r["chosen"]
    for condition in (c for c in conditions if c != reference):
        picks = [v for (reader, case, cond, other), v in choices.items()
                 if cond == condition and other == reference]
        if not picks:
            continue
        test = stats.binomtest(sum(picks), len(picks), 0.5)
        ci = test.proportion_ci(0.95, method="wilson")
        preferences.append({"condition": condition, "n": len(picks), "preferred": sum(picks),
                            "rate": sum(picks) / len(picks), "ci_low": ci.low,
                            "ci_high": ci.high, "p": test.pvalue})

    agreement = []
    for criterion in criteria:
        ratings = defaultdict(dict)
        for r in rows:
            if r["criterion"] == criterion:
                ratings[(r["case"], r["condition"], r["compared_with"])][r["reader"]] = r["score"]
        if len(readers) == 2:
            both = [v for v in ratings.values() if len(v) == 2]
            a = [v[readers[0]] for v in both]
            b = [v[readers[1]] for v in both]
            value = (float(cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights="quadratic"))
                     if both else float("nan"))
            agreement.append({"criterion": criterion, "statistic": "weighted kappa (quadratic)",
                              "value": value, "n_items": len(both)})
        elif len(readers) > 2:
            units = [list(v.values()) for v in ratings.values()]
            agreement.append({"criterion": criterion, "statistic": "Krippendorff alpha (ordinal)",
                              "value": krippendorff_alpha_ordinal(units),
                              "n_items": sum(1 for u in units if len(u) > 1)})

    reading = []
    seen = {}
    for r in everything:
        seen[(r["reader"], r["case"], r["condition"], r["compared_with"])] = r["reading_seconds"]
    for condition in conditions:
        times = np.array([t for (_, _, c, _), t in seen.items() if c == condition])
        reading.append({"condition": condition, "n": len(times),
                        "median_s": float(np.median(times)), "mean_s": float(times.mean())})

    per_reader = {reader: {condition: float(np.mean(
        [r["score"] for r in rows if r["reader"] == reader and r["condition"] == condition]))
        for condition in conditions} for reader in readers} if rows else {}
    return Analysis(reference, conditions, criteria, readers, means, tests, preferences,
                    agreement, reading, per_reader)



def mrmc_inputs(rows: list[dict[str, Any]], criterion: str, model: str
                ) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str]]:
    """Ratings (reference and ``model``, readers, cases) of one criterion, for the MRMC
    analysis: a reader's score of a case under a condition, averaged where it was scored more
    than once (the reference side of each pair with this model; in ``single``, each
    presentation); only cases every reader scored under both; the truth for detection."""
    reference = rows[0]["reference"]
    cell: dict[tuple, list[int]] = defaultdict(list)
    truth: dict[str, int] = {}
    for r in rows:
        if r["criterion"] != criterion:
            continue
        if r["condition"] == model or (r["condition"] == reference
                                       and r["compared_with"] in (model, "")):
            cell[(r["condition"] == model, r["reader"], r["case"])].append(r["score"])
            if r.get("task") == "detection":
                truth[r["case"]] = r["truth"]
    readers = sorted({reader for _, reader, _ in cell})
    cases = sorted(case for case in {case for _, _, case in cell}
                   if all((side, reader, case) in cell for side in (False, True)
                          for reader in readers))
    ratings = np.array([[[np.mean(cell[(side, reader, case)]) for case in cases]
                         for reader in readers] for side in (False, True)], dtype=float)
    return ratings, (np.array([truth[c] for c in cases], dtype=bool) if truth else None), \
        readers, cases


def mrmc_table(rows: list[dict[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """The MRMC analysis (``MRMC_FIELDS``), one row per criterion and model against the
    reference: OR with Hillis's df (random readers and cases), and the fixed-reader and
    fixed-case analyses, with the OR variance components."""
    reference = rows[0]["reference"]
    tasks = {r["criterion"]: r.get("task", "likert") for r in rows}
    table = []
    for criterion in sorted(tasks):
        for model in sorted({r["condition"] for r in rows} - {reference}):
            ratings, truth, readers, cases = mrmc_inputs(rows, criterion, model)
            if len(readers) < 2 or len(cases) < 2:
                continue  # nothing an MRMC analysis can generalize from
            result = obuchowski_rockette(ratings, truth, alpha=alpha)
            random, fixed_r, fixed_c = result.random, result.fixed_readers, result.fixed_cases
            table.append({
                "criterion": criterion, "task": tasks[criterion], "model": model,
                "fom": "AUC (empirical)" if truth is not None else "mean score",
                "fom_model": result.fom[1], "fom_original": result.fom[0],
                "difference": random.difference, "ci_low": random.ci_low,
                "ci_high": random.ci_high, "df": random.df, "p": random.p,
                "F": random.statistic, "readers": len(readers), "cases": len(cases),
                "covariance": result.covariance,
                "fixed_readers_ci_low": fixed_r.ci_low, "fixed_readers_ci_high": fixed_r.ci_high,
                "fixed_readers_p": fixed_r.p, "fixed_cases_ci_low": fixed_c.ci_low,
                "fixed_cases_ci_high": fixed_c.ci_high, "fixed_cases_df": fixed_c.df,
                "fixed_cases_p": fixed_c.p,
                **{name: getattr(result.components, name) for name in COMPONENTS}})
    return table


def write_mrmc(table: list[dict[str, Any]], path: str | Path) -> None:
    """mrmc.csv: one row per criterion and model (``MRMC_FIELDS``)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MRMC_FIELDS)
        writer.writeheader()
        writer.writerows(table)


def pilot_components(path: str | Path, criterion: str | None = None,
                     model: str | None = None) -> tuple[Components, int, dict[str, Any]]:
    """OR components and the number of cases of a pilot study, for planning: from its
    ``mrmc.csv`` (a report's, or any CSV with the columns ``PILOT_FIELDS``, e.g. published
    components) or its exported scores; the row of ``criterion`` and ``model`` (either may be
    omitted when the file has one). Refused, naming the file and column, when a column is
    missing, no row can be planned from, or a component or the case count is not a number."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        is_mrmc = bool(columns & set(COMPONENTS))
        if is_mrmc and not set(PILOT_FIELDS) <= columns:
            raise ValueError(f"{path}: an MRMC table without column "
                             f"{', '.join(c for c in PILOT_FIELDS if c not in columns)}; give a "
                             f"report's mrmc.csv or the columns {', '.join(PILOT_FIELDS)}")
        table = [{k: _number(v) for k, v in row.items()} for row in reader] if is_mrmc else []
    if not is_mrmc:
        table = mrmc_table(read_scores(path))
    if not table:
        raise ValueError(f"{path}: no MRMC row to plan from: a pilot needs at least 2 readers "
                         "and 2 cases that every reader scored under the reference and a model")
    chosen = [row for row in table if criterion in (None, row["criterion"])
              and model in (None, row["model"])]
    if len(chosen) != 1:
        raise ValueError(f"{path}: {len(chosen)} MRMC rows match criterion={criterion} "
                         f"model={model}; choose one of " + ", ".join(
                             f"{row['criterion']}/{row['model']}" for row in table))
    row = chosen[0]
    where = f"{path}, row {row['criterion']}/{row['model']}"
    values = {name: _cell(where, {name: str(row[name])}, name, float) for name in COMPONENTS}
    cases = row["cases"]
    if not (isinstance(cases, (int, float)) and float(cases).is_integer() and cases >= 2):
        raise ValueError(f"{where}, column 'cases': {clip(str(cases))!r} is not a case count "
                         "of at least 2")
    return Components(**values, ms_t=float("nan"), ms_r=float("nan"), ms_tr=float("nan")), \
        int(cases), row


def _number(text: str | None) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text
