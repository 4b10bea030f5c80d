"""Choose the recommended denoiser on training cases by its worst reconstruction kernel.

A model that wins on one noise texture can lose on another (the best model on the simulator's
Hann texture was the worst on real sharp-kernel scans), so every candidate denoises slabs of
the training cases at one dose with each kernel's noise, and the recommended model is the one
whose smallest PSNR gain over the input, over all kernels and slabs, is largest, among those
that keep CT numbers (mean HU in flat soft tissue and fat within the CT-number guard's limit,
3 HU, of the normal dose's on every slab and kernel: a model whose results the product itself
would flag is no default, whatever its PSNR) and raise SSIM over the input's on every slab and
kernel (a smoother image that loses structure is no better), and that lose no low-contrast
detectability against their input at any rod, dose >= 25 %, kernel and patient size of the
phantom QA (`ldct qa --write`: models/task_quality.json; a model it has not measured is not
held back). The held-out ircadb17 is never used. Writes the
table and ``models/recommended.json`` (read by the registry: the demo's model, the Slicer
default, /info/).

    python benchmarks/select_model.py --data DIR --thickness 2 alden n2n25d pan pdml vagan
    python benchmarks/select_model.py --from-record   # the rule again on the recorded scores
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from ldct import metrics, registry
from ldct.ct_guard import THRESHOLD_HU
from ldct.data import PreparedData
from ldct.evaluate import Regions, soft_tissue, thicker
from ldct.infer import DEFAULT_ENSEMBLE, denoise
from ldct.io import CTVolume
from ldct.qa.summary import loses_detectability
from ldct.simulate import KERNELS, simulate_low_dose

K = TypeVar("K")
SELECTION_MD = "benchmarks/quality/selection.md"
SLABS = (("ircadb01", 64, 80), ("tcia_pancreas001", 56, 72))  # (case, first, stop slice)


@dataclass
class Slab:
    """A training slab at one dose and kernel (or thickness): the low dose to denoise, the
    inner slices that are scored (the ends are context only), their normal dose and regions,
    and the low dose's own PSNR and SSIM there (each candidate's gain is over these)."""

    case: str
    condition: str
    low: CTVolume
    inner: slice
    reference: np.ndarray
    regions: Regions
    input_psnr: float = field(init=False)
    input_ssim: float = field(init=False)

    def __post_init__(self) -> None:
        low = self.low.hu[self.inner]
        self.input_psnr = metrics.psnr(low, self.reference)
        self.input_ssim = metrics.ssim(low, self.reference)

    def max_abs_bias(self, out: np.ndarray) -> float:
        """The larger |mean HU change| of ``out`` (inner slices) in flat soft tissue and fat."""
        return max(abs(metrics.hu_bias(out, self.reference, region))
                   for region in (self.regions.liver, self.regions.fat))


@dataclass
class Scores:
    """One candidate over the training slabs: its PSNR gains over the input per condition (one
    per slab), its smallest SSIM gain and its largest |mean HU change| on any slab."""

    psnr: dict[str, list[float]] = field(default_factory=dict)
    ssim: float = np.inf
    bias: float = 0.0
    loses_detectability: bool = False  # `ldct qa`: below its input's d' at dose >= 25 %

    def add(self, slab: Slab, out: np.ndarray) -> None:
        """Score ``out`` (the slab's inner slices, denoised) against the slab's input."""
        self.psnr.setdefault(slab.condition, []).append(
            metrics.psnr(out, slab.reference) - slab.input_psnr)
        self.ssim = min(self.ssim, metrics.ssim(out, slab.reference) - slab.input_ssim)
        self.bias = max(self.bias, slab.max_abs_bias(out))

    def keeps(self) -> bool:
        """CT numbers within the CT-number guard's limit, SSIM raised on every slab and no
        detectability lost on the phantoms."""
        return self.bias <= THRESHOLD_HU and self.ssim > 0 and not self.loses_detectability

    def worst(self) -> float:
        """The smallest PSNR gain over conditions and slabs."""
        return min(min(v) for v in self.psnr.values())

    def row(self) -> str:
        """Mean gain per condition, the worst, the largest bias and smallest SSIM gain."""
        return (" | ".join(f"{np.mean(v):+.2f}" for v in self.psnr.values())
                + f" | {self.worst():+.2f} | {self.bias:.2f} | {self.ssim:+.4f} |")


def best(scores: dict[K, Scores]) -> K:
    """The candidate with the largest worst-case PSNR gain among those that keep CT numbers
    (within the CT-number guard's limit), raise SSIM everywhere and lose no detectability
    (else among all)."""
    keeping = [k for k, s in scores.items() if s.keeps()]
    return max(keeping or list(scores), key=lambda k: scores[k].worst())


def slab_conditions(kernels: list[str], thickness: int = 1,
                    thick_kernel: str = "hann") -> list[str]:
    """The kernels, then ``thick_kernel`` at ``thickness`` times the slice thickness (as
    'hann x2') when that is > 1."""
    return [*kernels, *([f"{thick_kernel} x{thickness}"] if thickness > 1 else [])]


def training_slabs(data: PreparedData, dose: float, kernels: list[str], thickness: int = 1,
                   thick_kernel: str = "hann") -> Iterator[Slab]:
    """Each slab of `SLABS` with each kernel's noise at ``dose`` (seeded), and with
    ``thick_kernel``'s at ``thickness`` times the slice thickness when that is > 1."""
    conditions = slab_conditions(kernels, thickness, thick_kernel)
    for case, first, stop in SLABS:
        if data.manifest["cases"][case]["role"] != "train":
            raise SystemExit(f"{case} is not a training case: select models on training data")
        whole = data.volume(case)
        scored: dict[int, tuple[np.ndarray, Regions]] = {}  # per thickness
        for condition in conditions:
            thick = condition not in kernels
            t = thickness if thick else 1
            kernel = thick_kernel if thick else condition
            # a thick slab covers the same slices' count after averaging t into one
            normal = replace(whole, hu=whole.hu[first:first + (stop - first) * t])
            low = simulate_low_dose(normal, data.simulation(dose, kernel), seed=11,
                                    progress=False)
            if t > 1:
                normal, low = thicker(normal, t), thicker(low, t)
            inner = slice(2, normal.hu.shape[0] - 2)
            if t not in scored:
                scored[t] = normal.hu[inner], Regions.from_case(
                    normal.hu[inner], {"liver": soft_tissue(normal.hu[inner])},
                    min(normal.spacing[:2]))
            yield Slab(case, condition, low, inner, *scored[t])


def gate_detectability(scores: dict[str, Scores]) -> list[str]:
    """Mark each model the phantom QA found losing detectability at dose >= 25 %; the names
    it has not measured."""
    quality = registry.task_quality()
    for spec, score in scores.items():
        score.loses_detectability = loses_detectability(quality.get(spec.partition("=")[0], {}))
    return [m for m in scores if m.partition("=")[0] not in quality]


def from_record(write: bool, out: Path) -> None:
    """The rule applied again to the scores the last ``--write`` recorded, with today's
    detectability verdicts: which model it chooses, and models/recommended.json updated."""
    record = registry.recommendation()
    if not record:
        raise SystemExit("no models/recommended.json: run the selection with --data first")
    scores = {m: Scores({"recorded": [gain]}, record["worst_ssim_gain"][m],
                        record["max_abs_bias_hu"][m]) for m, gain in
              record["worst_gain_db"].items()}
    unmeasured = gate_detectability(scores)
    candidates = {m: s for m, s in scores.items() if registry.get(m).kind == "network"}
    chosen = best(candidates)
    lines = ["| model | worst PSNR gain dB | max abs bias HU | worst SSIM gain | loses "
             "detectability (dose >= 25 %) | kept by the rule |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {s.worst():+.2f} | {s.bias:.2f} | {s.ssim:+.4f} | "
              f"{'not measured' if m in unmeasured else 'yes' if s.loses_detectability else 'no'}"
              f" | {'yes' if s.keeps() else 'no'} |" for m, s in candidates.items()]
    changed = chosen != record["model"]
    passes = ("it passes every gate" if candidates[chosen].keeps() else
              "no candidate passes every gate: the rule falls back to all")
    outcome = (f"Recommended: **{chosen}** ("
               f"{'changed from ' + record['model'] if changed else 'unchanged'}; {passes}).")
    text = ["# Model selection with the detectability gate", "",
            "Command: `python benchmarks/select_model.py --from-record"
            + (" --write" if write else "") + "`: the rule of `select_model.py` applied again to "
            "the scores `models/recommended.json` recorded (training slabs; "
            f"`{record['command']}`), now also requiring no loss of low-contrast detectability "
            "against the input at any rod, dose >= 25 %, kernel and patient size of `ldct qa` "
            "(`models/task_quality.json`, `benchmarks/quality/qa.md`).", "", *lines, "", outcome]
    out.write_text("\n".join(text) + "\n")
    print("\n".join(text))
    if write and changed:
        gate = ("; it replaced " + record["model"] + ", which loses low-contrast detectability "
                "(ldct qa)") if scores[record["model"]].loses_detectability else ""
        record.update(model=chosen, reason=record["reason"].split(" (")[0] + gate,
                      command=record["command"] + " + python benchmarks/select_model.py "
                      "--from-record --write")
        registry.RECOMMENDED_FILE.write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a folder made by `ldct prepare` (required but with "
                                    "--from-record)")
    ap.add_argument("--from-record", action="store_true",
                    help="no data: apply the rule again to the scores models/recommended.json "
                         "recorded, with the phantom QA's detectability verdicts")
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    ap.add_argument("--thickness", type=int, default=1,
                    help="> 1 adds the --thick-kernel's slabs with this many slices averaged "
                         "into one (as the held-out sweep's thick-slice case)")
    ap.add_argument("--thick-kernel", choices=KERNELS, default="hann")
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE,
                    help="flipped views a network averages (the default is what ships)")
    ap.add_argument("--out", default=SELECTION_MD)
    ap.add_argument("--write", action="store_true", help="write models/recommended.json")
    ap.add_argument("--reference", default="ldct-nlm",
                    help="scored beside the candidates, never chosen (the baseline to beat)")
    ap.add_argument("models", nargs="*", help="registry names, or NAME=weights.pt")
    args = ap.parse_args()
    if args.from_record:
        return from_record(args.write, Path(args.out if args.out != SELECTION_MD
                                            else "benchmarks/quality/qa_selection.md"))
    if not args.data or not args.models:
        ap.error("give --data DIR and the models to compare (or --from-record)")
    data = PreparedData(args.data)
    scored = [*args.models, args.reference]
    conditions = slab_conditions(args.kernels, args.thickness, args.thick_kernel)
    thick = conditions[-1] if args.thickness > 1 else None
    scores = {m: Scores() for m in scored}
    for slab in training_slabs(data, args.dose, args.kernels, args.thickness,
                               args.thick_kernel):
        for spec in scored:
            name, _, weights = spec.partition("=")
            scores[spec].add(slab, denoise(slab.low, name, weights=weights or None, device="cpu",
                                           ensemble=args.ensemble).hu[slab.inner])
        print(slab.case, slab.condition,
              {m: round(s.psnr[slab.condition][-1], 2) for m, s in scores.items()}, flush=True)
    unmeasured = gate_detectability(scores)
    candidates = {m: scores[m] for m in args.models}
    chosen = best(candidates)
    top = scores[chosen]
    keeping = top.keeps()  # the rule's fallback chose among all when none keeps
    margin = min(a - b for k in conditions
                 for a, b in zip(top.psnr[k], scores[args.reference].psnr[k]))
    argv = sys.argv[1:]  # the data folder is the reader's own: DIR
    command = "python benchmarks/select_model.py " + " ".join(
        "DIR" if k and argv[k - 1] == "--data" else a for k, a in enumerate(argv))
    lines = ["# Model selection by the worst kernel (training cases only)", "",
             f"Command: `{command}`. Dose {args.dose:g}; slabs "
             + ", ".join(f"{c} {a}:{b}" for c, a, b in SLABS)
             + f" (inner slices scored); {args.ensemble} view(s) per slice"
             + (f"; '{thick}': the same slab {args.thickness} times thicker (slices "
                "averaged)" if thick else "")
             + ". PSNR gain over the input (liver window), mean over the slabs, and the worst "
             "over kernels and slabs; the largest |mean HU change| in flat soft tissue and fat "
             "over kernels and slabs; the smallest SSIM gain over the input (liver window) over "
             "kernels and slabs.", "",
             "| model | " + " | ".join(conditions)
             + " | worst | max abs bias HU | worst SSIM gain |",
             "|---|" + "---|" * (len(conditions) + 3)]
    lines += [f"| {m} | {s.row()}" for m, s in scores.items()]
    kept = (f"among the models that keep CT numbers within {THRESHOLD_HU:g} HU (the CT-number "
            "guard's limit), raise SSIM everywhere and lose no low-contrast detectability on "
            "the phantoms (ldct qa)" if keeping else
            f"(no model kept CT numbers within {THRESHOLD_HU:g} HU, raised SSIM everywhere and "
            "kept detectability)")
    if unmeasured:
        kept += f"; not measured by ldct qa: {', '.join(unmeasured)}"
    across = f"the {', '.join(args.kernels)} kernels" + (f" and {thick} thickness"
                                                           if thick else "")
    reason = (f"largest worst-case PSNR gain over the input across {across} at dose "
              f"{args.dose:g} on training slabs {kept} ({top.worst():+.2f} dB, "
              f"max |bias| {top.bias:.2f} HU; its smallest margin over {args.reference} at "
              f"any {'kernel, thickness' if thick else 'kernel'} and slab {margin:+.2f} dB)")
    lines += ["", f"Recommended: **{chosen.partition('=')[0]}**: {reason}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.write:
        names = {m: m.partition("=")[0] for m in scores}
        record = {"model": names[chosen], "reason": reason, "command": command,
                  "worst_gain_db": {names[m]: round(s.worst(), 3) for m, s in scores.items()},
                  "max_abs_bias_hu": {names[m]: round(s.bias, 3) for m, s in scores.items()},
                  "worst_ssim_gain": {names[m]: round(s.ssim, 4) for m, s in scores.items()},
                  "margin_over_reference_db": round(margin, 3)}
        registry.RECOMMENDED_FILE.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
