"""Fine-tune a shipped network on a site's own scans; the result becomes a new model version.

A site's routine scans carry its scanner's noise texture, kernel and slice thickness. They are
used as the normal-dose side and lower doses are simulated from them in the projection domain
(the same simulation as the shipped training), so every method - paired, unpaired or
self-supervised - trains on that site's data starting from the weights in use. The new
version lands in ``registry.site_models_dir()/<name>/versions/<timestamp>/`` with a
``finetune.json`` saying what made it; inference picks it up at its next request.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ldct import registry
from ldct.data import Case, prepare
from ldct.train.loop import train

FINETUNE_DOSES = (0.5, 0.25, 0.1)  # the range the shipped models are trained for


def finetune(name: str, images: Sequence[str | Path], steps: int = 200,
             doses: Sequence[float] = FINETUNE_DOSES, max_slices: int | None = 32,
             device: str = "auto", progress: bool = False) -> Path:
    """Fine-tune network ``name`` on ``images`` (any volume `ldct.io` reads); returns the
    new version's folder."""
    info = registry.get(name)
    if info.kind != "network":
        raise ValueError(f"{name} is a baseline; only networks can be fine-tuned.")
    if not info.available():
        raise FileNotFoundError(f"{name} has no trained weights to start from at {info.weights}.")
    if not images:
        raise ValueError("no images to fine-tune on: add the site's CT scans to the datastore.")
    base = info.weights
    catalogue = [Case(f"site{k:03d}", str(Path(path).resolve()), "train")
                 for k, path in enumerate(images)]
    info.versions_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=info.versions_dir) as work:
        work = Path(work)
        prepare(Path("/"), work / "data", doses=doses, max_slices=max_slices,
                progress=progress, catalogue=catalogue)
        result = train(name, work / "data", work / "run", overrides={"steps": steps},
                       device=device, progress=progress, init_weights=base)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        staged = work / stamp
        staged.mkdir()
        shutil.copy2(result.out_dir / "model.pt", staged / "model.pt")
        shutil.copy2(result.out_dir / "log.csv", staged / "train_log.csv")
        record: dict[str, Any] = {
            "model": name, "version": stamp, "base_weights": str(base),
            "images": [str(p) for p in images], "doses": list(doses), "steps": result.steps,
            "max_slices": max_slices, "wall_s": round(result.wall_s, 1)}
        (staged / "finetune.json").write_text(json.dumps(record, indent=1))
        os.replace(staged, info.versions_dir / stamp)  # complete or absent, never half-written
    return info.versions_dir / stamp
