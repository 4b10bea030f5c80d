"""Model cards: written from the weights' training metadata plus held-out metrics, read back
by the registry (and so by `ldct models -v` and the server's /info/)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldct import registry
from ldct.cards import METRIC_KEYS, training_metadata, write_card
from ldct.nets.catalogue import n2n25d_student


def test_card_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    folder = tmp_path / "n2n25d"
    folder.mkdir()
    net = n2n25d_student(base=8)
    torch.save({"method": "n2n25d", "kwargs": {"base": 8}, "context": 5, "preset": "cpu",
                "steps": 1234, "wall_s": 600.0, "normalization": "(HU + 1000) / 2000",
                "hp": {"patch": 64, "batch": 8, "doses": [0.5, 0.1]},
                "state_dict": net.state_dict()}, folder / "model.pt")
    metrics = {k: float(i) for i, k in enumerate(METRIC_KEYS)}
    baseline = {k: 10.0 + i for i, k in enumerate(METRIC_KEYS)}
    evaluation = {"case": "ircadb17", "dose": 0.25, "command": "ldct evaluate ...",
                  "views_per_slice": 4}
    (folder / "training_note.md").write_text("Restarted once from step 100.\n")
    md = write_card("n2n25d", metrics, baseline, evaluation)
    card = registry.get("n2n25d").card()
    assert card["held_out"]["psnr_db"] == metrics["psnr_db"]
    assert card["training"]["steps"] == 1234 and card["training"]["wall_minutes"] == 10.0
    assert card["training"]["doses"] == [0.5, 0.1]
    assert card["training"]["parameters"] == sum(p.numel() for p in net.state_dict().values())
    # the shipped n2n25d's count as its card and the README state it (71,246)
    shipped = Path(__file__).resolve().parents[1] / "models" / "n2n25d" / "model.pt"
    assert training_metadata(shipped)["parameters"] == 71246
    assert "ldct train n2n25d --data DIR --preset cpu" in md.read_text()
    assert "averaging 4 flipped/rotated view(s) per slice" in md.read_text()
    assert md.read_text().endswith("## Training note\n\nRestarted once from step 100.\n")
    summary = registry.get("n2n25d").summary()
    assert summary["available"] and json.dumps(summary)  # serializable for /info/
