"""The `ldct` command line: a thin shell over the library (one function per subcommand)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ldct.io import CTInputError

console = Console(width=None if sys.stdout.isatty() else 160)  # no wrapping in logs


def _table(title: str, rows: list[dict], columns: list[str], formats: dict[str, str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in formats else "left")
    for row in rows:
        table.add_row(*(format(row[c], formats.get(c, "")) for c in columns))
    return table


def cmd_simulate(args: argparse.Namespace) -> None:
    from ldct.io import read_volume, write_volume
    from ldct.simulate import LowDoseParams, simulate_low_dose

    params = LowDoseParams(dose=args.dose, i0=args.i0, electronic_noise=args.electronic_noise,
                           views=args.views, kernel=args.kernel)
    volume = read_volume(args.input)
    result = simulate_low_dose(volume, params, seed=args.seed)
    options = {"description": f"simulated dose {args.dose:g}",
               "derivation": f"ldct simulate: projection-domain noise, {params}"}
    out = write_volume(result, args.output, **options)
    console.print(f"wrote {out} (dose {args.dose:g}, {volume.hu.shape[0]} slices)")


def cmd_prepare(args: argparse.Namespace) -> None:
    from ldct.data import PreparedData, prepare, summarize
    from ldct.simulate import LowDoseParams

    prepare(args.data, args.out, doses=args.doses, seed=args.seed, max_slices=args.max_slices,
            cases=args.cases, params=LowDoseParams(i0=args.i0, views=args.views))
    rows = summarize(PreparedData(args.out))
    console.print(_table(f"prepared data in {args.out}", rows,
                         ["case", "role", "dose", "slices", "hu_min", "hu_max", "region",
                          "sd_region", "added_noise_sd"],
                         {"dose": "g", "slices": "d", "hu_min": ".0f", "hu_max": ".0f",
                          "sd_region": ".1f", "added_noise_sd": ".1f"}))


def cmd_demo(args: argparse.Namespace) -> None:
    from ldct.demo import run_demo

    data = Path(args.data) if args.data else Path("../shared/data")
    report = run_demo(Path(args.out), data_dir=None if args.phantom else data, dose=args.dose)
    console.print(_table(f"demo: {report.source}, dose {args.dose:g}", report.rows,
                         list(report.rows[0]), {"psnr_db": ".2f", "ssim": ".4f",
                                                "rmse_hu": ".1f", "liver_bias_hu": "+.1f",
                                                "liver_noise_sd": ".1f"}))
    console.print(f"side-by-side image: {report.figure}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldct", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a low-dose scan of a CT volume")
    p.add_argument("input", help="DICOM folder/file, zip, NRRD or NIfTI")
    p.add_argument("output", help="output .nrrd/.nii.gz/.mha, or a folder for a DICOM series")
    p.add_argument("--dose", type=float, default=0.25, help="dose fraction (default 0.25)")
    p.add_argument("--i0", type=float, default=1.5e5, help="photons per element and view")
    p.add_argument("--electronic-noise", type=float, default=10.0, help="variance (photons^2)")
    p.add_argument("--views", type=int, default=720, help="projections over 180 degrees")
    p.add_argument("--kernel", default="hann", choices=["ram-lak", "shepp-logan", "hann"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("prepare", help="build the training/test sets from the real volumes")
    p.add_argument("--data", default="../shared/data", help="the shared data folder")
    p.add_argument("--out", required=True, help="output folder (cached: reruns are cheap)")
    p.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.25, 0.10])
    p.add_argument("--cases", nargs="+", help="only these cases (default: all)")
    p.add_argument("--max-slices", type=int, help="central slices per case (quick runs)")
    p.add_argument("--i0", type=float, default=1.5e5)
    p.add_argument("--views", type=int, default=720)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("demo", help="phantom or real slice -> low dose -> denoised, as a PNG")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--data", help="shared data folder (default: ../shared/data when present)")
    p.add_argument("--phantom", action="store_true", help="use the phantom even if data exists")
    p.add_argument("--dose", type=float, default=0.25)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CTInputError, FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
