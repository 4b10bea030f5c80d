"""The model catalogue: name -> network factory (or baseline function), weights, model card.

Networks register their factory with :func:`register` (timm-style); a new denoiser is one
module in ldct/nets/, one registration and one folder models/<name>/ holding ``model.pt`` and
``card.md`` / ``card.json``. Baselines register a function on HU arrays instead.

A site can fine-tune a shipped network (`ldct.finetune`): each run adds a version
``<site models>/<name>/versions/<timestamp>/model.pt`` (site models: ``$LDCT_SITE_MODELS``,
default ``models/``) and records it, with its SHA-256, in ``<site models>/<name>/versions.json``.
That manifest alone says which version is in use (`ldct models use` rolls back): a folder
nobody recorded, or weights whose hash changed, are never loaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldct.noise_level import NoiseCalibration, NoiseLevelError

logger = logging.getLogger(__name__)
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
ENCODER_DIR = MODELS_DIR / "ct_encoder"  # the shipped PVM (encoder.pt + card)
SITE_MODELS_ENV = "LDCT_SITE_MODELS"
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a folder under versions/
# the model to offer first (demo, Slicer default, /info/), chosen by benchmarks/select_model.py
RECOMMENDED_FILE = MODELS_DIR / "recommended.json"
FALLBACK = "ldct-nlm"  # when no recommended network has weights
# each model's dose-reduction estimate and detectability losses, written by `ldct qa --write`
QUALITY_FILE = MODELS_DIR / "task_quality.json"
# per network: how its results' noise estimate reads against their true noise, for the
# weights it was measured on (`benchmarks/noise_estimate.py calibrate --write`; target_noise)
NOISE_CALIBRATION_FILE = MODELS_DIR / "noise_calibration.json"
# Each model's default strength, used when a request gives neither strength nor target_noise.
# Rule (benchmarks/quality/texture/kernels.md, "texture" section, issue 37): the default should
# leave about the normal dose's own noise, not less - the minimum over the swept kernels of the
# strength that matches the normal dose's noise (measured with each network's noise
# calibration), rounded down to 0.05. vagan (0.922 on hann) and non-local means (0.867 on hann)
# over-smooth at full strength; every other model, n2n25d included (its true noise at full
# strength is 1.12x the normal dose's on hann), stays at 1.
DEFAULT_STRENGTHS = {"vagan": 0.90, "ldct-nlm": 0.85}


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
    differences: tuple[str, ...] = ()  # how what ships departs from its paper (cards, /info/)

    @property
    def folder(self) -> Path:
        return MODELS_DIR / self.name

    @property
    def shipped_weights(self) -> Path:
        return self.folder / "model.pt"

    @property
    def versions_dir(self) -> Path:
        return site_models_dir() / self.name / "versions"

    @property
    def manifest_path(self) -> Path:
        return site_models_dir() / self.name / "versions.json"

    def manifest(self) -> dict[str, Any]:
        """``{"in_use": name or "shipped", "versions": {name: record}}`` (records hold sha256);
        a manifest that cannot be used means the shipped weights, its ``error`` saying why
        (logged once, shown in /info/)."""
        path = self.manifest_path
        try:
            return _checked_manifest(json.loads(path.read_text()) if path.exists() else {})
        except (OSError, ValueError) as exc:
            error = f"{path}: {str(exc)[:200]}; serving the shipped weights"
            if error not in _REPORTED:
                _REPORTED.add(error)
                logger.error("%s", error)
            return {"in_use": "shipped", "versions": {}, "error": error}

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.manifest_path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(manifest, indent=1))
        os.replace(partial, path)  # complete or absent

    def versions(self) -> list[Path]:
        """Recorded fine-tuned versions, oldest first (each a folder holding model.pt)."""
        recorded = self.manifest()["versions"]
        for planted in sorted(self.versions_dir.glob("*/model.pt")):
            if planted.parent.name not in recorded and planted not in _REPORTED:
                _REPORTED.add(planted)  # once per process, not on every request
                logger.warning("ignored %s: not a recorded version of %s (versions.json)",
                               planted, self.name)
        return [self.versions_dir / name for name in recorded]

    def record_version(self, folder: Path, record: dict[str, Any]) -> None:
        """Add the fine-tuned ``folder`` (under versions/) to the manifest and use it."""
        manifest = self.manifest()
        manifest["versions"][folder.name] = {**record,
                                             "sha256": file_sha256(folder / "model.pt")}
        manifest["in_use"] = folder.name
        self._write_manifest(manifest)

    def use(self, version: str) -> None:
        """Serve ``version`` (a recorded one, or ``shipped``) from the next request on."""
        manifest = self.manifest()
        if version != "shipped" and version not in manifest["versions"]:
            known = ", ".join(["shipped", *manifest["versions"]])
            raise ValueError(f"{self.name} has no version {version!r}; known: {known}")
        manifest["in_use"] = version
        self._write_manifest(manifest)

    @property
    def weights(self) -> Path:
        """The weights in use: the manifest's version if its file still has the recorded
        SHA-256, else (with an error in the log) the shipped ones."""
        manifest = self.manifest()
        version = manifest["in_use"]
        if version == "shipped":
            return self.shipped_weights
        path = self.versions_dir / version / "model.pt"
        expected = manifest["versions"].get(version, {}).get("sha256")
        if path.exists() and expected and file_sha256(path) == expected:
            return path
        logger.error("%s version %s: %s is missing or changed since it was recorded; serving "
                     "the shipped weights", self.name, version, path)
        return self.shipped_weights

    def version(self) -> str:
        """``shipped`` or the name of the fine-tuned version in use."""
        return self.version_of(self.weights)

    def version_of(self, weights: Path) -> str:
        """The version a weights file is: ``shipped`` or its fine-tuned version's name."""
        return "shipped" if weights == self.shipped_weights else weights.parent.name

    @property
    def default_strength(self) -> float:
        """The strength used when a caller gives neither strength nor target_noise."""
        return DEFAULT_STRENGTHS.get(self.name, 1.0)

    def strength_or_default(self, given: float | None) -> float:
        """The strength a caller gave, or this model's default when it gave none."""
        return self.default_strength if given is None else given

    def noise_calibration(self, weights: Path | None = None) -> NoiseCalibration | None:
        """The calibration `target_noise` matches this network's results with, when it was
        measured on these weights (default: those in use); None for other weights (a
        fine-tuned version, a retrained file), for baselines and for a malformed record
        (logged): their plain estimate stands."""
        entry = noise_calibrations().get(self.name)
        weights = Path(weights) if weights else self.weights
        if (self.kind != "network" or entry is None or not weights.exists()
                or entry.get("weights_sha256") != file_sha256(weights)):
            return None
        try:
            return NoiseCalibration.from_json(entry, f"{NOISE_CALIBRATION_FILE} {self.name}")
        except NoiseLevelError as error:
            logger.error("ignored: %s", error)
            return None

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
                "differences_from_paper": list(self.differences),
                "available": self.available(),
                "version": self.version() if self.kind == "network" else "",
                "manifest_error": self.manifest().get("error", "")
                if self.kind == "network" else "",
                "recommended": self.name == recommended(),
                "default_strength": self.default_strength, "card": self.card(),
                "task_based_quality": task_quality().get(self.name, {})}


