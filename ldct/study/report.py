"""`ldct study report`: the analysis as figures, a markdown and an HTML report, the MRMC table
(mrmc.csv) and the raw CSV."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ldct.study.analysis import (  # noqa: E402
    Analysis,
    analyse,
    mrmc_table,
    write_mrmc,
    write_scores,
)


def write_report(rows: list[dict[str, Any]], out_dir: str | Path, title: str = "Reader study"
                 ) -> Analysis:
    """Analyse ``rows`` and write scores.csv, mrmc.csv, the PNG figures, report.md and
    report.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analyse(rows)
    table = mrmc_table(rows)
    write_scores(rows, out_dir / "scores.csv")
    write_mrmc(table, out_dir / "mrmc.csv")
    figures = {"scores.png": _bars(result), "readers.png": _heatmap(result)} \
        if result.criteria else {}
    if result.preferences:
        figures["preference.png"] = _preference(result)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
    markdown = _markdown(result, table, title, list(figures))
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(_html(markdown, out_dir, list(figures), title))
    return result


def _bars(a: Analysis):
    fig, axes = plt.subplots(1, len(a.criteria), figsize=(3.2 * len(a.criteria), 3.6),
                             squeeze=False, sharey=True)
    colours = plt.cm.tab10(np.arange(len(a.conditions)))
    for ax, criterion in zip(axes[0], a.criteria):
        cells = {m["condition"]: m for m in a.means if m["criterion"] == criterion}
        means = [cells[c]["mean"] for c in a.conditions]
        errors = [[cells[c]["mean"] - cells[c]["ci_low"] for c in a.conditions],
                  [cells[c]["ci_high"] - cells[c]["mean"] for c in a.conditions]]
        ax.bar(a.conditions, means, yerr=errors, capsize=4, color=colours)
        ax.set_title(criterion)
        ax.set_ylim(1, 5.3)
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].set_ylabel("mean score (1-5), 95 % CI")
    fig.tight_layout()
    return fig


def _heatmap(a: Analysis):
    grid = np.array([[a.per_reader[r][c] for c in a.conditions] for r in a.readers])
    fig, ax = plt.subplots(figsize=(1.3 * len(a.conditions) + 2, 0.5 * len(a.readers) + 1.6))
    image = ax.imshow(grid, cmap="viridis", vmin=1, vmax=5, aspect="auto")
    ax.set_xticks(range(len(a.conditions)), a.conditions, rotation=30)
    ax.set_yticks(range(len(a.readers)), a.readers)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                    color="white" if grid[i, j] < 3.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="mean score over criteria")
    ax.set_title("per reader")
    fig.tight_layout()
    return fig


def _preference(a: Analysis):
    fig, ax = plt.subplots(figsize=(1.5 * len(a.preferences) + 2, 3.2))
    names = [p["condition"] for p in a.preferences]
    rates = [p["rate"] for p in a.preferences]
    errors = [[p["rate"] - p["ci_low"] for p in a.preferences],
              [p["ci_high"] - p["rate"] for p in a.preferences]]
    ax.bar(names, rates, yerr=errors, capsize=4, color="tab:green")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"preferred over {a.reference}\n(Wilson 95 % CI)")
    fig.tight_layout()
    return fig


def _mrmc_markdown(table: list[dict[str, Any]]) -> list[str]:
    """The primary analysis: OR random readers and cases; fixed readers, fixed cases; the
    variance components."""
    lines = ["## MRMC analysis (primary)", "",
             "Obuchowski-Rockette with Hillis's denominator df: readers and cases random, so "
             "the result generalizes to other readers and cases. Figure of merit: empirical "
             "(trapezoidal, Wilcoxon) AUC of the confidence ratings for a detection criterion "
             "(covariances over cases by DeLong's method), the mean score for a Likert "
             "criterion (jackknife covariances). Each model against the reference, 95 % CIs. "
             "All columns are in mrmc.csv.", ""]
    if not table:
        return lines + ["No criterion has 2 readers who scored 2 common cases under a model "
                        "and the reference: no MRMC analysis.", ""]
    lines += ["| criterion | model | FOM | reference | model | difference [95 % CI] | df | "
              "p | finding |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        finding = ("no significant difference" if row["p"] >= 0.05 else
                   "significantly higher" if row["difference"] > 0 else "significantly lower")
        lines.append(f"| {row['criterion']} | {row['model']} | {row['fom']} | "
                     f"{row['fom_original']:.3f} | {row['fom_model']:.3f} | "
                     f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                     f" | {row['df']:.1f} | {row['p']:.3g} | {finding} |")
    lines += ["", "Fixed readers (inference for these readers only; random cases) and fixed "
              "cases (these cases only; random readers):", "",
              "| criterion | model | fixed readers: 95 % CI | p | fixed cases: 95 % CI | df | p |",
              "|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['criterion']} | {row['model']} | "
                     f"[{row['fixed_readers_ci_low']:+.3f}, {row['fixed_readers_ci_high']:+.3f}]"
                     f" | {row['fixed_readers_p']:.3g} | [{row['fixed_cases_ci_low']:+.3f}, "
                     f"{row['fixed_cases_ci_high']:+.3f}] | {row['fixed_cases_df']:.0f} | "
                     f"{row['fixed_cases_p']:.3g} |")
    lines += ["", "OR variance components (reader, treatment x reader; error variance and "
              "covariances of the FOM over cases):", "",
              "| criterion | model | readers x cases | var(R) | var(TR) | Var | Cov1 | Cov2 | "
              "Cov3 |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['criterion']} | {row['model']} | {row['readers']} x "
                     f"{row['cases']} | " + " | ".join(
                         f"{row[name]:.3g}" for name in ("var_reader", "var_treatment_reader",
                                                        "var_error", "cov1", "cov2", "cov3"))
                     + " |")
    return lines + [""]


