"""Calibrate how much of its noise estimate a shipped network removes, on training slabs.

A network can systematically remove too much: n2n25d learned on recorrupted inputs, y + a m,
which are noisier than the scans it is then given, so at full strength it smooths past the
best estimate. Its output is the input minus its (high-band) noise estimate, so removing a
share ``gain`` of that estimate is exactly ``input + gain * (output - input)``. Each candidate
gain is scored on the same training slabs, kernels and thick case as
``benchmarks/select_model.py``; the chosen gain has the largest worst-case PSNR gain over the
input among those that keep CT numbers (the CT-number guard's 3 HU) and raise SSIM everywhere.
The held-out ircadb17 is never used. ``--write`` stores it in the model's model.pt (``gain``,
read at load time; retrained and site-adapted versions keep it).

    python benchmarks/calibrate_gain.py --data DIR --thickness 2 n2n25d --write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ldct import registry
from ldct.data import PreparedData
from ldct.infer import DEFAULT_ENSEMBLE, denoise
from ldct.simulate import KERNELS

sys.path.insert(0, str(Path(__file__).parent))
from select_model import (  # noqa: E402  (the selection's own)
    Scores,
    best,
    slab_conditions,
    training_slabs,
)


def at_gain(low: np.ndarray, out: np.ndarray, stored: float, gain: float) -> np.ndarray:
    """The output at ``gain`` from ``out``, made at the ``stored`` gain: the input minus
    ``gain`` times what gain 1 removes."""
    return low + gain * (out - low) / stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    ap.add_argument("--thickness", type=int, default=2)
    ap.add_argument("--thick-kernel", choices=KERNELS, default="hann")
    ap.add_argument("--gains", nargs="+", type=float,
                    default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1])
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE)
    ap.add_argument("--out", help="report (default benchmarks/quality/gain_NAME.md)")
    ap.add_argument("--write", action="store_true", help="store the chosen gain in model.pt")
    ap.add_argument("model", help="registry name, or NAME=weights.pt")
    args = ap.parse_args()
    name, _, weights = args.model.partition("=")
    path = Path(weights) if weights else registry.get(name).weights
    blob = torch.load(path, map_location="cpu", weights_only=True)
    stored = float(blob.get("gain", 1.0))
    scores = {g: Scores() for g in args.gains}
    for slab in training_slabs(PreparedData(args.data), args.dose, args.kernels,
                               args.thickness, args.thick_kernel):
        x = slab.low.hu[slab.inner]
        out = denoise(slab.low, name, weights=str(path), device="cpu",
                      ensemble=args.ensemble).hu[slab.inner]
        for g, s in scores.items():
            s.add(slab, at_gain(x, out, stored, g))
        print(slab.case, slab.condition,
              {g: round(s.psnr[slab.condition][-1], 2) for g, s in scores.items()}, flush=True)
    chosen = best(scores)
    conditions = slab_conditions(args.kernels, args.thickness, args.thick_kernel)
    argv = sys.argv[1:]
    command = "python benchmarks/calibrate_gain.py " + " ".join(
        "DIR" if k and argv[k - 1] == "--data" else a for k, a in enumerate(argv))
    lines = [f"# {name}: share of its noise estimate removed (training cases only)", "",
             f"Command: `{command}`. Dose {args.dose:g}, the slabs of `select_model.py`, "
             f"{args.ensemble} view(s) per slice; weights {path.name} (stored gain "
             f"{stored:g}). PSNR gain over the input (liver window), mean over the slabs, the "
             "worst over conditions and slabs, the largest |mean HU change| in flat soft tissue "
             "and fat, the smallest SSIM gain.", "",
             "| gain | " + " | ".join(conditions) + " | worst | max abs bias HU | worst SSIM "
             "gain |", "|---|" + "---|" * (len(conditions) + 3)]
    lines += [f"| {g:g} | {s.row()}" for g, s in scores.items()]
    at_one = f"{scores[1.0].worst():+.2f} dB at gain 1" if 1.0 in scores else "gain 1 unscored"
    lines += ["", f"Chosen: **{chosen:g}** (worst {scores[chosen].worst():+.2f} dB against "
              f"{at_one})."]
    out = Path(args.out or f"benchmarks/quality/gain_{name}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.write:
        torch.save({**blob, "gain": chosen}, path)


if __name__ == "__main__":
    main()
