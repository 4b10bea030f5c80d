"""Example reader-study report from a synthetic score table with a known effect.

    python benchmarks/reader_study_example.py --out docs/reader_study_example

Three readers, 20 cases, pairs presentation: `model_better` scores +1 Likert point over the
original (the report must find it), `model_same` scores like the original (it must not).
"""

from __future__ import annotations

import argparse

from ldct.study.report import write_report
from ldct.study.synthetic import synthetic_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/reader_study_example")
    args = parser.parse_args()
    rows = synthetic_scores({"model_better": 1.0, "model_same": 0.0}, readers=3, cases=20)
    write_report(rows, args.out, title="Example reader study (synthetic scores, known effect)")
    print(f"wrote {args.out}/report.md")


if __name__ == "__main__":
    main()
