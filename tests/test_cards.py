"""Model cards: written from the weights' training metadata plus held-out metrics, read back
by the registry (and so by `ldct models -v` and the server's /info/)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldct import registry
from ldct.cards import METRIC_KEYS, drawn, training_metadata, write_card
from ldct.ct_guard import THRESHOLD_HU

SHIPPED_N2N25D = Path(__file__).resolve().parents[1] / "models" / "n2n25d" / "model.pt"


def test_card_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    folder = tmp_path / "n2n25d"
    folder.mkdir()
    # the shipped network's weights (71,246 parameters, as models/n2n25d/card.md states)
    # with the metadata of a made-up training run
    shipped = torch.load(SHIPPED_N2N25D, map_location="cpu", weights_only=True)
    torch.save({"method": "n2n25d", "kwargs": shipped["kwargs"], "context": 5, "preset": "cpu",
                "steps": 1234, "wall_s": 600.0, "normalization": "(HU + 1000) / 2000",
                "hp": {"patch": 64, "batch": 8, "doses": [0.5, 0.1], "kernels": ["hann", "ram-lak"],
                       "overrides": {"steps": 1234, "warmup_fraction": 0.6},
                       "init": "models/n2n25d/model.pt"},
                "state_dict": shipped["state_dict"], "gain": 0.9}, folder / "model.pt")
    metrics = {k: float(i) for i, k in enumerate(METRIC_KEYS)}
    baseline = {k: 10.0 + i for i, k in enumerate(METRIC_KEYS)}
    evaluation = {"case": "ircadb17", "dose": 0.25, "command": "ldct evaluate ...",
                  "views_per_slice": 4}
    (folder / "training_note.md").write_text("Restarted once from step 100.\n")
    sweep = tmp_path / "kernels.csv"
    sweep.write_text("kernel,method,psnr_db,ssim,liver_bias_hu,fat_bias_hu,liver_noise_sd,"
                     "noise_vs_ld,nps_peak_cpmm,tumour_cnr\n"
                     "ram-lak,low dose (input),14.5,0.6,0,0,180,1,0.6,0.1\n"
                     "ram-lak,n2n25d,19.25,0.7,0.2,-1.5,60,0.33,0.6,0.4\n"
                     "ram-lak,pan,18,0.65,0.1,1,90,0.5,0.6,0.3\n")
    md = write_card("n2n25d", metrics, baseline, evaluation, sweep)
    card = registry.get("n2n25d").card()
    assert card["held_out"]["psnr_db"] == metrics["psnr_db"]
    assert card["training"]["steps"] == 1234 and card["training"]["wall_minutes"] == 10.0
    assert card["training"]["doses"] == [0.5, 0.1]
    assert card["training"]["parameters"] == 71246
    assert training_metadata(SHIPPED_N2N25D)["parameters"] == 71246
    text = md.read_text()
    assert ("ldct train n2n25d --data DIR --preset cpu --steps 1234 --set warmup_fraction=0.6 "
            "--init models/n2n25d/model.pt") in text
    assert "reconstruction kernel(s) hann, ram-lak" in card["training_data"]
    assert card["training"]["gain"] == 0.9
    assert "it removes 0.9 of its noise estimate (calibrated on training slabs" in text
    assert card["per_kernel"] == [{"kernel": "ram-lak", "input_psnr_db": 14.5, "psnr_db": 19.25,
                                   "ssim": 0.7, "noise_vs_ld": 0.33, "liver_bias_hu": 0.2,
                                   "fat_bias_hu": -1.5}]
    assert "| ram-lak | 14.50 | 19.25 | +4.75 | 0.7000 | 0.33 | +0.20 | -1.50 |" in text
    assert "averaging 4 flipped/rotated view(s) per slice" in md.read_text()
    assert md.read_text().endswith("## Training note\n\nRestarted once from step 100.\n")
    summary = registry.get("n2n25d").summary()
    assert summary["available"] and json.dumps(summary)  # serializable for /info/


def test_the_recommended_model_is_the_selections_when_it_has_weights(tmp_path, monkeypatch):
    """The demo, /info/ and Slicer offer what benchmarks/select_model.py chose (by the worst
    kernel on training cases), never a model without weights."""
    choice = tmp_path / "recommended.json"
    monkeypatch.setattr(registry, "RECOMMENDED_FILE", choice)
    assert registry.recommended() == registry.FALLBACK  # never selected
    choice.write_text(json.dumps({"model": "vagan", "reason": "worst kernel"}))
    assert registry.recommended() == "vagan"
    assert registry.get("vagan").summary()["recommended"]
    assert not registry.get("pan").summary()["recommended"]
    choice.write_text(json.dumps({"model": "no-such-model"}))
    assert registry.recommended() == registry.FALLBACK


def test_the_committed_recommendation_follows_its_rule():
    """models/recommended.json: the best worst-kernel model among those that kept CT numbers
    within the CT-number guard's 3 HU and raised SSIM at every kernel on the training slabs
    and lost no low-contrast detectability at dose >= 25 % on the phantoms
    (benchmarks/select_model.py, models/task_quality.json)."""
    record = registry.recommendation()
    worst, bias = record["worst_gain_db"], record["max_abs_bias_hu"]
    ssim, quality = record["worst_ssim_gain"], registry.task_quality()
    candidates = [m for m in worst if registry.get(m).kind == "network"]
    keeping = [m for m in candidates
               if bias[m] <= THRESHOLD_HU and ssim[m] > 0
               and not quality.get(m, {}).get("detectability_losses")] or candidates
    assert record["model"] == max(keeping, key=worst.get)
    assert record["model"] in registry.names() and registry.get(record["model"]).available()


def test_a_card_states_how_often_training_drew_each_kernel_and_thickness():
    """A kernel listed three times in six was drawn half the time: the card says so, and
    names a list without repeats plainly."""
    assert drawn(["hann", "hann", "hann", "ram-lak", "sharp-ee", "shepp-logan"], ", ") == (
        "hann (3 of 6 draws), ram-lak (1 of 6 draws), sharp-ee (1 of 6 draws), "
        "shepp-logan (1 of 6 draws)")
    assert drawn([1, 1, 2], " or ") == "1 (2 of 3 draws) or 2 (1 of 3 draws)"
    assert drawn(["hann", "ram-lak"], ", ") == "hann, ram-lak"
