"""Held-out evaluation (`ldct evaluate`): every model and baseline on the test case.

On the prepared test volume (ircadb17, never used for training or tuning) at one simulated
dose: PSNR/SSIM on the liver window, RMSE in the body, HU bias in liver and fat, residual noise
SD in the liver, NPS peak frequency, tumour CNR and seconds per slice. Writes a markdown
table, a CSV, a montage of one liver slice across methods and the NPS curves. The kernel sweep
(`evaluate_kernels`) scores the same case with the noise of several reconstruction kernels and
reports each model's worst kernel, and each output's texture (noise SD and NPS mean frequency)
against the normal dose's own, at full strength and at the strength that matches the normal
dose's noise (`texture_rows`), from which each model's default level follows (`DEFAULT_RULE`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from ldct import metrics, registry  # noqa: E402
from ldct.data import PreparedData  # noqa: E402
from ldct.infer import DEFAULT_ENSEMBLE, denoise  # noqa: E402
from ldct.io import CTVolume, read_volume  # noqa: E402
from ldct.noise_bank import flat_tissue, own_textured, slice_differences  # noqa: E402
from ldct.noise_level import NoiseCalibration, blend, match_noise, robust_sd  # noqa: E402
from ldct.simulate import simulate_low_dose  # noqa: E402

COLUMNS = ("method", "psnr_db", "ssim", "rmse_hu", "liver_bias_hu", "fat_bias_hu",
           "liver_noise_sd", "noise_vs_ld", "nps_peak_cpmm", "tumour_cnr", "liver_sd_hu",
           "s_per_slice")
FORMATS = {"psnr_db": ".2f", "ssim": ".4f", "rmse_hu": ".1f", "liver_bias_hu": "+.2f",
           "fat_bias_hu": "+.2f", "liver_noise_sd": ".1f", "noise_vs_ld": ".2f",
           "nps_peak_cpmm": ".3f", "tumour_cnr": ".2f", "liver_sd_hu": ".1f",
           "s_per_slice": ".3f", "noise_sd": ".1f", "noise_vs_nd": ".2f",
           "nps_mean_cpmm": ".3f", "nps_mean_vs_nd": ".2f", "matched_strength": ".3f",
           "matched_noise_sd": ".1f", "matched_nps_mean_cpmm": ".3f", "matched_psnr_db": ".2f",
           "matched_ssim": ".4f"}


@dataclass
class Regions:
    """Masks of the test case used by the metrics (all boolean, volume-shaped)."""

    body: np.ndarray
    liver: np.ndarray  # liver without tumours, eroded away from its edges
    fat: np.ndarray
    tumour: np.ndarray

    @classmethod
    def from_case(cls, normal: np.ndarray, masks: dict[str, np.ndarray],
                  pixel_mm: float) -> Regions:
        """Erosions are in mm (2 mm off the liver edge, 5 mm off the skin, 1.5 mm in fat)."""
        body = metrics.body_mask(normal)
        tumour = np.zeros_like(body)
        for name, mask in masks.items():
            if name.startswith("livertumor"):
                tumour |= mask
        erode = ndimage.generate_binary_structure(3, 1)
        erode[0], erode[2] = False, False  # in-plane erosion only

        def shrink(mask: np.ndarray, mm: float) -> np.ndarray:
            return ndimage.binary_erosion(mask, erode, iterations=max(1, round(mm / pixel_mm)))

        liver = shrink(masks["liver"] & ~tumour, 2.0)
        fat = shrink((normal > -150) & (normal < -50) & shrink(body, 5.0), 1.5)
        return cls(body=body, liver=liver, fat=fat, tumour=tumour)


def liver_contrast(image: np.ndarray, regions: Regions) -> dict[str, float]:
    """Tumour CNR against the liver (NaN without a tumour) and the liver's own SD (its
    denominator)."""
    return {"tumour_cnr": metrics.cnr(image, regions.tumour, regions.liver)
            if regions.tumour.any() else float("nan"),
            "liver_sd_hu": metrics.noise_sd(image, regions.liver)}


def score(name: str, image: np.ndarray, normal: np.ndarray, regions: Regions,
          pixel_mm: tuple[float, float], seconds: float, ld_noise: float | None,
          nps_roi: int = 32) -> dict:
    """All metrics of one method's output against the normal-dose reference."""
    noise = metrics.noise_sd(image, regions.liver, normal)
    spectrum = metrics.nps(image - normal, pixel_mm, roi=nps_roi, mask=regions.liver)
    return {"method": name, "psnr_db": metrics.psnr(image, normal),
            "ssim": metrics.ssim(image, normal),
            "rmse_hu": metrics.rmse_hu(image, normal, regions.body),
            "liver_bias_hu": metrics.hu_bias(image, normal, regions.liver),
            "fat_bias_hu": metrics.hu_bias(image, normal, regions.fat),
            "liver_noise_sd": noise, "noise_vs_ld": noise / ld_noise if ld_noise else 1.0,
            "nps_peak_cpmm": spectrum.peak_frequency,
            **liver_contrast(image, regions), "s_per_slice": seconds, "_nps": spectrum}


