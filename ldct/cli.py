"""The `ldct` command line: a thin shell over the library (one function per subcommand)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ldct.auth import AuthError
from ldct.io import CTInputError
from ldct.simulate import KERNELS
from ldct.study.service import StudyError

STRENGTH_HELP = ("0 (input) .. 1 (full); default: the model's default strength, which leaves "
                 "about the normal dose's own noise (`ldct models -v` lists it)")
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
            cases=args.cases, params=LowDoseParams(i0=args.i0, views=args.views),
            kernels=args.kernels)
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


def _settings(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE pairs, each VALUE read as JSON (numbers, lists) or else taken as a string."""
    settings: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE (e.g. warmup_fraction=0.5), got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def cmd_train(args: argparse.Namespace) -> None:
    from ldct.train.loop import describe, train

    overrides = {k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v}
    overrides.update(_settings(args.set or []))
    if args.describe:
        print(json.dumps(describe(args.method, args.preset, overrides, args.pvm,
                                  finetuning=bool(args.init)), indent=1))
        return
    if not args.data:
        raise SystemExit("ldct train: --data is required (a folder made by `ldct prepare`); "
                         "only --describe runs without it")
    out = Path(args.out or f"runs/{args.method}")
    result = train(args.method, args.data, out, preset=args.preset, overrides=overrides,
                   resume=args.resume, pvm_path=args.pvm, device=args.device,
                   init_weights=args.init, nproc=args.nproc)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.last.items() if k.endswith("total"))
    console.print(f"trained {args.method}: {result.steps} steps in {result.wall_s / 60:.1f} min "
                  f"({losses}); outputs in {out}")


def cmd_models(args: argparse.Namespace) -> None:
    from ldct import registry

    if args.models_action == "versions":
        info = registry.get(args.name)
        manifest = info.manifest()
        rows = [{"version": "shipped", "in_use": manifest["in_use"] == "shipped",
                 "sha256": registry.file_sha256(info.shipped_weights)[:16]}]
        rows += [{"version": name, "in_use": manifest["in_use"] == name,
                  "sha256": record["sha256"][:16]}
                 for name, record in manifest["versions"].items()]
        console.print(_table(f"{args.name} versions ({info.manifest_path})", rows,
                             ["version", "in_use", "sha256"], {}))
        return
    if args.models_action == "use":
        registry.get(args.name).use(args.version)
        console.print(f"{args.name}: version {args.version} is in use from the next request on")
        return
    for name in registry.names():
        console.print(name, highlight=False)
    if args.verbose:
        rows = [registry.get(n).summary() for n in registry.names()]
        console.print(_table("models", rows, ["name", "kind", "available", "default_strength",
                                              "supervision", "paper", "title"], {}))


def cmd_token(args: argparse.Namespace) -> None:
    from ldct.auth import TokenStore, public

    store = TokenStore()
    if args.token_action == "add":
        token = store.add(args.name, args.role)
        console.print(f"token '{args.name}' (role {args.role}) added to {store.path}; it is "
                      "shown only now:", highlight=False)
        print(token, flush=True)  # the last line of stdout, unwrapped, for scripts
    elif args.token_action == "revoke":
        store.revoke(args.name)
        console.print(f"revoked '{args.name}': the server refuses it from its next request on",
                      highlight=False)
    else:
        rows = [{"name": "", "role": "", "study": "", "reader": "", **public(i)}
                for i in store.identities()]
        console.print(_table(f"tokens in {store.path}", rows,
                             ["name", "role", "study", "reader"], {}))


def _output_path(source: Path, out: Path, many: bool, fmt: str) -> Path:
    """OUT itself for one input; OUT/<input stem>.<fmt> for several."""
    if not many:
        return out
    stem = source.name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha", ".dcm", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return out / (stem if fmt == "dicom" else f"{stem}.{fmt}")


def _add_ensemble_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", type=int,
                   help="flipped/rotated views a network averages per slice, 1 (fastest) .. 8 "
                        "(default: ldct.infer.DEFAULT_ENSEMBLE, what the server runs)")


def _views(args: argparse.Namespace) -> int:
    """The self-ensemble size asked for, else the inference default."""
    from ldct.infer import DEFAULT_ENSEMBLE

    return DEFAULT_ENSEMBLE if args.ensemble is None else args.ensemble


