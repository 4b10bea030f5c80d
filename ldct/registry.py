"""The model catalogue: name -> network factory (or baseline function), weights, model card.

Networks register their factory with :func:`register` (timm-style); a new denoiser is one
module in ldct/nets/, one registration and one folder models/<name>/ holding ``model.pt`` and
``card.md`` / ``card.json``. Baselines register a function on HU arrays instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
ENCODER_DIR = MODELS_DIR / "ct_encoder"  # the shipped PVM (encoder.pt + card)


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
    def weights(self) -> Path:
        return self.folder / "model.pt"

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
                "available": self.available(), "card": self.card()}


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
