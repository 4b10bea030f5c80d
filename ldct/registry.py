"""The model catalogue: name -> network factory (or baseline function), weights, model card.

Networks register their factory with :func:`register` (timm-style); a new denoiser is one
module in ldct/nets/, one registration and one folder models/<name>/ holding ``model.pt`` and
``card.md`` / ``card.json``. Baselines register a function on HU arrays instead.

A site can fine-tune a shipped network (`ldct.finetune`): each run adds a version
``<site models>/<name>/versions/<timestamp>/model.pt`` (site models: ``$LDCT_SITE_MODELS``,
default ``models/``), and the newest version is the one inference uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
ENCODER_DIR = MODELS_DIR / "ct_encoder"  # the shipped PVM (encoder.pt + card)
SITE_MODELS_ENV = "LDCT_SITE_MODELS"


def site_models_dir() -> Path:
    """Where fine-tuned versions go: a writable folder of the site (default: models/)."""
    return Path(os.environ.get(SITE_MODELS_ENV) or MODELS_DIR)


@dataclass(frozen=True)
class ModelInfo:
    """What the catalogue knows about one denoiser."""

    name: str
    title: str
    paper: str
    supervision: str
    kind: str  # "network" or "baseline"
    build: Callable[..., Any] = field(repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return MODELS_DIR / self.name

    @property
    def shipped_weights(self) -> Path:
        return self.folder / "model.pt"

    @property
    def versions_dir(self) -> Path:
        return site_models_dir() / self.name / "versions"

    def versions(self) -> list[Path]:
        """Fine-tuned versions, oldest first (each a folder holding model.pt)."""
        return sorted(p.parent for p in self.versions_dir.glob("*/model.pt"))

    @property
    def weights(self) -> Path:
        """The weights in use: the newest fine-tuned version, else the shipped ones."""
        versions = self.versions()
        return versions[-1] / "model.pt" if versions else self.shipped_weights

    def version(self) -> str:
        """``shipped`` or the name of the fine-tuned version in use."""
        return self.version_of(self.weights)

    def version_of(self, weights: Path) -> str:
        """The version a weights file is: ``shipped`` or its fine-tuned version's name."""
        return "shipped" if weights == self.shipped_weights else weights.parent.name

    def card(self) -> dict[str, Any]:
        """The machine-readable model card (empty until the model is trained and evaluated)."""
        path = self.folder / "card.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def available(self) -> bool:
        return self.kind == "baseline" or self.weights.exists()

    def summary(self) -> dict[str, Any]:
        """Name, method, paper, supervision, availability and the card, for listings and /info/."""
        return {"name": self.name, "title": self.title, "paper": self.paper,
                "supervision": self.supervision, "kind": self.kind,
                "available": self.available(),
                "version": self.version() if self.kind == "network" else "",
                "card": self.card()}


REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, title: str, paper: str, supervision: str, kind: str = "network"):
    """Decorator: add a network factory or baseline function to the catalogue under ``name``."""
    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = ModelInfo(name, title, paper, supervision, kind, build)
        return build
    return wrap


def get(name: str) -> ModelInfo:
    """Look a model up, with the list of known names when it is missing."""
    _load_builtin()
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> list[str]:
    """Every registered model, networks first."""
    _load_builtin()
    return sorted(REGISTRY, key=lambda n: (REGISTRY[n].kind != "network", n))


def _load_builtin() -> None:
    """Import the modules whose decorators fill the catalogue."""
    import ldct.baselines  # noqa: F401
    import ldct.nets.catalogue  # noqa: F401