def _checked_manifest(data: Any) -> dict[str, Any]:
    """A versions.json's content, refused (ValueError) unless every version is a plain folder
    name under versions/ (never a path) with a record."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    in_use, versions = data.get("in_use", "shipped"), data.get("versions", {})
    if not isinstance(versions, dict) or not all(
            isinstance(k, str) and VERSION_NAME.fullmatch(k) and isinstance(v, dict)
            for k, v in versions.items()):
        raise ValueError("'versions' must map version folder names to records")
    if not isinstance(in_use, str) or (in_use != "shipped" and in_use not in versions):
        raise ValueError(f"'in_use' {str(in_use)[:80]!r} is not 'shipped' or a recorded version")
    return {"in_use": in_use, "versions": versions}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed again whenever the file may have changed (the weights in
    use are checked on every request): a write or a replacement changes its inode change time,
    which unlike the modification time cannot be set back."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_ino, stat.st_ctime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, inode: int, ctime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


REGISTRY: dict[str, ModelInfo] = {}
_REPORTED: set[Path | str] = set()  # unrecorded version folders and manifest errors logged


def register(name: str, title: str, paper: str, supervision: str, kind: str = "network",
             differences: tuple[str, ...] = ()):
    """Decorator: add a network factory or baseline function to the catalogue under ``name``;
    ``differences`` says where what ships departs from the paper."""
    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = ModelInfo(name, title, paper, supervision, kind, build, differences)
        return build
    return wrap


def get(name: str) -> ModelInfo:
    """Look a model up, with the list of known names when it is missing."""
    _load_builtin()
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _record(path: Path, remedy: str, per_model: bool = False) -> dict[str, Any]:
    """A JSON object that a command wrote into models/, or {} when there is none or it is
    malformed (logged with ``remedy``): /info/ and the listings must answer without it."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a {type(data).__name__}, not an object")
        if per_model and not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("each model's entry must be an object")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        logger.error("ignored %s (%s); %s", path, error, remedy)
        return {}
    return data


def recommendation() -> dict[str, Any]:
    """What `benchmarks/select_model.py --write` chose and why (empty when never run)."""
    return _record(RECOMMENDED_FILE, "rerun `python benchmarks/select_model.py --write`")


def task_quality() -> dict[str, Any]:
    """Per model: dose-reduction estimate and detectability losses (`ldct qa`; empty until
    run)."""
    return _record(QUALITY_FILE, "rerun `ldct qa --write`", per_model=True)


def noise_calibrations() -> dict[str, Any]:
    """Every network's noise calibration record (empty until measured, or when malformed)."""
    return _record(NOISE_CALIBRATION_FILE, "rerun `python benchmarks/noise_estimate.py "
                                           "calibrate --write`", per_model=True)


def recommended() -> str:
    """The model to offer first: the best worst-kernel network when it has weights, else
    non-local means."""
    name = recommendation().get("model", FALLBACK)
    return name if name in names() and get(name).available() else FALLBACK


def names() -> list[str]:
    """Every registered model, networks first."""
    _load_builtin()
    return sorted(REGISTRY, key=lambda n: (REGISTRY[n].kind != "network", n))


def _load_builtin() -> None:
    """Import the modules whose decorators fill the catalogue."""
    import ldct.baselines  # noqa: F401
    import ldct.nets.catalogue  # noqa: F401