def _likert_markdown(a: Analysis) -> list[str]:
    lines = ["Likert scores 1-5 (higher is better). Tests: paired Wilcoxon signed-rank on the "
             "mean score of each (reader, case), Holm-corrected over all tests, alpha 0.05; "
             "they treat readers as fixed and cases as independent.", "",
             "### Scores (mean, 95 % CI)", "", "| condition | " + " | ".join(a.criteria) + " |",
             "|---|" + "---|" * len(a.criteria)]
    for condition in a.conditions:
        cells = {m["criterion"]: m for m in a.means if m["condition"] == condition}
        lines.append(f"| {condition} | " + " | ".join(
            f"{cells[c]['mean']:.2f} [{cells[c]['ci_low']:.2f}, {cells[c]['ci_high']:.2f}]"
            for c in a.criteria) + " |")
    lines += ["", f"### Against `{a.reference}`", "",
              "| condition | criterion | pairs | mean difference | p | p (Holm) | finding |",
              "|---|---|---|---|---|---|---|"]
    for t in a.tests:
        finding = ("no significant difference" if not t["significant"] else
                   "significantly higher" if t["mean_diff"] > 0 else "significantly lower")
        lines.append(f"| {t['condition']} | {t['criterion']} | {t['n_pairs']} | "
                     f"{t['mean_diff']:+.2f} | {t['p']:.3g} | {t['p_holm']:.3g} | {finding} |")
    return lines


def _markdown(a: Analysis, table: list[dict[str, Any]], title: str, figures: list[str]) -> str:
    lines = [f"# {title}", "", f"Readers: {', '.join(a.readers)}. Reference: `{a.reference}`.",
             "", *_mrmc_markdown(table), "## Secondary statistics", ""]
    if a.criteria:
        lines += _likert_markdown(a)
    if a.preferences:
        lines += ["", "### Forced choice", "", "| condition | preferred / pairs | rate (95 % CI) "
                  "| p (binomial vs 0.5) |", "|---|---|---|---|"]
        for p in a.preferences:
            lines.append(f"| {p['condition']} | {p['preferred']} / {p['n']} | {p['rate']:.2f} "
                         f"[{p['ci_low']:.2f}, {p['ci_high']:.2f}] | {p['p']:.3g} |")
    if a.agreement:
        lines += ["", "### Inter-reader agreement", "", "| criterion | statistic | value | items |",
                  "|---|---|---|---|"]
        for g in a.agreement:
            lines.append(f"| {g['criterion']} | {g['statistic']} | {g['value']:.3f} | "
                         f"{g['n_items']} |")
    lines += ["", "### Reading time per item", "", "| condition | items | median (s) | mean (s) |",
              "|---|---|---|---|"]
    for r in a.reading:
        lines.append(f"| {r['condition']} | {r['n']} | {r['median_s']:.1f} | {r['mean_s']:.1f} |")
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    lines += ["", "Raw scores: [scores.csv](scores.csv); MRMC table: [mrmc.csv](mrmc.csv)", ""]
    return "\n".join(lines)


def _html(markdown: str, out_dir: Path, figures: list[str], title: str) -> str:
    """A self-contained page: the tables as preformatted text, the figures embedded."""
    images = "".join(
        f'<p><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode((out_dir / name).read_bytes()).decode()}"></p>' for name in figures)
    text = markdown.split("## Figures")[0]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><pre>{html.escape(text)}</pre>{images}"
            "<p>Raw scores: <a href='scores.csv'>scores.csv</a>; MRMC table: "
            "<a href='mrmc.csv'>mrmc.csv</a></p></body></html>")