class CTNumbersMoved(RuntimeError):
    """A result failed the CT-number check (exit code 4)."""


def _positive_hu(text: str) -> float:
    """A --target-noise that is not a level's name: a noise SD in HU."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--target-noise {text!r} is neither a noise SD in HU nor a known "
                         "level (low, medium, high, or one of --noise-levels)") from None


def cmd_denoise(args: argparse.Namespace) -> None:
    from ldct import registry
    from ldct.ct_guard import THRESHOLD_HU, check_ct_numbers
    from ldct.derived import denoising
    from ldct.infer import denoise, denoise_to_noise
    from ldct.io import read_mask, read_volume, write_volume
    from ldct.noise_level import NoiseLevels, scan_kernel

    inputs = [Path(p) for p in args.inputs]
    if args.check_mask and len(inputs) > 1:
        raise ValueError("--check-mask is a mask of one input: give one input with it")
    out = Path(args.output)
    views = _views(args)
    levels = NoiseLevels.load(args.noise_levels)
    many = len(inputs) > 1
    if many:
        out.mkdir(parents=True, exist_ok=True)
    info = registry.get(args.model)
    version = info.version() if info.kind == "network" else info.kind
    moved = 0
    for source in inputs:
        volume = read_volume(source)
        strength, said = _strength(args), ""
        if args.target_noise is None:
            result = denoise(volume, args.model, strength=strength, device=args.device,
                             progress=True, ensemble=views)
        else:
            hu = levels.resolve(args.target_noise, scan_kernel(volume.dicom)) \
                if args.target_noise in levels.levels else _positive_hu(args.target_noise)
            result, match = denoise_to_noise(volume, args.model, hu, device=args.device,
                                             progress=True, ensemble=views)
            strength = match.strength
            said = (f"\n  noise {match.input_noise:.1f} HU -> {match.result_noise:.1f} HU "
                    f"(target {hu:g} HU{'' if match.reached else ', not reachable'}) at "
                    f"strength {strength:.3f}")
        target = _output_path(source, out, many, args.format)
        write_volume(result, target, made_by=denoising(
            str(volume.dicom.get("SeriesDescription", "CT")) if volume.dicom else "CT",
            args.model, version, strength))
        masks = {Path(args.check_mask).name: read_mask(args.check_mask, like=volume)} \
            if args.check_mask else None
        check = check_ct_numbers(volume.hu, result.hu, masks)
        console.print(f"{source} -> {target}{said}\n  {check.message()}",
                      style=None if check.passed else "bold red", highlight=False)
        moved += not check.passed
    if moved:
        raise CTNumbersMoved(f"{moved} of {len(inputs)} results moved CT numbers past "
                             f"±{THRESHOLD_HU:g} HU (see above); they were written, flagged here")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ldct.evaluate import COLUMNS, FORMATS, evaluate, evaluate_kernels, worst_kernels

    views = _views(args)
    if args.kernels:
        if args.write_cards:
            raise ValueError("--write-cards goes with the plain evaluation, not --kernels")
        results = evaluate_kernels(args.data, args.out, args.kernels, dose=args.dose,
                                   models=args.models, device=args.device,
                                   max_slices=args.max_slices, ensemble=views,
                                   real_volume=args.real_volume, thickness=args.thickness)
        console.print(_table("worst kernel per model", worst_kernels(results),
                             ["method", "worst_kernel", "psnr_gain_db", "ssim_gain",
                              "noise_vs_ld", "max_abs_bias_hu"],
                             {"psnr_gain_db": "+.2f", "ssim_gain": "+.4f",
                              "noise_vs_ld": ".2f", "max_abs_bias_hu": ".2f"}))
        console.print(f"report: {Path(args.out) / 'kernels.md'}")
        return
    rows = evaluate(args.data, args.out, dose=args.dose, models=args.models, device=args.device,
                    max_slices=args.max_slices, ensemble=views)
    if args.write_cards:
        from ldct import registry
        from ldct.cards import write_card

        command = f"ldct evaluate --data DIR --dose {args.dose:g} --out {args.out}"
        evaluation = {"case": "ircadb17", "dose": args.dose, "command": command,
                      "views_per_slice": views}
        for row in rows[1:]:
            if registry.get(row["method"]).kind == "network":
                card = write_card(row["method"], row, rows[0], evaluation,
                                  Path(args.out) / "kernels.csv")
                console.print(f"card: {card}")
    console.print(_table(f"held-out quality, dose {args.dose:g}", rows, list(COLUMNS), FORMATS))
    console.print(f"report: {Path(args.out) / 'quality.md'}")


def _strength(args: argparse.Namespace) -> float:
    """``--strength``, or the model's default (registry.DEFAULT_STRENGTHS) when not given."""
    from ldct import registry

    return registry.get(args.model).strength_or_default(args.strength)


