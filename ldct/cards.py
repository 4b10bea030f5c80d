"""Model cards: what a shipped model is, how it was trained and how it scores on held-out data.

`ldct evaluate --write-cards` calls :func:`write_card` for every evaluated network, combining
the training metadata stored in ``model.pt`` with the held-out metrics, into
``models/<name>/card.json`` (read by the registry and the server's /info/) and ``card.md``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ldct import registry
from ldct.infer import load_network

METRIC_KEYS = ("psnr_db", "ssim", "rmse_hu", "liver_bias_hu", "fat_bias_hu", "liver_noise_sd",
               "noise_vs_ld", "nps_peak_cpmm", "tumour_cnr", "s_per_slice")


def training_metadata(weights: Path) -> dict[str, Any]:
    """What `ldct train` stored beside the weights (method, preset, steps, time, settings)."""
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    hp = blob.get("hp", {})
    return {"method": blob.get("method"), "preset": blob.get("preset"), "steps": blob.get("steps"),
            "wall_minutes": round(blob.get("wall_s", 0.0) / 60, 1), "context": blob.get("context"),
            "normalization": blob.get("normalization"), "architecture": blob.get("kwargs"),
            "patch": hp.get("patch"), "batch": hp.get("batch"),
            "doses": hp.get("doses") or "all prepared (0.5, 0.35, 0.25, 0.15, 0.1)",
            "kernels": hp.get("kernels") or ["hann"],  # models trained before it: Hann only
            "texture": hp.get("texture", 0.0),  # those models' share of retextured patches
            "thickness": hp.get("thickness", [1]),  # slices averaged per sample
            "overrides": hp.get("overrides", {}), "init": hp.get("init"),
            # weights trained before the kernel library (2026-11-28) recorded no kernels; the
            # recipe's code has changed since (n2n25d's recorruption noise source)
            "predates_current_recipe": "kernels" not in hp,
            "gain": float(blob.get("gain", 1.0)),  # benchmarks/calibrate_gain.py
            "parameters": sum(v.numel() for v in blob["state_dict"].values())}


def drawn(items: list, separator: str) -> str:
    """A list training draws from, in words: each item once, with its share of the draws
    where the list repeats items to draw them more often."""
    counts = Counter(map(str, items))
    if len(counts) == len(items):
        return separator.join(counts)
    return separator.join(f"{item} ({n} of {len(items)} draws)" for item, n in counts.items())


def training_command(name: str, train: dict[str, Any]) -> str:
    """The `ldct train` command line that made these weights."""
    overrides = dict(train["overrides"])
    command = f"ldct train {name} --data DIR --preset {train['preset']}"
    if "steps" in overrides:
        command += f" --steps {overrides.pop('steps')}"
    if overrides:
        command += " --set " + " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    return command + (f" --init {train['init']}" if train["init"] else "")


def shipped_recipe(name: str, train: dict[str, Any]) -> dict[str, Any]:
    """`ldct train NAME --describe` with the settings these weights were trained with: its
    phases, supervision and weighted losses (the run that made them; an ``init`` run started
    from earlier weights, whose own training the card's note tells)."""
    from ldct.train.loop import describe

    recipe = describe(name, train["preset"], train["overrides"],
                      finetuning=bool(train["init"]))
    return {k: recipe[k] for k in ("phases", "supervision", "ships", "networks", "steps")}


def recipe_lines(recipe: dict[str, Any]) -> list[str]:
    """The recipe's phases as a Markdown table."""
    lines = ["| phase | steps | supervision | trains | losses (weight) | data |",
             "|---|---|---|---|---|---|"]
    for phase in recipe["phases"]:
        losses = ", ".join(f"{term} {weight:g}" for term, weight in phase["losses"].items())
        lines.append(f"| {phase['name']} | {phase['steps']} | {phase['supervision']} | "
                     f"{', '.join(phase['trains'])} | {losses} | {phase['data']} |")
    return lines


def kernel_rows(name: str, sweep_csv: Path) -> list[dict[str, float | str]]:
    """This model's rows of a kernel sweep (`ldct evaluate --kernels`), with the input's PSNR."""
    if not sweep_csv.exists():
        return []
    with open(sweep_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    inputs = {r["kernel"]: float(r["psnr_db"]) for r in rows if r["method"] == "low dose (input)"}
    return [{"kernel": r["kernel"], "input_psnr_db": inputs[r["kernel"]],
             **{k: float(r[k]) for k in ("psnr_db", "ssim", "noise_vs_ld", "liver_bias_hu",
                                         "fat_bias_hu")}}
            for r in rows if r["method"] == name]


def write_card(name: str, metrics: dict[str, float], baseline: dict[str, float],
               evaluation: dict[str, Any], sweep_csv: Path | None = None) -> Path:
    """Write models/<name>/card.json and card.md from the training metadata, the metrics and,
    when given, the kernel sweep's rows."""
    info = registry.get(name)
    train = training_metadata(info.weights)
    kernels = kernel_rows(name, sweep_csv) if sweep_csv else []
    keep_sigma = load_network(name, "cpu", str(info.weights)).keep_sigma
    card = {"name": name, "title": info.title, "paper": f"../shared/papers/{info.paper}",
            "supervision": info.supervision,
            "training_data": "ircadb01 (1.6 mm slices) + tcia_pancreas001 (3 mm slices) "
                             f"(ldct prepare), simulated doses {train['doses']}, each with the "
                             f"reconstruction kernel(s) {drawn(train['kernels'], ', ')} (the same "
                             "projection noise through each kernel), slice thickness as "
                             "prepared"
                             + ("" if train["thickness"] == [1] else
                                f" and {drawn(train['thickness'], ' or ')} slices "
                                "averaged (thicker reconstructions)")
                             + (f", {train['texture']:.0%} of patches retextured to a random "
                                "sharper cosine-window kernel's (gain capped at 8)"
                                if train["texture"] else ""),
            "training_command": training_command(name, train),
            "recipe": shipped_recipe(name, train),
            "differences_from_paper": list(info.differences),
            "default_strength": info.default_strength,
            "training": train, "evaluation": evaluation, "per_kernel": kernels,
            "held_out": {k: round(float(metrics[k]), 4) for k in METRIC_KEYS},
            "held_out_low_dose_input": {k: round(float(baseline[k]), 4) for k in METRIC_KEYS}}
    (info.folder / "card.json").write_text(json.dumps(card, indent=1))
    lines = [f"# {name}: {info.title}", "",
             f"- Paper: `{card['paper']}`", f"- Supervision: {info.supervision}",
             f"- Training data: {card['training_data']} (the test case ircadb17 is never used)",
             f"- Command: `{card['training_command']}` ({train['steps']} steps, "
             f"{train['wall_minutes']} min wall time, batch {train['batch']} of "
             f"{train['patch']}x{train['patch']} patches)",
             f"- Network: {train['parameters']:,} parameters, {train['context']} slice(s) in, "
             f"normalization {train['normalization']}, the input's band below a "
             f"{keep_sigma:g}-pixel Gaussian kept exactly"
             + ("" if train["gain"] == 1.0 else
                f"; it removes {train['gain']:g} of its noise estimate (calibrated on training "
                f"slabs: `benchmarks/quality/gain_{name}.md`)"),
             f"- Held-out evaluation: {evaluation['case']}, simulated dose {evaluation['dose']:g}, "
             f"command `{evaluation['command']}`, networks averaging "
             f"{evaluation['views_per_slice']} flipped/rotated view(s) per slice (`--ensemble`)",
             f"- Default strength: {info.default_strength:g} (when a request gives neither "
             "strength nor target_noise; the level that leaves about the normal dose's own "
             "noise: `benchmarks/quality/texture/kernels.md`)",
             "",
             "| metric | low-dose input | this model |", "|---|---|---|"]
    for key in METRIC_KEYS:
        lines.append(f"| {key} | {baseline[key]:.4g} | {metrics[key]:.4g} |")
    if kernels:
        lines += ["", f"Per reconstruction kernel ({evaluation['case']}, dose "
                  f"{evaluation['dose']:g}, `{sweep_csv}`):", "",
                  "| kernel | input PSNR dB | PSNR dB | gain dB | SSIM | noise vs input | "
                  "liver bias HU | fat bias HU |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['kernel']} | {r['input_psnr_db']:.2f} | {r['psnr_db']:.2f} | "
                  f"{r['psnr_db'] - r['input_psnr_db']:+.2f} | {r['ssim']:.4f} | "
                  f"{r['noise_vs_ld']:.2f} | {r['liver_bias_hu']:+.2f} | "
                  f"{r['fat_bias_hu']:+.2f} |" for r in kernels]
    lines += quality_lines(name)
    lines += ["", f"## Training recipe (`{card['training_command']} --describe`)", "",
              *recipe_lines(card["recipe"])]
    if train["predates_current_recipe"]:
        lines += ["", "These weights predate the current code (trained before the kernel "
                  "library): the table is today's description of their command and settings; "
                  "the differences below say where their training differed."]
    if info.differences:
        lines += ["", "## Differences from the paper", "",
                  *(f"- {text}" for text in info.differences)]
    choice = registry.recommendation()
    if choice.get("model") == name:
        lines += ["", f"**Recommended model** (the demo's and Slicer's default): "
                  f"{choice['reason']} (`{choice['command']}`)."]
    note = info.folder / "training_note.md"  # how this particular run went, kept across rewrites
    if note.exists():
        lines += ["", "## Training note", "", note.read_text().strip()]
    (info.folder / "card.md").write_text("\n".join(lines) + "\n")
    return info.folder / "card.md"


def quality_lines(name: str) -> list[str]:
    """The card's "Task-based image quality" section: the phantom QA's dose-reduction
    estimate and every loss of low-contrast detectability (`ldct qa --write`)."""
    quality = registry.task_quality().get(name)
    if not quality or quality.get("dose_reduction_median") is None:
        return []
    losses = quality["detectability_losses"]
    lines = ["", "## Task-based image quality", "",
             f"Digital phantoms (CT-number, MITA-LCD and water modules; patient diameters "
             f"{', '.join(f'{s:g}' for s in quality['sizes_mm'])} mm) scanned through the "
             f"simulator (`{quality['command']}`; CT numbers, NPS, TTF and d' per condition "
             f"in `{quality['source']}`).", "",
             f"- Dose-reduction estimate (the dose at which this model's channelized Hotelling "
             f"d' matches the unprocessed full dose's): "
             f"{100 * quality['dose_reduction_median']:.0f} % median over "
             f"{quality['tasks_measured']} rod x kernel x size tasks, smallest "
             f"{100 * quality['dose_reduction_smallest']:.0f} %."]
    if losses:
        lines.append(f"- **Loses low-contrast detectability** against its input (95 % "
                     f"interval of the d' difference below 0) in {len(losses)} condition(s) "
                     "at dose >= 25 %:")
        lines += [f"  - dose {x['dose']:g}, {x['kernel']}, {x['size_mm']:g} mm, rod "
                  f"{x['insert']}: d' {x['dprime']:.2f} vs input {x['dprime_input']:.2f}"
                  for x in losses]
    else:
        lines.append("- No loss of low-contrast detectability against its input at dose "
                     ">= 25 %.")
    if quality["losses_below_gate_dose"]:
        lines.append(f"- Below 25 % dose: {quality['losses_below_gate_dose']} rod x kernel x "
                     "size condition(s) with a loss.")
    return lines


def refresh_card(name: str, sweep_csv: Path = Path("benchmarks/quality/kernels.csv")) -> Path:
    """Rewrite a card from the metrics its card.json already holds (after a change of the
    catalogue's texts or the recipe's description, without evaluating again):
    `python -c "from ldct.cards import refresh_card; refresh_card('NAME')"`."""
    card = json.loads((registry.get(name).folder / "card.json").read_text())
    return write_card(name, card["held_out"], card["held_out_low_dose_input"],
                      card["evaluation"], sweep_csv)


def encoder_retrieval(data_dir: str | Path, weights: Path, patches: int = 256,
                      dose: float = 0.25) -> float:
    """Held-out top-1 retrieval: how often a low-dose patch of the test case embeds nearest to
    its own normal-dose patch among ``patches`` candidates (chance: 1/patches)."""
    from ldct.data import PatchSampler, PreparedData
    from ldct.train.encoder import EncoderMethod

    data = PreparedData(data_dir)
    sampler = PatchSampler(data, [dose], patch=64, batch=patches, paired=True, seed=123,
                           cases=data.cases("test"))
    batch = {k: torch.from_numpy(v) for k, v in sampler.sample().items()}
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    method = EncoderMethod({"widths": blob["config"]["widths"]})
    method.nets["encoder"].load_state_dict(blob["state_dict"])
    method.nets["head"].load_state_dict(blob["head"])
    with torch.no_grad():
        a, b = method.embed(batch["ld"]), method.embed(batch["nd"])
    return float((torch.argmax(a @ b.t(), 1) == torch.arange(patches)).float().mean())


def write_encoder_card(data_dir: str | Path) -> Path:
    """models/ct_encoder/card.{json,md}: training metadata and held-out retrieval accuracy."""
    weights = registry.ENCODER_DIR / "encoder.pt"
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    accuracy = encoder_retrieval(data_dir, weights)
    card = {"name": "ct_encoder", "kind": "pvm",
            "purpose": "feature extractor for perceptual (pan, vagan) and semantic (alden) losses",
            "training_data": "ircadb01 + tcia_pancreas001 (ldct prepare), all prepared doses",
            "training_command": "ldct train encoder --data DIR --preset cpu",
            "steps": blob.get("steps"), "wall_minutes": round(blob.get("wall_s", 0.0) / 60, 1),
            "widths": blob["config"]["widths"],
            "held_out_retrieval_top1": round(accuracy, 4), "retrieval_candidates": 256}
    (registry.ENCODER_DIR / "card.json").write_text(json.dumps(card, indent=1))
    md = ["# ct_encoder: contrastive CT feature encoder (the project's stand-in PVM)", "",
          "No ImageNet weights can be downloaded here, so perceptual and semantic losses use this "
          "small VGG-style encoder (stages of widths "
          f"{card['widths']}), trained contrastively on simulated pairs (so supervised by the "
          "pairing, not self-supervised): a simulated low-dose patch and its "
          "normal-dose original (same place, same flip/rotation) must embed together and apart "
          "from the other patches of the batch (symmetric InfoNCE).", "",
          f"- Training data: {card['training_data']}",
          f"- Command: `{card['training_command']}` ({card['steps']} steps of 32 patches of "
          f"64x64, {card['wall_minutes']} min wall time)",
          "- Held-out check (ircadb17, dose 0.25, 256 random patch pairs): a low-dose patch "
          f"retrieves its own normal-dose patch first in {100 * accuracy:.1f} % of cases "
          "(chance 0.4 %) - command: `python -c \"from ldct.cards import write_encoder_card; "
          "write_encoder_card('DIR')\"`",
          "- Input: HU through the liver window [-160, 240] HU scaled to [0, 1]",
          "- Alternative: `--pvm PATH` takes a local torchvision VGG19 or ResNet state dict"]
    (registry.ENCODER_DIR / "card.md").write_text("\n".join(md) + "\n")
    return registry.ENCODER_DIR / "card.md"
