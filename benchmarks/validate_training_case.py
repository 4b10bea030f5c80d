"""Model selection on a TRAINING case (or a volume no model saw), never on the held-out ircadb17.

Takes a few slices of a training case's normal dose, inserts round hypodense lesions into
homogeneous soft tissue (a lesion-insertion proxy: the training cases have no tumour masks),
simulates the low dose with the same physics as `ldct prepare`, and scores each model:
PSNR (liver window), soft-tissue bias and error SD against the low dose, and lesion CNR
against a ring of background around each lesion.

    python benchmarks/validate_training_case.py --data ~/.cache/ldct/prepared \
        ld ldct-nlm vagan pdml=path/to/model.pt ...
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from ldct import metrics
from ldct.data import PreparedData
from ldct.infer import DEFAULT_ENSEMBLE, denoise
from ldct.io import read_volume
from ldct.simulate import KERNELS, ParallelBeam, simulate_slice_noise

MARGIN = 2  # slices at each end of the slab that serve only as context


def insert_lesions(hu: np.ndarray, spacing: tuple[float, float, float], contrast: float,
                   radius_mm: float, count: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical lesions centred in the middle slice (real lesions span several slices, which
    2.5D models rely on), their background rings per slice, and the volume with them added."""
    rng = np.random.default_rng(seed)
    dx, dz = spacing[0], spacing[2]
    radius = radius_mm / dx
    mid = hu.shape[0] // 2
    image = hu[mid].astype(np.float32)
    smooth = ndimage.gaussian_filter(image, radius / 2)
    local_sd = np.sqrt(np.maximum(ndimage.gaussian_filter(image**2, radius / 2) - smooth**2, 0))
    tissue = (smooth > 30) & (smooth < 150) & (local_sd < 50)
    room = ndimage.distance_transform_edt(tissue) > 2 * radius
    yy, xx = np.mgrid[: hu.shape[1], : hu.shape[2]]
    lesion = np.zeros(hu.shape, bool)
    ring = np.zeros(hu.shape, bool)
    for _ in range(count):
        ys, xs = np.nonzero(room)
        if ys.size == 0:
            break
        i = rng.integers(ys.size)
        dist = np.hypot(yy - ys[i], xx - xs[i])
        for k in range(hu.shape[0]):
            r_k = np.sqrt(max(radius_mm**2 - ((k - mid) * dz) ** 2, 0.0)) / dx
            if r_k >= 1:
                lesion[k] |= dist <= r_k
                ring[k] |= (dist > r_k + 2 / dx) & (dist <= 2 * r_k + 2 / dx)
        room &= dist > 5 * radius
    ring &= ~lesion
    return lesion, ring, np.where(lesion, hu + contrast, hu).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    ap.add_argument("--case", default="tcia_pancreas001")
    ap.add_argument("--volume", help="instead of a training case: a normal-dose volume no model "
                    "was trained on, e.g. ../shared/data/ct/totalseg_j2k/dicom (another scanner "
                    "and kernel); never the held-out ircadb17")
    ap.add_argument("--slices", default="58:68", help="first:stop; the 2 slices at each end are "
                    "only context (scores count the inner ones, which have real neighbours)")
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--kernel", choices=KERNELS, help="reconstruction kernel of the simulated "
                    "low dose (default: the one the data was prepared with); another kernel "
                    "gives a noise texture the models were not trained on")
    ap.add_argument("--contrast", type=float, default=-30.0, help="lesion contrast in HU")
    ap.add_argument("--radius-mm", type=float, default=6.0)
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE,
                    help="flipped/rotated views each network averages (1: one pass)")
    ap.add_argument("models", nargs="+", help="ld, a registry name, or NAME=weights.pt")
    args = ap.parse_args()
    data = PreparedData(args.data)
    if args.volume:
        nd, name = read_volume(args.volume), args.volume
        held_out = [c for c in data.cases("test") if c in str(Path(args.volume).resolve())]
        if held_out:
            raise SystemExit(f"{held_out[0]} is the held-out test case: select models on "
                             "other data")
    elif data.manifest["cases"][args.case]["role"] != "train":
        raise SystemExit(f"{args.case} is not a training case: select models on training data")
    else:
        nd, name = data.volume(args.case), args.case
    first, stop = (int(v) for v in args.slices.split(":"))
    nd = dataclasses.replace(nd, hu=nd.hu[first:stop])
    lesion, ring, nd_hu = insert_lesions(nd.hu, nd.spacing, args.contrast, args.radius_mm,
                                         count=3, seed=0)
    if not lesion.any():
        raise SystemExit(f"no homogeneous soft tissue for a {args.radius_mm:g} mm lesion in "
                         f"{name} slices {args.slices}: pick other slices or a smaller radius")
    nd = nd.with_hu(nd_hu)
    params = data.simulation(args.dose, args.kernel)
    beam = ParallelBeam(nd.hu.shape[1], nd.hu.shape[2], (nd.spacing[0], nd.spacing[1]),
                        params.views, params.kernel)
    ld = nd.with_hu(np.stack([s + simulate_slice_noise(s, beam, params,
                                                         np.random.default_rng([7, k]))
                              for k, s in enumerate(nd.hu)]))
    inner = slice(MARGIN, nd.hu.shape[0] - MARGIN)
    reference, lesion, ring = nd.hu[inner], lesion[inner], ring[inner]
    soft = (reference > -100) & (reference < 200)
    base_sd = (ld.hu[inner] - reference)[soft].std()
    print(f"{name} slices {args.slices}, dose {args.dose:g}, kernel {params.kernel}, "
          f"networks average "
          f"{args.ensemble} view(s), {lesion.any((1, 2)).sum()} "
          f"slices with lesions ({args.contrast:+g} HU, r {args.radius_mm:g} mm)")
    print(f"{'model':32s} {'psnr':>6s} {'bias':>6s} {'err_sd':>6s} {'cnr':>5s}")
    for row, image in [("normal dose", nd.hu)] + [
            (spec, ld.hu if spec == "ld" else
             denoise(ld, spec.partition("=")[0], weights=spec.partition("=")[2] or None,
                     device="cpu", ensemble=args.ensemble).hu) for spec in args.models]:
        image = image[inner]
        err = (image - reference)[soft]
        print(f"{row[-32:]:32s} {metrics.psnr(image, reference):6.2f} {err.mean():+6.2f} "
              f"{err.std() / base_sd:6.3f} {metrics.cnr(image, lesion, ring):5.2f}")


if __name__ == "__main__":
    main()
