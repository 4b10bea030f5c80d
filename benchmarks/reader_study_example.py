"""Example reader-study report from synthetic scores with a known effect, and a check of the
sample-size method against simulated MRMC studies.

    python benchmarks/reader_study_example.py --out docs/reader_study_example

Five readers, 40 cases, pairs presentation. Likert criteria: `model_better` scores +1 point over
the original (the report must find it), `model_same` scores like the original (it must not).
Detection criterion `lesion` (half the cases have one; 1-5 confidence): `model_better` separates
lesions better (higher AUC), `model_same` as the original. The MRMC table is mrmc.csv.

Then power: OR variance components measured on simulated pilot studies (5 readers, 60 cases)
give the planner's predicted power for larger designs, and that many simulated studies of each
design give the OR test's observed power (and its rate without an effect): power.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ldct.study.mrmc import Components, obuchowski_rockette, power
from ldct.study.report import write_report
from ldct.study.synthetic import roe_metz, synthetic_detection_scores, synthetic_scores

SEPARATION = (1.4, 1.8)  # latent lesion separation of the original and the model
DESIGNS = ((5, 60), (5, 120), (8, 120), (10, 200))


def power_check(studies: int, seed: int) -> str:
    """Predicted (from pilot components) against observed power, as a markdown table."""
    rng = np.random.default_rng(seed)

    def simulate(readers: int, cases: int, separation: tuple[float, float]) -> list:
        return [obuchowski_rockette(*roe_metz(readers, cases, separation, rng))
                for _ in range(studies)]

    started = time.perf_counter()
    pilots = simulate(5, 60, SEPARATION)
    pilot = Components(*np.mean([list(vars(p.components).values()) for p in pilots], axis=0))
    effect = float(np.mean([p.random.difference for p in pilots]))
    lines = ["# Planned against simulated power of the OR test", "",
             f"`python benchmarks/reader_study_example.py --studies {studies} --seed {seed}`. "
             "Roe-Metz-like simulated ROC studies (`ldct.study.synthetic.roe_metz`, lesion "
             f"separation {SEPARATION[0]} vs {SEPARATION[1]}, AUC difference {effect:.4f}). "
             f"Prediction: Hillis-Obuchowski-Berbaum power from the OR components averaged over "
             f"{studies} pilot studies of 5 readers x 60 cases (var(TR) "
             f"{pilot.var_treatment_reader:.3g}, Var {pilot.var_error:.3g}, Cov1 "
             f"{pilot.cov1:.3g}, Cov2 {pilot.cov2:.3g}, Cov3 {pilot.cov3:.3g}). Observed: the "
             f"share of {studies} simulated studies of each design where the random-reader "
             "random-case OR test (DeLong covariances) gives p < 0.05; without an effect "
             "(both separations "
             f"{SEPARATION[0]}) the same share is the type I error.", "",
             "| readers x cases | predicted power | observed power (binomial SE) | "
             "observed without an effect |", "|---|---|---|---|"]
    for readers, cases in DESIGNS:
        observed = np.mean([s.random.p < 0.05 for s in simulate(readers, cases, SEPARATION)])
        null = np.mean([s.random.p < 0.05 for s in simulate(readers, cases,
                                                             (SEPARATION[0],) * 2)])
        predicted = power(effect, readers, cases, pilot, pilot_cases=60)
        lines.append(f"| {readers} x {cases} | {predicted:.3f} | {observed:.3f} "
                     f"({np.sqrt(observed * (1 - observed) / studies):.3f}) | {null:.3f} |")
    lines += ["", f"{time.perf_counter() - started:.0f} s on a loaded 2-core machine.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/reader_study_example")
    parser.add_argument("--studies", type=int, default=500,
                        help="simulated studies per design for the power check (0: skip)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rows = synthetic_scores({"model_better": 1.0, "model_same": 0.0}, readers=5, cases=40)
    rows += synthetic_detection_scores({"original": 1.2, "model_better": 2.2, "model_same": 1.2},
                                       readers=5, cases=40)
    write_report(rows, args.out, title="Example reader study (synthetic scores, known effect)")
    print(f"wrote {args.out}/report.md and mrmc.csv")
    if args.studies:
        Path(args.out, "power.md").write_text(power_check(args.studies, args.seed))
        print(f"wrote {args.out}/power.md")


if __name__ == "__main__":
    main()