def _test_case(data: PreparedData, max_slices: int | None
               ) -> tuple[str, CTVolume, dict[str, np.ndarray], np.ndarray | None]:
    """The prepared test case: (name, normal dose, masks, the slices kept or None for all)."""
    tests = data.cases("test")
    if not tests:
        raise ValueError(f"{data.root}: no test case prepared")
    case = tests[0]
    normal_vol, masks = data.volume(case), data.masks(case)
    keep = None
    if max_slices is not None:  # quick runs: the slices with the most liver
        keep = np.sort(np.argsort(-masks["liver"].sum(axis=(1, 2)))[:max_slices])
        normal_vol = replace(normal_vol, hu=normal_vol.hu[keep])
        masks = {k: v[keep] for k, v in masks.items()}
    return case, normal_vol, masks, keep


def _scored(names: list[str], low_vol: CTVolume, normal: np.ndarray, regions: Regions,
            pixel: tuple[float, float], device: str, ensemble: int, nps_roi: int
            ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The input's row and every model's, and the outputs by name."""
    low = low_vol.hu
    rows = [score("low dose (input)", low, normal, regions, pixel, 0.0, None, nps_roi)]
    ld_noise = rows[0]["liver_noise_sd"]
    outputs = {"normal dose": normal, "low dose (input)": low}
    for name in names:
        start = time.perf_counter()
        result = denoise(low_vol, name, device=device, ensemble=ensemble).hu
        seconds = (time.perf_counter() - start) / low.shape[0]
        rows.append(score(name, result, normal, regions, pixel, seconds, ld_noise, nps_roi))
        outputs[name] = result
    return rows, outputs


def evaluate(data_dir: str | Path, out_dir: str | Path, dose: float = 0.25,
             models: list[str] | None = None, device: str = "auto",
             max_slices: int | None = None, nps_roi: int = 32,
             ensemble: int = DEFAULT_ENSEMBLE) -> list[dict]:
    """Evaluate ``models`` (default: every available one) on the test case; write the report.
    Networks average ``ensemble`` views per slice, as `ldct denoise` does by default."""
    data = PreparedData(data_dir)
    case, normal_vol, masks, keep = _test_case(data, max_slices)
    low_vol = data.volume(case, dose)
    if keep is not None:
        low_vol = replace(low_vol, hu=low_vol.hu[keep])
    normal = normal_vol.hu
    pixel = (normal_vol.spacing[0], normal_vol.spacing[1])
    regions = Regions.from_case(normal, masks, min(pixel))
    names = models or [n for n in registry.names() if registry.get(n).available()]
    rows, outputs = _scored(names, low_vol, normal, regions, pixel, device, ensemble, nps_roi)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_tables(rows, out_dir, case, dose, normal.shape, liver_contrast(normal, regions),
                  ensemble)
    _montage(outputs, masks, regions, out_dir / "montage.png", case, dose)
    _nps_plot(rows, out_dir / "nps.png")
    return rows


# the kernel sweep's targets (issue 21), met at every kernel; NLM: the baseline to beat
TARGETS = {"psnr_gain_db": 3.0, "noise_vs_ld": 0.6, "max_abs_bias_hu": 2.0}
NLM = "ldct-nlm"
REAL = "real scanner"  # the sweep's row set of an unseen real scan (--real-volume)
SWEEP_COLUMNS = ("method", "psnr_db", "ssim", "liver_bias_hu", "fat_bias_hu", "liver_noise_sd",
                 "noise_vs_ld", "nps_peak_cpmm", "tumour_cnr")


def evaluate_kernels(data_dir: str | Path, out_dir: str | Path, kernels: list[str],
                     dose: float = 0.25, models: list[str] | None = None, device: str = "auto",
                     max_slices: int | None = None, nps_roi: int = 32,
                     ensemble: int = DEFAULT_ENSEMBLE, seed: int = 0,
                     real_volume: str | Path | None = None,
                     thickness: int = 1) -> dict[str, list[dict]]:
    """The kernel sweep: the test case simulated at ``dose`` with each reconstruction kernel
    (the same projection-noise draw, filtered by each), every model scored on each; writes
    ``kernels.md`` (a table per kernel, then each model's worst kernel) and ``kernels.csv``.
    ``real_volume`` adds an unseen scanner (:func:`real_scanner_rows`); ``thickness`` > 1
    adds the first kernel's volume with that many slices averaged into one (thicker slices:
    the noise of thin slices averaged along z, partial volume). Models are to be chosen on
    their worst kernel, on training cases; this is the report."""
    data = PreparedData(data_dir)
    case, normal_vol, masks, _ = _test_case(data, max_slices)
    normal = normal_vol.hu
    pixel = (normal_vol.spacing[0], normal_vol.spacing[1])
    regions = Regions.from_case(normal, masks, min(pixel))
    names = models or [n for n in registry.names() if registry.get(n).available()]
    results, outputs, lows = {}, {}, {}
    for kernel in kernels:
        lows[kernel] = simulate_low_dose(normal_vol, data.simulation(dose, kernel), seed=seed,
                                         progress=False)
        results[kernel], outputs[kernel] = _scored(names, lows[kernel], normal, regions, pixel,
                                                   device, ensemble, nps_roi)
    if thickness > 1:
        first = kernels[0]
        thick_low, thick_normal = (thicker(v, thickness) for v in (lows[first], normal_vol))
        thick_masks = {k: thicker(normal_vol.with_hu(m.astype(np.float32)), thickness).hu > 0.5
                       for k, m in masks.items()}
        results[f"{first} x{thickness} thickness"] = _scored(
            names, thick_low, thick_normal.hu,
            Regions.from_case(thick_normal.hu, thick_masks, min(pixel)), pixel, device,
            ensemble, nps_roi)[0]
    calibrations = {n: registry.get(n).noise_calibration() for n in names}
    texture = {kernel: texture_rows(lows[kernel].hu, outputs[kernel], normal, regions, pixel,
                                    nps_roi, calibrations) for kernel in kernels}
    if real_volume is not None:
        results[REAL] = real_scanner_rows(real_volume, data, dose, names, device, ensemble,
                                          nps_roi, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = (f"ldct evaluate --data DIR --dose {dose:g} --kernels {' '.join(kernels)}"
               + (f" --max-slices {max_slices}" if max_slices else "")
               + (f" --ensemble {ensemble}" if ensemble != DEFAULT_ENSEMBLE else "")
               + (f" --real-volume {real_volume}" if real_volume is not None else "")
               + (f" --thickness {thickness}" if thickness > 1 else ""))
    _write_sweep(results, out_dir, case, dose, normal.shape, ensemble, command)
    _write_texture(texture, out_dir)
    _sweep_montage(outputs, masks, regions, out_dir / "kernels_montage.png", case, dose)
    own = own_noise_nps(normal, regions.liver, pixel, nps_roi)
    _sweep_nps_plot(results, own, out_dir / "kernels_nps.png")
    return results


def thicker(volume: CTVolume, factor: int) -> CTVolume:
    """Slices ``factor`` at a time averaged into one, as a thicker reconstruction would be."""
    n = volume.hu.shape[0] // factor * factor
    hu = volume.hu[:n].reshape(-1, factor, *volume.hu.shape[1:]).mean(axis=1)
    spacing = (*volume.spacing[:2], volume.spacing[2] * factor)
    return replace(volume, hu=hu.astype(np.float32), spacing=spacing)


def real_scanner_rows(path: str | Path, data: PreparedData, dose: float, names: list[str],
                      device: str, ensemble: int, nps_roi: int, seed: int) -> list[dict]:
    """A real normal-dose scan of another scanner, its lower ``dose`` made in its own noise
    texture (:func:`ldct.noise_bank.own_textured`: the texture measured across its slices, a
    dose's level by the quantum-noise rule), scored like the test case. Without masks, flat
    soft tissue stands in for the liver and there is no tumour (CNR n/a)."""
    normal_vol = read_volume(path)
    normal = normal_vol.hu.astype(np.float32)
    pixel = (normal_vol.spacing[0], normal_vol.spacing[1])
    simulated = simulate_low_dose(normal_vol, data.simulation(dose), seed=seed, progress=False)
    low_vol = normal_vol.with_hu(normal + own_textured(simulated.hu - normal, normal, dose))
    regions = Regions.from_case(normal, {"liver": soft_tissue(normal)}, min(pixel))
    return _scored(names, low_vol, normal, regions, pixel, device, ensemble, nps_roi)[0]


def soft_tissue(normal: np.ndarray) -> np.ndarray:
    """Flat soft tissue inside the body: the liver's stand-in on cases without a liver mask."""
    return flat_tissue(normal, 15) & metrics.body_mask(normal)


TEXTURE_COLUMNS = ("method", "noise_sd", "noise_vs_nd", "nps_mean_cpmm", "nps_mean_vs_nd",
                   "matched_strength", "matched_noise_sd", "matched_nps_mean_cpmm",
                   "matched_psnr_db", "matched_ssim", "psnr_db", "ssim")
DEFAULT_RULE = ("each model's default strength is the smallest, over the sweep's kernels, of the "
                "strength at which its output has the normal dose's own noise (rounded down to "
                "0.05): at no kernel does the default leave less noise than the normal dose "
                "has, and at the kernel that needs it least it leaves about that noise")


def texture_rows(low: np.ndarray, outputs: dict[str, np.ndarray], normal: np.ndarray,
                 regions: Regions, pixel: tuple[float, float], nps_roi: int,
                 calibrations: dict[str, NoiseCalibration | None] | None = None) -> list[dict]:
    """Per output: its noise SD and NPS mean frequency (measured like the normal dose's own:
    across-slice differences in the liver, the SD corrected by the model's calibration when
    ``calibrations`` has one), over the normal dose's; then the strength whose blend with the
    input has the normal dose's noise (`ldct.noise_level.match_noise`, as `target_noise`
    matches it), and that blend's noise, NPS mean frequency, PSNR and SSIM. The first row is
    the normal dose; none when the normal dose has no noise to measure (fewer than 3 slices,
    or noiseless)."""
    liver = regions.liver[1:-1]
    if normal.shape[0] < 3 or not robust_sd(slice_differences(normal)[liver]) > 0:
        return []

    def measured(image: np.ndarray, factor: float = 1.0) -> tuple[float, float]:
        differences = slice_differences(image)
        return (robust_sd(differences[liver]) * factor,
                metrics.nps(differences, pixel, roi=nps_roi, mask=liver).mean_frequency)

    own_sd, own_f = measured(normal)
    rows = [{"method": "normal dose's own", "noise_sd": own_sd, "nps_mean_cpmm": own_f}]
    for name, image in outputs.items():
        if name == "normal dose":
            continue
        calibration = (calibrations or {}).get(name)
        sd, f = measured(image, calibration.factor(1.0) if calibration else 1.0)
        row = {"method": name, "noise_sd": sd, "noise_vs_nd": sd / own_sd, "nps_mean_cpmm": f,
               "nps_mean_vs_nd": f / own_f, "psnr_db": metrics.psnr(image, normal),
               "ssim": metrics.ssim(image, normal)}
        if name != "low dose (input)":
            strength, match = match_noise(low, image, own_sd, region=liver,
                                          calibration=calibration)
            matched = blend(low, image, strength)
            row["matched_strength"] = strength
            row["matched_noise_sd"] = match.result_noise
            row["matched_nps_mean_cpmm"] = measured(matched)[1]
            row["matched_psnr_db"] = metrics.psnr(matched, normal)
            row["matched_ssim"] = metrics.ssim(matched, normal)
        rows.append(row)
    return rows


def default_levels(texture: dict[str, list[dict]]) -> dict[str, float]:
    """Each model's default strength by `DEFAULT_RULE`."""
    strengths: dict[str, list[float]] = {}
    for rows in texture.values():
        for row in rows:
            if "matched_strength" in row:
                strengths.setdefault(row["method"], []).append(row["matched_strength"])
    return {name: float(np.floor(min(values) / 0.05 + 1e-9) * 0.05)
            for name, values in strengths.items()}


def _write_texture(texture: dict[str, list[dict]], out_dir: Path) -> None:
    """``kernels_texture.csv`` and a section appended to ``kernels.md``."""
    _write_csv(out_dir / "kernels_texture.csv", texture, TEXTURE_COLUMNS)
    lines = ["", "## Texture against the normal dose's own noise", "",
             "Noise SD (HU) and NPS mean frequency (cycles/mm; AAPM TG-233's f_av, sum f "
             "NPS(f) / sum NPS(f) over the radial NPS) of each image measured as the "
             "normal dose's own are (across-slice differences in the eroded liver, robust SD; "
             "`ldct.noise_level`), as ratios to the normal dose's; then `matched_*`: the "
             "strength at which the output blended with the input has the normal dose's own "
             "noise, and that blend's noise, NPS mean frequency, PSNR and SSIM (what "
             "`target_noise` gives when asked for the normal dose's noise). Below 1.00 in "
             "noise_vs_nd is less noise than the normal dose has (over-smoothed); a lower NPS "
             "mean frequency is coarser, more 'plastic' noise."]
    texture = {kernel: rows for kernel, rows in texture.items() if rows}
    if not texture:
        lines += ["", "The normal dose has no noise of its own to measure: no texture table."]
    for kernel, rows in texture.items():
        lines += ["", f"### {kernel}", "", *_markdown_table(rows, TEXTURE_COLUMNS)]
    if texture:
        lines += ["", "### Default level per model", "", f"Rule: {DEFAULT_RULE}.", "",
                  "| method | default strength | " + " | ".join(
                      f"matched strength {k}" for k in texture) + " |",
                  "|" + "---|" * (2 + len(texture))]
    for name, strength in default_levels(texture).items():
        matched = [next(r for r in rows if r["method"] == name)["matched_strength"]
                   for rows in texture.values()]
        lines.append(f"| {name} | {strength:.2f} | "
                     + " | ".join(f"{m:.3f}" for m in matched) + " |")
    with open(out_dir / "kernels.md", "a") as handle:
        handle.write("\n".join(lines) + "\n")


def own_noise_nps(normal: np.ndarray, region: np.ndarray, pixel: tuple[float, float],
                  roi: int) -> metrics.NPS | None:
    """The reference's own noise spectrum, from its across-slice differences in ``region``
    (the floor no denoiser is asked to go below); None with fewer than 3 slices."""
    if normal.shape[0] < 3:
        return None
    return metrics.nps(slice_differences(normal), pixel, roi=roi, mask=region[1:-1])


def _by_model(results: dict[str, list[dict]]) -> dict[str, dict[str, tuple[dict, dict]]]:
    """Per model, per simulated condition: (its row, the input's row). The real scanner's rows
    are reported apart and left out here."""
    kernels = {k: rows for k, rows in results.items() if k != REAL}
    models = [row["method"] for row in next(iter(kernels.values()))[1:]]
    return {model: {k: (next(r for r in rows if r["method"] == model), rows[0])
                    for k, rows in kernels.items()} for model in models}


def _max_abs_bias(row: dict) -> float:
    return max(abs(row["liver_bias_hu"]), abs(row["fat_bias_hu"]))


def worst_kernels(results: dict[str, list[dict]]) -> list[dict]:
    """Per model: the kernel with its smallest PSNR gain over the input, and there its gain,
    SSIM gain, noise ratio and the largest |bias| (liver or fat) over all kernels."""
    worst = []
    for model, pairs in _by_model(results).items():
        kernel = min(pairs, key=lambda k: pairs[k][0]["psnr_db"] - pairs[k][1]["psnr_db"])
        mine, given = pairs[kernel]
        worst.append({"method": model, "worst_kernel": kernel,
                      "psnr_gain_db": mine["psnr_db"] - given["psnr_db"],
                      "ssim_gain": mine["ssim"] - given["ssim"],
                      "noise_vs_ld": mine["noise_vs_ld"],
                      "max_abs_bias_hu": max(_max_abs_bias(m) for m, _ in pairs.values())})
    return worst


def _write_sweep(results: dict[str, list[dict]], out_dir: Path, case: str, dose: float,
                 shape: tuple[int, ...], ensemble: int, command: str) -> None:
    _write_csv(out_dir / "kernels.csv", results, SWEEP_COLUMNS)
    lines = [f"# Kernel sweep: {case}, simulated dose {dose:g}", "",
             f"Volume {shape[2]}x{shape[1]}x{shape[0]}; the same projection noise reconstructed "
             f"with each kernel; metrics as in quality.md; networks average {ensemble} view(s) "
             f"per slice. Command: `{command}`.", "",
             "Input noise SD in the liver: " + ", ".join(
                 f"{k} {rows[0]['liver_noise_sd']:.1f} HU" for k, rows in results.items())
             + ". At one dose a sharper kernel is much noisier here than the about twofold SD "
             "between real smooth and sharp body kernels (DESIGN.md 4): the sharp kernels of "
             "this sweep are harder than real scans at the same dose."]
    if REAL in results:
        lines += ["", f"'{REAL}': a real normal-dose scan of another scanner (command above), "
                  f"its dose {dose:g} made in its own measured noise texture; flat soft tissue "
                  "stands in for the liver, and it has no tumour. The quantum-noise rule on its "
                  "own noise gives it far less noise than the simulated kernels (input noise "
                  "above), so its table shows whether a model harms a lightly noisy scan of an "
                  "unseen scanner; it is left out of the worst-kernel and target tables."]
    for kernel, rows in results.items():
        lines += ["", f"## {kernel}", "", *_markdown_table(rows, SWEEP_COLUMNS)]
    lines += ["", "## Worst kernel per model", "",
              "| method | worst kernel | PSNR gain dB | SSIM gain | noise vs input | max abs "
              "bias HU (any kernel) |", "|---|---|---|---|---|---|"]
    lines += [f"| {w['method']} | {w['worst_kernel']} | {w['psnr_gain_db']:+.2f} | "
              f"{w['ssim_gain']:+.4f} | {w['noise_vs_ld']:.2f} | {w['max_abs_bias_hu']:.2f} |"
              for w in worst_kernels(results)]
    lines += ["", "## Targets at every kernel", "",
              f"PSNR >= input + {TARGETS['psnr_gain_db']:g} dB, residual noise <= "
              f"{TARGETS['noise_vs_ld']:g} x the input's, |HU bias| <= "
              f"{TARGETS['max_abs_bias_hu']:g} in liver and fat, SSIM above the input's; and "
              f"the PSNR margin over non-local means ({NLM}) at the kernel where it is smallest.",
              "", "| method | all targets | worst PSNR gain dB | worst noise vs input | max abs "
              "bias HU | worst SSIM gain | min PSNR margin over NLM dB |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {t['method']} | {'yes' if t['passes'] else 'no'} | {t['psnr_gain_db']:+.2f} | "
              f"{t['noise_vs_ld']:.2f} | {t['max_abs_bias_hu']:.2f} | {t['ssim_gain']:+.4f} | "
              + (f"{t['nlm_margin_db']:+.2f}" if t["nlm_margin_db"] is not None else "n/a")
              + " |" for t in sweep_targets(results)]
    lines += ["", "![one liver slice per kernel](kernels_montage.png)", "",
              "![NPS per kernel](kernels_nps.png)", ""]
    (out_dir / "kernels.md").write_text("\n".join(lines) + "\n")


def _write_csv(path: Path, groups: dict[str, list[dict]], columns: tuple[str, ...]) -> None:
    """One row per (kernel, row); a value a row lacks is left empty."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("kernel", *columns))
        for kernel, rows in groups.items():
            for row in rows:
                writer.writerow([kernel, *(row[c] if c == "method" else
                                           (f"{row[c]:.6g}" if c in row else "")
                                           for c in columns)])


def _markdown_table(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    """A Markdown table of ``rows`` in `FORMATS`; a value a row lacks is left empty."""
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(row[c] if c == "method" else
                                 (format(row[c], FORMATS[c]) if c in row else "")
                                 for c in columns) + " |" for row in rows])


def sweep_targets(results: dict[str, list[dict]]) -> list[dict]:
    """Per model, the worst value of each target metric over all kernels, whether every
    target holds at every kernel, and its smallest PSNR margin over non-local means."""
    out = []
    nlm = {k: next((r for r in rows if r["method"] == NLM), None) for k, rows in results.items()}
    for model, pairs in _by_model(results).items():
        margins = [mine["psnr_db"] - nlm[k]["psnr_db"] for k, (mine, _) in pairs.items()
                   if nlm[k] is not None]
        worst = {"method": model,
                 "psnr_gain_db": min(m["psnr_db"] - g["psnr_db"] for m, g in pairs.values()),
                 "noise_vs_ld": max(m["noise_vs_ld"] for m, _ in pairs.values()),
                 "max_abs_bias_hu": max(_max_abs_bias(m) for m, _ in pairs.values()),
                 "ssim_gain": min(m["ssim"] - g["ssim"] for m, g in pairs.values()),
                 "nlm_margin_db": min(margins) if margins else None}
        worst["passes"] = (worst["psnr_gain_db"] >= TARGETS["psnr_gain_db"]
                           and worst["noise_vs_ld"] <= TARGETS["noise_vs_ld"]
                           and worst["max_abs_bias_hu"] <= TARGETS["max_abs_bias_hu"]
                           and worst["ssim_gain"] > 0)
        out.append(worst)
    return out


def _liver_crop(masks: dict[str, np.ndarray], regions: Regions) -> tuple[int, tuple[slice, ...]]:
    """The montage slice (the one with the most tumour, else liver) and its liver crop."""
    k = int(np.argmax(regions.tumour.sum(axis=(1, 2)))) if regions.tumour.any() \
        else int(np.argmax(masks["liver"].sum(axis=(1, 2))))
    rows_, cols_ = np.nonzero(ndimage.binary_dilation(masks["liver"][k], iterations=20))
    return k, (slice(rows_.min(), rows_.max() + 1), slice(cols_.min(), cols_.max() + 1))


def _sweep_montage(outputs: dict[str, dict[str, np.ndarray]], masks: dict[str, np.ndarray],
                   regions: Regions, path: Path, case: str, dose: float) -> None:
    """One row per kernel: normal dose, input and every method on the same liver crop."""
    k, crop = _liver_crop(masks, regions)
    names = list(next(iter(outputs.values())))
    fig, axes = plt.subplots(len(outputs), len(names), figsize=(2.6 * len(names),
                                                                2.8 * len(outputs)),
                             squeeze=False)
    lo, hi = metrics.LIVER_WINDOW
    for r, (kernel, images) in enumerate(outputs.items()):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.imshow(images[name][k][crop], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(kernel)
    fig.suptitle(f"{case} slice {k}, simulated dose {dose:g} per kernel, liver window W400/L40")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=70)
    plt.close(fig)


def _sweep_nps_plot(results: dict[str, list[dict]], own: metrics.NPS | None,
                    path: Path) -> None:
    """Per kernel: the NPS of (input - reference), of each output's residual, and of the
    reference's own noise."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False,
                             sharey=True)
    for ax, (kernel, rows) in zip(axes[0], results.items()):
        for row in rows:
            spectrum = row["_nps"]
            ax.plot(spectrum.frequency[1:], spectrum.power[1:], label=row["method"],
                    linewidth=2.0 if row is rows[0] else 1.0)
        if own is not None and kernel != REAL:  # the test case's own noise
            ax.plot(own.frequency[1:], own.power[1:], "k--", label="normal dose's own noise")
        ax.set_title(kernel)
        ax.set_xlabel("cycles/mm")
        ax.set_yscale("log")
    axes[0, 0].set_ylabel("NPS (HU² mm²)")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _write_tables(rows: list[dict], out_dir: Path, case: str, dose: float,
                  shape: tuple[int, ...], reference: dict[str, float], ensemble: int) -> None:
    with open(out_dir / "quality.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row[c] if c == "method" else f"{row[c]:.6g}" for c in COLUMNS])
    lines = [f"# Held-out quality: {case}, simulated dose {dose:g}", "",
             f"Volume {shape[2]}x{shape[1]}x{shape[0]}; PSNR/SSIM on the liver window "
             "[-160, 240] HU; RMSE in the body; bias = mean(denoised - normal dose) in the "
             "eroded liver (tumours excluded) and in fat; noise = SD of (denoised - normal "
             "dose) in the liver; NPS peak of that difference; tumour CNR against the liver, "
             "whose SD (liver_sd_hu: anatomy and noise) is its denominator (the normal-dose "
             f"reference itself: CNR {reference['tumour_cnr']:.2f}, liver SD "
             f"{reference['liver_sd_hu']:.1f} HU; a liver SD below the reference's means the "
             "method also smoothed away the reference's own noise or texture). Networks run as "
             f"`ldct denoise` does, averaging {ensemble} flipped/rotated view(s) per slice "
             "(s_per_slice includes them).",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(row[c] if c == "method" else format(row[c], FORMATS[c])
                                       for c in COLUMNS) + " |")
    lines += ["", "![montage](montage.png)", "", "![NPS](nps.png)", ""]
    (out_dir / "quality.md").write_text("\n".join(lines))


def _montage(outputs: dict[str, np.ndarray], masks: dict[str, np.ndarray], regions: Regions,
             path: Path, case: str, dose: float) -> None:
    """One liver slice (the one with the most tumour) across methods, liver window, cropped."""
    k, crop = _liver_crop(masks, regions)
    n = len(outputs)
    ncols = min(n, 4)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 4 * nrows), squeeze=False)
    lo, hi = metrics.LIVER_WINDOW
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, volume) in zip(axes.ravel(), outputs.items()):
        ax.imshow(volume[k][crop], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name)
    fig.suptitle(f"{case} slice {k}, simulated dose {dose:g}, liver window W400/L40")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _nps_plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        spectrum = row["_nps"]
        ax.plot(spectrum.frequency[1:], spectrum.power[1:], label=row["method"])
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("NPS of (output - normal dose) (HU² mm²)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Noise power spectra in the liver")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