def cmd_batch(args: argparse.Namespace) -> None:
    from ldct.batch.ledger import Ledger
    from ldct.batch.run import BatchOptions, run_batch
    from ldct.batch.workers import Job, model_version
    from ldct.pacs import PacsError

    options = BatchOptions(args.workers, args.cpus_per_worker, args.address)
    strength = _strength(args)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"--strength must be in [0, 1], got {strength}")
    source = args.source
    pacs_source = source.startswith(("http://", "https://"))
    if args.write_back and not (pacs_source or args.pacs):
        raise ValueError("--write-back stores results in a PACS: give a DICOMweb URL as SOURCE "
                         "or --pacs URL")
    out = str(Path(args.out).resolve()) if args.out else ""
    job = Job(args.model, model_version(args.model), strength,
              source_pacs=source if pacs_source else (args.pacs or ""),
              write_pacs=(source if pacs_source else args.pacs) if args.write_back else "",
              out=out, ensemble=_views(args), device=args.device)
    home = Path(out) / ".ldct-batch" if out else Path.home() / ".cache" / "ldct" / "batch"
    ledger = Ledger(args.ledger or home / "ledger.sqlite")
    try:
        items = list(_batch_items(args, ledger, job))
    except PacsError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    audit = ledger.path.with_name("audit.log")
    summary = run_batch(items, job, ledger, audit, workers=options.workers,
                        cpus_per_worker=options.cpus_per_worker, address=options.address)
    for failure in summary.failures:
        console.print(f"failed {failure.series or failure.key}: {failure.reason}",
                      style="red", highlight=False)
    console.print(f"ledger {ledger.path}, audit log {audit}", highlight=False)
    print(summary.line(), flush=True)  # the last line, unwrapped, for scripts


def _batch_items(args: argparse.Namespace, ledger, job) -> Iterable:
    """The worklist SOURCE names; a PACS query leaves out the results the ledger recorded."""
    from ldct.batch import worklist

    source = args.source
    if source.startswith(("http://", "https://")):
        return worklist.from_query(source, args.study_date or "", args.description or "",
                                    exclude=ledger.derived(job.key) | ledger.derived(
                                        job.key, other_versions=True))
    if source.lower().endswith(".csv"):
        return worklist.from_csv(source, pacs=args.pacs, datastore=args.datastore)
    if Path(source).is_dir():
        return worklist.from_folder(source)
    raise ValueError(f"{source}: SOURCE is a DICOMweb URL (http...), a folder of series or a "
                     ".csv of datastore ids")


def cmd_qa(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from ldct import registry
    from ldct.qa.report import write_report
    from ldct.qa.run import INPUT, QUICK, Cache, Settings, run
    from ldct.qa.summary import model_summaries, tables, write_summaries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # progress
    settings = QUICK if args.quick else Settings()
    overrides = {"sizes": args.sizes and tuple(args.sizes), "doses": args.doses and tuple(
        args.doses), "kernels": args.kernels and tuple(args.kernels), "pairs": args.pairs}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v})
    if 1.0 not in settings.doses or not all(0 < a <= 1 for a in settings.doses):
        raise ValueError(f"--doses must be fractions in (0, 1] and include 1 (full dose: the "
                         f"reference of every verdict), got {list(settings.doses)}")
    if not all(100 <= d <= 500 for d in settings.sizes) or settings.pairs < 2:
        raise ValueError(f"--sizes must be patient diameters from 100 to 500 mm (got "
                         f"{list(settings.sizes)}) and --pairs at least 2 (got {settings.pairs})")
    models = [INPUT, *(args.models or [n for n in registry.names()
                                        if registry.get(n).available()])]
    for name in models[1:]:
        registry.get(name)  # an unknown name fails here, before hours of scanning
    argv = [a for a in sys.argv[2:] if a != "--report-only"]
    threads = os.environ.get("OMP_NUM_THREADS")  # 1 on a shared machine: far faster
    command = ((f"OMP_NUM_THREADS={threads} " if threads else "") + "ldct qa "
               + (" ".join(argv) if sys.argv[1:2] == ["qa"] else ""))
    cache = (Cache(Path(args.cache), settings) if args.report_only
             else run(settings, list(dict.fromkeys(models)), Path(args.cache)))
    result = tables(settings, list(dict.fromkeys(models)), cache)
    out = Path(args.out)
    summaries = model_summaries(result.rows, str(out / "qa.md"), command)
    report = write_report(result, summaries, settings, list(dict.fromkeys(models)), out,
                          command, registry.recommended())
    if args.write:
        write_summaries(summaries, registry.QUALITY_FILE)
        console.print(f"model summaries: {registry.QUALITY_FILE}")
    console.print(f"report: {report}"
                  + (f" ({len(result.missing)} results still missing)" if result.missing
                     else ""))


