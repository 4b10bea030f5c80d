"""How much of the simulated noise a HU-preserving network can never remove.

Networks wrapped in ``HUPreservingDenoiser`` keep the input's band below a Gaussian of
``keep_sigma`` pixels exactly; the noise in that band stays. This prints, per training case,
the SD of that band of the added noise (low dose - normal dose, inside the body) as a fraction
of the added noise SD, for several sigmas. Training cases only, never the held-out ircadb17.

    python benchmarks/kept_band.py --data ~/.cache/ldct/prepared5 --dose 0.25
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from ldct.data import PreparedData
from ldct.nets.blocks import gaussian_lowpass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2, 3, 4, 5, 6])
    args = ap.parse_args()
    data = PreparedData(args.data)
    print(f"dose {args.dose:g}: SD of the kept band / SD of the added noise")
    print(f"{'case':18s} " + " ".join(f"{'sigma ' + format(s, 'g'):>9s}" for s in args.sigmas))
    for case in data.cases("train"):
        normal = data.volume(case).hu.astype(np.float64)
        noise = data.volume(case, args.dose).hu - normal
        inside = ndimage.binary_erosion(normal > -300, np.ones((1, 41, 41), bool))
        slices = torch.from_numpy(noise.astype(np.float32))[:, None]
        fractions = [gaussian_lowpass(slices, sigma)[:, 0].numpy()[inside].std()  # as kept
                     / noise[inside].std() for sigma in args.sigmas]
        print(f"{case:18s} " + " ".join(f"{f:9.3f}" for f in fractions))


if __name__ == "__main__":
    main()
