"""How far the held-out scores move with the simulated noise draw: the held-out case's normal
dose is simulated again at the same dose with other seeds (the physics of `ldct prepare`), and
each model's PSNR, tumour CNR and liver SD are scored as `ldct evaluate` scores them.

A measurement of the report's uncertainty, not a model selection: nothing is tuned on it.

    python benchmarks/heldout_noise_draws.py --data prepared --seeds 1 2 3 \
        --models n2n25d ldct-nlm --out benchmarks/quality/noise_draws.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ldct import metrics
from ldct.data import PreparedData
from ldct.evaluate import Regions, liver_contrast
from ldct.infer import denoise
from ldct.simulate import simulate_low_dose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                    help="simulation seeds besides the prepared draw")
    ap.add_argument("--out", default="benchmarks/quality/noise_draws.md")
    ap.add_argument("--models", nargs="+", required=True,
                    help="registry names (networks or baselines)")
    args = ap.parse_args()
    data = PreparedData(args.data)
    case = data.cases("test")[0]
    normal = data.volume(case)
    regions = Regions.from_case(normal.hu, data.masks(case), min(normal.spacing[:2]))
    lines = [f"# Held-out scores across noise draws: {case}, simulated dose {args.dose:g}", "",
             f"Command: `python benchmarks/heldout_noise_draws.py --data DIR --dose {args.dose:g} "
             f"--seeds {' '.join(map(str, args.seeds))} --models {' '.join(args.models)}`; "
             "networks average the default views, as `ldct evaluate` runs them.", "",
             "| draw | model | psnr_db | tumour_cnr | liver_sd_hu |", "|---|---|---|---|---|"]
    for seed in [None, *args.seeds]:  # None: the prepared draw the report scores
        low = (data.volume(case, args.dose) if seed is None
               else simulate_low_dose(normal, data.simulation(args.dose), seed=seed))
        label = "prepared" if seed is None else f"seed {seed}"
        for name in args.models:
            out = denoise(low, name, device="cpu").hu
            contrast = liver_contrast(out, regions)
            lines.append(f"| {label} | {name} | {metrics.psnr(out, normal.hu):.2f} | "
                         f"{contrast['tumour_cnr']:.4f} | {contrast['liver_sd_hu']:.2f} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