def cmd_serve(args: argparse.Namespace) -> None:
    from ldct.serve import serve

    serve(args.studies, args.host, args.port, args.models, args.preload, args.study_root,
          insecure_no_auth=args.insecure_no_auth, cors_origins=args.cors_origin,
          noise_levels=args.noise_levels)


MAX_PLAN_READERS = 200  # reader studies rarely reach 30: a bound, not a design limit


def cmd_study(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from ldct.batch.run import BatchOptions
    from ldct.study import definition as study_definition
    from ldct.study.analysis import read_scores, write_scores
    from ldct.study.report import write_report
    from ldct.study.service import StudyService, study_root

    if args.action == "report":
        result = write_report(read_scores(args.target), args.out,
                              title=f"Reader study: {Path(args.target).stem}")
        console.print(f"wrote {args.out}/report.md, report.html, mrmc.csv, figures and "
                      f"scores.csv ({len(result.readers)} readers, {len(result.conditions)} "
                      "conditions)")
        return
    if args.action == "plan":
        _study_plan(args)
        return
    batch_flags = [f for f, v in (("--workers", args.workers), ("--address", args.address),
                                  ("--cpus-per-worker", args.cpus_per_worker)) if v is not None]
    if (batch_flags and not args.batch) or (args.batch and args.action != "create"):
        raise ValueError("--batch, --workers, --address and --cpus-per-worker are options of "
                         "`ldct study create --batch`")
    service = StudyService(args.root or study_root())
    if args.action == "create":
        definition = study_definition.load(args.target)
        sizes = {k: v for k, v in (("workers", args.workers),
                                   ("cpus_per_worker", args.cpus_per_worker)) if v is not None}
        options = BatchOptions(**sizes, address=args.address) if args.batch else None
        bar = tqdm(total=len(definition.cases) * len(definition.conditions), unit="volume",
                   desc="store study volumes" if options else "denoise study volumes",
                   delay=0.1 if options else 0)  # with --batch: after the batch's own bars
        with bar:
            created = service.create(definition, device=args.device, batch_options=options,
                                     progress=lambda done, total, what: bar.update(1))
        if options:
            console.print(f"batch: {created['batch']}", highlight=False)
        console.print(f"study [bold]{created['study']}[/] in {service.root}: "
                      f"{created['items']} items per reader\ncoordinator token (keep it): "
                      f"{created['coordinator_token']}\nreader tokens (give each reader their "
                      "own; they are shown only now):", highlight=False)
        for reader, token in created["reader_tokens"].items():
            print(f"{reader} {token}", flush=True)
        return
    if args.action == "add-reader":
        if not args.reader:
            raise ValueError("add-reader needs --reader ID")
        added = service.add_reader(args.target, args.reader)
        console.print(f"reader {added['reader']} of {added['study']}: their token (any earlier "
                      "one is revoked):", highlight=False)
        print(added["reader_token"], flush=True)
        return
    token = args.token or ""
    if args.action == "status":
        status = service.status(args.target, token)
        console.print(f"{status['name']}: {status['state']}", highlight=False)
        for reader, progress in status["readers"].items():
            console.print(f"  {reader}: {progress['done']} of {progress['total']}")
    elif args.action == "close":
        console.print(f"closed: {service.close(args.target, token)['state']}")
    elif args.action == "export":
        rows = service.export_rows(args.target, token)
        write_scores(rows, args.out)
        console.print(f"wrote {len(rows)} score rows to {args.out}")


def _study_plan(args: argparse.Namespace) -> None:
    """Readers x cases for a FOM difference and power, from a pilot's OR components."""
    from ldct.study.analysis import pilot_components
    from ldct.study.mrmc import plan

    if args.effect is None or args.effect <= 0:
        raise ValueError("plan needs --effect: the difference of figures of merit to detect "
                         "(AUC for a detection criterion, e.g. 0.05; Likert points, e.g. 0.3)")
    low, _, high = args.readers.partition("-")
    if not (low.isdigit() and high.isdigit() and 2 <= int(low) <= int(high) <= MAX_PLAN_READERS):
        raise ValueError(f"--readers must be a range like 3-15 (at least 2, at most "
                         f"{MAX_PLAN_READERS}), got {args.readers[:40]!r}")
    if not (0 < args.power < 1 and 0 < args.alpha < 1):
        raise ValueError(f"--power and --alpha are probabilities between 0 and 1, got "
                         f"{args.power} and {args.alpha}")
    components, pilot_cases, row = pilot_components(args.target, args.criterion, args.model)
    console.print(f"pilot: {row['criterion']} / {row['model']}, {pilot_cases} cases; OR "
                  f"var(TR) {components.var_treatment_reader:.3g}, Var "
                  f"{components.var_error:.3g}, Cov1 {components.cov1:.3g}, Cov2 "
                  f"{components.cov2:.3g}, Cov3 {components.cov3:.3g}\nHillis-Obuchowski-"
                  f"Berbaum sample size, random readers and cases: difference {args.effect}, "
                  f"power {args.power}, alpha {args.alpha}", highlight=False)
    print("readers,cases,power", flush=True)
    for entry in plan(args.effect, components, pilot_cases,
                      range(int(low), int(high) + 1), args.power, args.alpha):
        print(f"{entry['readers']},{entry['cases'] or 'unreachable'},"
              f"{'' if entry['power'] is None else round(entry['power'], 3)}", flush=True)


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
    p.add_argument("--kernel", default="hann", choices=list(KERNELS))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("prepare", help="build the training/test sets from the real volumes")
    p.add_argument("--data", default="../shared/data", help="the shared data folder")
    p.add_argument("--out", required=True, help="output folder (cached: reruns are cheap)")
    p.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.25, 0.10])
    p.add_argument("--kernels", nargs="+", choices=(*KERNELS, "own"), default=[],
                   help="also the low doses as these reconstruction kernels give them ('own': "
                        "in each scan's own measured noise texture)")
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

    p = sub.add_parser("train", help="train a denoiser (or the CT encoder) on prepared data")
    p.add_argument("method", help="pan, pdml, alden, n2n25d, vagan or encoder")
    p.add_argument("--data", help="a folder made by `ldct prepare` (required unless --describe)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--describe", action="store_true",
                   help="print what would train (networks, phases, losses, data) as JSON; "
                        "trains nothing")
    p.add_argument("--out", help="run folder (default runs/METHOD)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--steps", type=int, help="override the preset's number of steps")
    p.add_argument("--batch", type=int, help="override the preset's batch size")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="override other hyper-parameters, e.g. warmup_fraction=0.5")
    p.add_argument("--init", help="start the network from these trained weights (a model.pt)")
    p.add_argument("--pvm", help="PVM weights: CT encoder or torchvision VGG19/ResNet state dict")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N local processes under DistributedDataParallel (gloo on "
                        "CPU, NCCL with one GPU each); --batch stays the global batch. Several "
                        "nodes: torchrun --nnodes ... -m ldct.cli train ...")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="list the denoisers (names first; details with -v); "
                                      "their fine-tuned versions; roll back")
    p.add_argument("-v", "--verbose", action="store_true")
    actions = p.add_subparsers(dest="models_action")
    q = actions.add_parser("versions", help="a network's versions and the one in use")
    q.add_argument("name")
    q = actions.add_parser("use", help="serve another recorded version (or 'shipped')")
    q.add_argument("name")
    q.add_argument("version")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("token", help="the server's bearer tokens ($LDCT_AUTH_FILE, default "
                                     "~/.config/ldct/tokens.json)")
    actions = p.add_subparsers(dest="token_action", required=True)
    q = actions.add_parser("add", help="make a token; it is printed as the last line")
    q.add_argument("name", help="who holds it (letters, digits, . _ @ -)")
    q.add_argument("--role", required=True, choices=["radiologist", "coordinator", "admin"],
                   help="reader tokens come from `ldct study create` / `ldct study add-reader`")
    actions.add_parser("list", help="names and roles (tokens are stored only as hashes)")
    q = actions.add_parser("revoke", help="remove a token")
    q.add_argument("name")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("denoise", help="denoise CT volumes with a model")
    p.add_argument("inputs", nargs="+", help="DICOM folders/files, zips, NRRD, NIfTI")
    p.add_argument("-o", "--output", required=True,
                   help="output file (format by extension) or, with several inputs, a folder")
    p.add_argument("--model", required=True, help="a name from `ldct models`")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--strength", type=float, help=STRENGTH_HELP)
    level.add_argument("--target-noise", metavar="HU|LEVEL",
                       help="the noise SD (HU, flat soft tissue) the result should have, or a "
                            "level's name (low, medium, high, or one of --noise-levels): the "
                            "strength that leaves it is chosen and printed")
    p.add_argument("--noise-levels", metavar="JSON", help="a site's named noise levels (as "
                                                          "`ldct serve --noise-levels`)")
    _add_ensemble_option(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--format", default="nrrd", choices=["nrrd", "nii.gz", "mha", "dicom"],
                   help="output format with several inputs")
    p.add_argument("--check-mask", help="a mask (NIfTI/NRRD, e.g. the liver) whose mean HU change "
                                        "the CT-number check measures instead of the regions it "
                                        "finds")
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("evaluate", help="held-out metrics of every model on the test case")
    p.add_argument("--data", required=True, help="a folder made by `ldct prepare`")
    p.add_argument("--dose", type=float, default=0.25)
    p.add_argument("--out", default="benchmarks/quality")
    p.add_argument("--models", nargs="+", help="default: every available model and baseline")
    p.add_argument("--max-slices", type=int, help="only the slices with the most liver (quick)")
    _add_ensemble_option(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--kernels", nargs="+", choices=list(KERNELS),
                   help="kernel sweep: the test case with each kernel's noise, a table per "
                        "kernel and each model's worst kernel (kernels.md)")
    p.add_argument("--real-volume", help="with --kernels: also this real normal-dose scan of "
                                         "another scanner, its lower dose in its own texture")
    p.add_argument("--thickness", type=int, default=1,
                   help="with --kernels: also the first kernel with N slices averaged into one")
    p.add_argument("--write-cards", action="store_true",
                   help="write models/<name>/card.{json,md} with these held-out metrics")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("batch", help="denoise a worklist (PACS query, folder, CSV of ids) on "
                                     "Ray; resumable")
    p.add_argument("source", help="a DICOMweb URL (its CT series, filtered by --study-date and "
                                  "--description), a folder of series/volumes, or a CSV of "
                                  "datastore ids")
    p.add_argument("--model", required=True, help="a name from `ldct models`")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="write each result to this folder")
    where.add_argument("--write-back", action="store_true",
                       help="store each result in the PACS as a derived series (STOW-RS)")
    p.add_argument("--strength", type=float, help=STRENGTH_HELP)
    p.add_argument("--workers", type=int, default=2, help="Ray actors, each loading the model "
                                                          "once (default 2)")
    p.add_argument("--address", help="a Ray cluster to join (e.g. HEAD:6379; default: a local "
                                     "Ray on this machine)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPU cores per worker")
    p.add_argument("--study-date", help="PACS query: StudyDate or range, e.g. "
                                        "20260101-20260131")
    p.add_argument("--description", help="PACS query: SeriesDescription, * wildcards")
    p.add_argument("--pacs", help="the DICOMweb URL CSV ids name series of, and where "
                                  "--write-back stores a folder's DICOM series")
    p.add_argument("--datastore", help="the local datastore folder CSV ids name images of")
    p.add_argument("--ledger", help="the ledger file (default OUT/.ldct-batch/ledger.sqlite, "
                                    "or ~/.cache/ldct/batch/ledger.sqlite with --write-back)")
    _add_ensemble_option(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("qa", help="task-based image quality on digital phantoms: CT numbers, "
                                  "NPS, TTF, low-contrast detectability (CHO) per model, "
                                  "dose, kernel and patient size")
    p.add_argument("--quick", action="store_true",
                   help="a small run (tests, a first look): 2 sizes, 2 doses, 1 kernel, "
                        "128^2 matrix, few scans")
    p.add_argument("--models", nargs="+",
                   help="default: every available network and baseline (the unprocessed "
                        "input is always measured, as model 'input')")
    p.add_argument("--sizes", nargs="+", type=float, help="patient diameters in mm")
    p.add_argument("--doses", nargs="+", type=float, help="dose fractions; must include 1")
    p.add_argument("--kernels", nargs="+", choices=list(KERNELS))
    p.add_argument("--pairs", type=int, help="signal-present (and -absent) scans per size "
                                             "(each gives every rod 4 samples)")
    p.add_argument("--cache", default=".qa_cache",
                   help="per-condition results; the same command resumes from it")
    p.add_argument("--out", default="benchmarks/quality")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: the report of what the cache holds (while a run "
                        "goes on, or of a stopped one)")
    p.add_argument("--write", action="store_true",
                   help="write each model's dose-reduction estimate and detectability losses "
                        "to models/task_quality.json (cards, /info/, the model selection)")
    p.set_defaults(func=cmd_qa)

    p = sub.add_parser("serve", help="start the MONAI Label server with the denoisers")
    p.add_argument("--studies", help="datastore folder or DICOMweb URL (default: a demo study)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", default="all", help="all, or name,name")
    p.add_argument("--preload", action="store_true", help="load every network at start-up")
    p.add_argument("--study-root", help="folder of the reader studies served under /study/")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="no tokens (loopback addresses only; development only)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="a web viewer's origin allowed to call the server (repeatable; "
                        "default: none)")
    p.add_argument("--noise-levels", metavar="JSON",
                   help='the site\'s named noise levels for target_noise, HU in flat soft tissue '
                        'per kernel, e.g. {"liver portal venous": {"B30f": 12, "default": 14}} '
                        "(added to low/medium/high)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("study", help="reader studies: create, add-reader, status, close, "
                                     "export, report, plan")
    p.add_argument("action", choices=["create", "add-reader", "status", "close", "export",
                                       "report", "plan"])
    p.add_argument("target", help="create: the study YAML; report: an exported CSV; plan: a "
                                  "pilot's exported CSV or its report's mrmc.csv; otherwise: "
                                  "the study id")
    p.add_argument("--root", help="folder of the studies (default $LDCT_STUDY_ROOT or "
                                  "~/.cache/ldct/reader_studies)")
    p.add_argument("--token", help="the coordinator token printed by create")
    p.add_argument("--reader", help="add-reader: the reader id to add (or to give a new token)")
    p.add_argument("--out", help="export: the CSV to write; report: the output folder")
    p.add_argument("--device", default="auto", help="create: where the models run")
    p.add_argument("--batch", action="store_true",
                   help="create: denoise on Ray with `ldct batch`'s workers and a ledger (a "
                        "re-run after a crash or a failed case denoises only what is left)")
    p.add_argument("--workers", type=int, help="create --batch: Ray actors, each loading a "
                                               "model once (default 2)")
    p.add_argument("--address", help="create --batch: a Ray cluster to join (e.g. HEAD:6379; "
                                     "default: a local Ray on this machine)")
    p.add_argument("--cpus-per-worker", type=int, help="create --batch: CPU cores per worker "
                                                       "(default 1)")
    p.add_argument("--effect", type=float, help="plan: the FOM difference to detect")
    p.add_argument("--power", type=float, default=0.8, help="plan: the power wanted")
    p.add_argument("--alpha", type=float, default=0.05, help="plan: the test's level")
    p.add_argument("--readers", default="3-15", help="plan: the reader counts to consider")
    p.add_argument("--criterion", help="plan: the pilot's criterion (if it has several)")
    p.add_argument("--model", help="plan: the pilot's model (if it has several)")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CTInputError, FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except (StudyError, AuthError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except CTNumbersMoved as exc:
        console.print(f"[bold red]CT-number check failed:[/] {exc}", highlight=False)
        return 4
    except OSError as exc:  # a full disk, a read-only folder: say where, keep the input
        console.print(f"[bold red]error:[/] cannot write {exc.filename or 'the output'}: "
                      f"{exc.strerror or exc}. Free space or choose another output; the input "
                      "was not changed.", highlight=False)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
