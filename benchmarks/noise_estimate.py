"""How far the scan-noise estimate behind ``target_noise`` is from a result's true noise.

The truth needs a noiseless image, which no scan has: the normal dose of the prepared test case
is blurred in-plane (Gaussian, 1.5 pixels) to stand in for one, and the noise a simulated dose
adds to that case (low dose - normal dose, in each kernel's texture) is added to it. A result's
true noise is then result - blurred normal dose, in flat soft tissue; the estimate is
`ldct.noise_level.scan_noise` of the result alone. Writes a markdown table.

    python benchmarks/noise_estimate.py --data PREPARED [--slices 16] [--out FILE]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ldct.data import PreparedData
from ldct.infer import denoise
from ldct.noise_level import blend, noise_region, scan_noise
from ldct.simulate import simulate_low_dose

MODELS = ("ldct-gauss", "alden", "pdml", "vagan", "n2n25d")
KERNELS = ("hann", "sharp-ee")
STRENGTHS = (0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    parser.add_argument("--dose", type=float, default=0.25)
    parser.add_argument("--slices", type=int, default=16, help="central slices of the case")
    parser.add_argument("--out", default="benchmarks/quality/noise_estimate.md")
    args = parser.parse_args()
    data = PreparedData(args.data)
    case = data.cases("test")[0]
    normal = data.volume(case)
    start = (normal.hu.shape[0] - args.slices) // 2
    normal = replace(normal, hu=normal.hu[start:start + args.slices])
    clean = np.stack([ndimage.gaussian_filter(s, 1.5) for s in normal.hu]).astype(np.float32)
    lines = [f"# Scan-noise estimate against the true noise ({case}, dose {args.dose:g}, "
             f"{args.slices} slices)", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Command: `python benchmarks/noise_estimate.py --data DIR --dose {args.dose:g} "
             f"--slices {args.slices}`", "",
             "| kernel | model | strength | true noise HU | estimate HU | estimate / true |",
             "|---|---|---|---|---|---|"]
    for kernel in KERNELS:
        low = simulate_low_dose(normal, data.simulation(args.dose, kernel), seed=0,
                                progress=False)
        noisy = normal.with_hu(clean + (low.hu - normal.hu))
        region = noise_region(noisy.hu)
        truth = noisy.hu[1:-1][region] - clean[1:-1][region]
        estimate = scan_noise(noisy.hu, region)
        lines.append(f"| {kernel} | input | - | {truth.std():.1f} | {estimate:.1f} | "
                     f"{estimate / truth.std():.2f} |")
        for model in MODELS:
            full = denoise(noisy, model, device="cpu").hu
            for strength in STRENGTHS:
                result = blend(noisy.hu, full, strength)
                true = float((result - clean)[1:-1][region].std())
                estimate = scan_noise(result, region)
                lines.append(f"| {kernel} | {model} | {strength:g} | {true:.1f} | "
                             f"{estimate:.1f} | {estimate / true:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
