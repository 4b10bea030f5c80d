"""Synthetic reader-study exports with a known effect: checks for the analysis and the example
report (``benchmarks/reader_study_example.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def synthetic_scores(effects: dict[str, float], readers: int = 3, cases: int = 20,
                     criteria: tuple[str, ...] = ("noise", "sharpness", "confidence"),
                     seed: int = 0) -> list[dict[str, Any]]:
    """Pairs presentation: every reader scores every case as (original, model) for each model
    in ``effects``; a model's scores are the original's shifted by its effect (Likert points)
    plus reader noise; the forced choice follows the scores."""
    rng = np.random.default_rng(seed)
    truths = [{criterion: rng.normal(3.0, 0.6) for criterion in criteria} for _ in range(cases)]
    rows = []
    position = 0
    for r in range(readers):
        reader = f"reader{r + 1}"
        bias = rng.normal(0, 0.3)  # each reader scores a little higher or lower
        for c, truth in enumerate(truths):
            for model, effect in effects.items():
                position += 1
                sides = {"original": 0.0, model: effect}
                scores = {name: {criterion: int(np.clip(np.rint(
                    truth[criterion] + shift + bias + rng.normal(0, 0.5)), 1, 5))
                    for criterion in criteria} for name, shift in sides.items()}
                total = {name: sum(s.values()) + rng.normal(0, 0.5) for name, s in scores.items()}
                chosen = max(total, key=total.get)
                for side, name in zip("AB", sides):
                    other = model if name == "original" else "original"
                    for criterion in criteria:
                        rows.append({"reader": reader, "case": f"case{c + 1:02d}",
                                     "position": position, "presentation": "pairs",
                                     "reference": "original", "condition": name,
                                     "compared_with": other, "side": side,
                                     "criterion": criterion,
                                     "score": scores[name][criterion],
                                     "chosen": int(chosen == name),
                                     "reading_seconds": round(float(rng.gamma(4, 8)), 1)})
    return rows


def roe_metz(readers: int, cases: int, separation: tuple[float, float], rng: np.random.Generator,
             prevalence: float = 0.5, case_sd: float = 0.7, reader_sd: float = 0.25,
             interaction_sd: float = 0.15, noise_sd: float = 0.6,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ratings of a simulated ROC study, (2 modalities, readers, cases), and the
    truth (cases,). A Roe-Metz-like latent model: a diseased case's score is raised by the
    modality's ``separation`` plus a reader effect and a modality-by-reader effect (so AUC
    varies over readers); every case has a case effect shared by all readers and modalities
    and a modality-by-case effect; each reading adds its own noise."""
    truth = np.zeros(cases, dtype=bool)
    truth[: max(1, int(round(prevalence * cases)))] = True
    mean = np.asarray(separation, dtype=float)[:, None, None]
    reader = rng.normal(0, reader_sd, (1, readers, 1)) + rng.normal(0, interaction_sd,
                                                                     (2, readers, 1))
    case = rng.normal(0, case_sd, (1, 1, cases)) + rng.normal(0, case_sd / 2, (2, 1, cases))
    ratings = (mean + reader) * truth + case + rng.normal(0, noise_sd, (2, readers, cases))
    return ratings, truth


def synthetic_detection_scores(separations: dict[str, float], readers: int = 5,
                               cases: int = 60, criterion: str = "lesion", seed: int = 0
                               ) -> list[dict[str, Any]]:
    """Detection rows of a pairs study (as ``export_rows`` writes them): half the cases have a
    lesion; every reader rates every case's original and each model's image (one item per
    case and model) on a 1-5 confidence scale, binned from the Roe-Metz-like latent score of
    :func:`roe_metz` whose lesion separation is ``separations[condition]`` ('original' is the
    reference): a model with a larger separation has a higher AUC."""
    rng = np.random.default_rng(seed)
    models = [name for name in separations if name != "original"]
    latent = {}
    for model in models:  # the same cases and readers under every pair
        pair_rng = np.random.default_rng(rng.integers(2 ** 32))
        latent[model], truth = roe_metz(readers, cases, (separations["original"],
                                                          separations[model]), pair_rng)
    thresholds = [-0.6, 0.2, 0.9, 1.6]
    rows = []
    for r in range(readers):
        for c in range(cases):
            for m, model in enumerate(models):
                for side, (name, index) in zip("AB", (("original", 0), (model, 1))):
                    score = 1 + int(np.searchsorted(thresholds, latent[model][index, r, c]))
                    rows.append({"reader": f"reader{r + 1}", "case": f"case{c + 1:02d}",
                                 "position": c * len(models) + m + 1, "presentation": "pairs",
                                 "reference": "original", "condition": name,
                                 "compared_with": model if name == "original" else "original",
                                 "side": side, "criterion": criterion, "score": score,
                                 "chosen": None, "reading_seconds": 20.0, "task": "detection",
                                 "truth": int(truth[c])})
    return rows
