"""The study definition (YAML): cases, conditions, criteria, presentation, readers, window, seed.

Example::

    name: Liver LDCT denoising 2026
    seed: 20261122
    presentation: pairs          # or: single (one condition at a time)
    window: {width: 400, level: 40}
    readers: [reader1, reader2]
    cases:
      - {id: c1, image: volumes/c1.nrrd}          # a file (relative to the YAML)
      - {id: c2, datastore: phantom}               # an image id of the server's datastore
      - {id: c3, dicomweb: {url: http://pacs:8042/dicom-web, study: 1.2..., series: 1.2...}}
    conditions:
      - {name: original}                           # no model: the reference
      - {name: vagan, model: vagan, strength: 1.0}
      - {name: vagan-default, model: vagan}        # neither: the model's default strength
      - {name: vagan-12HU, model: vagan, target_noise: 12}   # the strength leaving 12 HU
    criteria:
      - name: noise
        question: Image noise
        anchors: {1: unacceptable, 3: acceptable, 5: excellent}

A detection task (ROC) adds the truth to every case and a confidence criterion::

    cases:
      - {id: c1, image: volumes/c1.nrrd, lesion: true, location: [212, 240, 31]}  # voxel i, j, k
      - {id: c2, image: volumes/c2.nrrd, lesion: false}
    criteria:
      - name: lesion
        task: detection          # a confidence rating per image, analysed as ROC AUC
        question: Is there a liver lesion?
        scale: [1, 5]            # or [0, 100]; the Slicer panel shows 1-5
        anchors: {1: definitely no lesion, 3: unsure, 5: definitely a lesion}

The truth (lesion, location) never reaches a reader.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ldct.messages import clip
from ldct.pacs import is_dicomweb_url, is_uid

PRESENTATIONS = ("single", "pairs")
LIKERT = (1, 2, 3, 4, 5)
TASKS = ("likert", "detection")
DETECTION_SCALES = ((1, 5), (0, 100))
DETECTION_ANCHORS = {1: "definitely no lesion", 3: "unsure", 5: "definitely a lesion"}
MAX_YAML_BYTES = 1 << 20  # a study of a thousand cases is some 100 KB of YAML
READER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")  # part of a token's name and a URL
MAX_NAME = 64  # characters of a study's name (its id names a folder and URLs)
MAX_TEXT = 256  # characters of any other text: ids, names, questions, anchors
MAX_VOXEL_INDEX = 1 << 20  # a lesion location's coordinates (voxels: any CT is far smaller)
MAX_SEED = 2**63 - 1  # a seed is stored as a 64-bit integer (SQLite, numpy)


class StudyDefinitionError(ValueError):
    """The YAML is not a valid study; the message says which field and what is expected."""


@dataclass(frozen=True)
class Case:
    id: str
    image: str = ""  # a file path
    datastore: str = ""  # a datastore image id
    dicomweb: dict[str, str] = field(default_factory=dict)  # url, study, series
    lesion: bool | None = None  # the truth of a detection task (None: not stated)
    location: tuple[float, ...] = ()  # the lesion's voxel (i, j, k), when known


@dataclass(frozen=True)
class Condition:
    name: str
    model: str = ""  # empty: the original images (the reference)
    strength: float | None = None  # None (and no target_noise): the model's default strength
    target_noise: float | None = None  # HU in flat soft tissue; set: it chooses the strength


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str
    anchors: dict[int, str]
    task: str = "likert"  # or "detection": a confidence rating scored against the truth
    scale: tuple[int, int] = (1, 5)  # the lowest and highest rating

    def accepts(self, value: Any) -> bool:
        """An integer rating on this criterion's scale."""
        return (isinstance(value, int) and not isinstance(value, bool)
                and self.scale[0] <= value <= self.scale[1])


@dataclass(frozen=True)
class StudyDefinition:
    name: str
    seed: int
    presentation: str
    window: tuple[float, float]  # (width, level)
    readers: tuple[str, ...]
    cases: tuple[Case, ...]
    conditions: tuple[Condition, ...]
    criteria: tuple[Criterion, ...]
    base_dir: Path = Path(".")

    @property
    def study_id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def reference(self) -> Condition:
        return next(c for c in self.conditions if not c.model)

    def items(self) -> list[dict[str, Any]]:
        """What is scored: (case, condition) one at a time, or (case, reference vs other)."""
        if self.presentation == "single":
            return [{"case": case.id, "conditions": [c.name]}
                    for case in self.cases for c in self.conditions]
        return [{"case": case.id, "conditions": [self.reference.name, c.name]}
                for case in self.cases for c in self.conditions if c.model]

    def public(self) -> dict[str, Any]:
        """What readers may see: no conditions, no case sources."""
        return {"study": self.study_id, "name": self.name, "presentation": self.presentation,
                "window": {"width": self.window[0], "level": self.window[1]},
                "criteria": [{"name": c.name, "question": c.question,
                              "anchors": {str(k): v for k, v in c.anchors.items()},
                              "task": c.task, "scale": list(c.scale)}
                             for c in self.criteria],
                "forced_choice": self.presentation == "pairs"}


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader refusing aliases (``*name``): a study file needs none, and nested
    aliases expand a few hundred bytes into gigabytes (the "billion laughs")."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "an alias (*name): study files take no YAML aliases; write the "
                "value out", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def loads(text: str, source: str = "the study") -> Any:
    """Parse a study's YAML text: bounded in size, no aliases, no Python objects."""
    if len(text) > MAX_YAML_BYTES:
        raise StudyDefinitionError(f"{source}: {len(text):,} characters of YAML; a study "
                                   f"definition has at most {MAX_YAML_BYTES:,}")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise StudyDefinitionError(f"{source} is not valid YAML: {clip(str(exc), 400)}") from exc
    except ValueError as exc:  # Python's bound on the digits of an integer (4300)
        raise StudyDefinitionError(f"{source}: a number in it is too long "
                                   f"({clip(str(exc), 120)}); study numbers are short") from exc


def _shown(value: Any) -> str:
    return clip(repr(value))


def _text(value: Any, where: str, limit: int = MAX_TEXT) -> str:
    """A short text field (ids, names, questions)."""
    text = str(value)
    if not text.strip() or len(text) > limit:
        raise StudyDefinitionError(f"{where} must be 1-{limit} characters, got {_shown(value)}")
    return text


def _need(mapping: dict, key: str, where: str, kind: type | tuple = str) -> Any:
    if key not in mapping:
        raise StudyDefinitionError(f"{where}: '{key}' is missing")
    if not isinstance(mapping[key], kind):
        raise StudyDefinitionError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}"
                                   f", got {_shown(mapping[key])}")
    return mapping[key]


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _unique(names: list[str], what: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StudyDefinitionError(f"{what} must be unique; repeated: "
                                   f"{clip(', '.join(map(str, duplicates)), 200)}")


def parse(data: Any, base_dir: Path = Path(".")) -> StudyDefinition:
    """Validate a loaded YAML document; every problem names its field."""
    if not isinstance(data, dict):
        raise StudyDefinitionError("the study file must be a YAML mapping (name:, cases:, ...)")
    presentation = data.get("presentation", "single")
    if presentation not in PRESENTATIONS:
        raise StudyDefinitionError(f"presentation must be one of {PRESENTATIONS}, "
                                   f"got {_shown(presentation)}")
    window = data.get("window", {"width": 400, "level": 40})
    try:
        width, level = float(window["width"]), float(window["level"])
    except (TypeError, KeyError, ValueError, OverflowError) as exc:
        raise StudyDefinitionError("window must be {width: W, level: L} in HU") from exc
    if not (math.isfinite(width) and math.isfinite(level)):
        raise StudyDefinitionError("window width and level must be finite numbers of HU")
    if width <= 0:
        raise StudyDefinitionError("window width must be positive")
    name = _text(_need(data, "name", "study"), "study: name", MAX_NAME)
    if not re.sub(r"[^a-z0-9]+", "", name.lower()):
        raise StudyDefinitionError("study: name needs letters or digits (its id is made of them)")
    readers = _need(data, "readers", "study", list)
    if not readers or not all(isinstance(r, str) for r in readers):
        raise StudyDefinitionError("readers must be a non-empty list of reader ids")
    for reader in readers:
        if not READER_ID.fullmatch(reader):
            raise StudyDefinitionError(f"reader id {_shown(reader)}: use 1-32 letters, digits, "
                                       "'.', '_' or '-', starting with a letter or digit (it is "
                                       "part of the reader's URLs and token)")
    _unique(readers, "reader ids")
    cases = []
    for k, entry in enumerate(_need(data, "cases", "study", list)):
        where = f"cases[{k}]"
        if not isinstance(entry, dict):
            raise StudyDefinitionError(f"{where} must be a mapping with id and a source")
        sources = [s for s in ("image", "datastore", "dicomweb") if s in entry]
        if len(sources) != 1:
            raise StudyDefinitionError(f"{where}: give exactly one of image, datastore, dicomweb")
        if "dicomweb" in entry:
            ref = entry["dicomweb"]
            if not isinstance(ref, dict) or not all(ref.get(k) for k in ("url", "study",
                                                                           "series")):
                raise StudyDefinitionError(f"{where}: dicomweb needs url, study and series")
            if not is_dicomweb_url(str(ref["url"])):
                raise StudyDefinitionError(f"{where}: dicomweb url {_shown(ref['url'])} is not "
                                           "an http(s) URL of a DICOMweb service")
            for key in ("study", "series"):
                if not is_uid(str(ref[key])):
                    raise StudyDefinitionError(f"{where}: dicomweb {key} {_shown(ref[key])} is "
                                               "not a DICOM UID (numbers joined by dots, at "
                                               "most 64 characters)")
        cases.append(Case(_text(_need(entry, "id", where, (str, int)), f"{where}: id"),
                          clip(str(entry.get("image", "")), 4096),
                          clip(str(entry.get("datastore", "")), 1024),
                          {k: clip(str(v), 4096) for k, v in entry.get("dicomweb", {}).items()},
                          *_truth(entry, where)))
    if not cases:
        raise StudyDefinitionError("cases must list at least one case")
    _unique([c.id for c in cases], "case ids")
    conditions = []
    for k, entry in enumerate(_need(data, "conditions", "study", list)):
        where = f"conditions[{k}]"
        if not isinstance(entry, dict):
            raise StudyDefinitionError(f"{where} must be a mapping with a name")
        strength = entry.get("strength")
        if strength is not None and (not isinstance(strength, (int, float))
                                     or isinstance(strength, bool) or not 0.0 <= strength <= 1.0):
            raise StudyDefinitionError(f"{where}: strength must be a number in [0, 1], got "
                                       f"{_shown(strength)}")
        target = entry.get("target_noise")
        if target is not None and ("strength" in entry or not _positive(target)):
            raise StudyDefinitionError(f"{where}: target_noise must be a noise SD in HU above 0 "
                                       f"and comes instead of strength, got {_shown(target)}"
                                       + (" with a strength" if "strength" in entry else ""))
        conditions.append(Condition(_text(_need(entry, "name", where), f"{where}: name"),
                                    clip(str(entry.get("model", "")), MAX_TEXT),
                                    None if strength is None else float(strength),
                                    None if target is None else float(target)))
    _unique([c.name for c in conditions], "condition names")
    if sum(1 for c in conditions if not c.model) != 1:
        raise StudyDefinitionError("conditions need exactly one reference without a model "
                                   "(the original images)")
    if len(conditions) < 2:
        raise StudyDefinitionError("conditions need the original and at least one model")
    criteria = []
    for k, entry in enumerate(_need(data, "criteria", "study", list)):
        where = f"criteria[{k}]"
        if not isinstance(entry, dict):
            raise StudyDefinitionError(f"{where} must be a mapping with name, question, anchors")
        task = entry.get("task", "likert")
        if task not in TASKS:
            raise StudyDefinitionError(f"{where}: task must be one of {TASKS}, got {task!r}")
        scale = _scale(entry, task, where)
        anchors = entry.get("anchors", DETECTION_ANCHORS if task == "detection" else {})
        if isinstance(anchors, dict):  # JSON (the stored copy) has the points as strings
            anchors = {int(k) if str(k).isdigit() else k: v for k, v in anchors.items()}
        if (not isinstance(anchors, dict) or not anchors
                or not all(isinstance(k, int) and scale[0] <= k <= scale[1] for k in anchors)):
            raise StudyDefinitionError(f"{where}: anchors must label points of the "
                                       f"{scale[0]}-{scale[1]} scale, e.g. "
                                       f"{{{scale[0]}: unacceptable, {scale[1]}: excellent}}")
        criteria.append(Criterion(_text(_need(entry, "name", where), f"{where}: name"),
                                  _text(entry.get("question", entry["name"]),
                                        f"{where}: question"),
                                  {int(k): _text(v, f"{where}: anchor {k}")
                                   for k, v in sorted(anchors.items())},
                                  task, scale))
    if not criteria:
        raise StudyDefinitionError("criteria must list at least one criterion")
    _unique([c.name for c in criteria], "criterion names")
    if any(c.task == "detection" for c in criteria):
        _check_truth(cases)
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise StudyDefinitionError(f"study: seed must be a whole number from 0 to {MAX_SEED}, "
                                   f"got {_shown(seed)}")
    return StudyDefinition(name, seed,
                           presentation, (width, level), tuple(readers), tuple(cases),
                           tuple(conditions), tuple(criteria), base_dir)


def _truth(entry: dict, where: str) -> tuple[bool | None, tuple[float, ...]]:
    """A case's lesion truth and location (voxel i, j, k), checked."""
    lesion = entry.get("lesion")
    if lesion is not None and not isinstance(lesion, bool):
        raise StudyDefinitionError(f"{where}: lesion must be true or false, got {lesion!r}")
    location = entry.get("location", [])
    if location and (not lesion or not isinstance(location, list) or len(location) != 3
                     or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and abs(v) <= MAX_VOXEL_INDEX for v in location)):
        raise StudyDefinitionError(f"{where}: location is the lesion's voxel [i, j, k] and "
                                   "needs lesion: true")
    return lesion, tuple(float(v) for v in location)


def _scale(entry: dict, task: str, where: str) -> tuple[int, int]:
    """A criterion's rating scale: 1-5 for Likert, 1-5 or 0-100 for a detection confidence."""
    scale = entry.get("scale", [1, 5])
    allowed = DETECTION_SCALES if task == "detection" else ((LIKERT[0], LIKERT[-1]),)
    if not isinstance(scale, list) or tuple(scale) not in allowed:
        raise StudyDefinitionError(f"{where}: scale must be one of "
                                   f"{[list(s) for s in allowed]} for a {task} criterion, got "
                                   f"{scale!r}")
    return int(scale[0]), int(scale[1])


def _check_truth(cases: list[Case]) -> None:
    """A detection task needs the truth of every case, with and without lesions."""
    unknown = [c.id for c in cases if c.lesion is None]
    if unknown:
        raise StudyDefinitionError(f"a detection criterion needs every case's truth: add "
                                   f"lesion: true or false to cases {', '.join(unknown)}")
    if all(c.lesion for c in cases) or not any(c.lesion for c in cases):
        raise StudyDefinitionError("a detection study needs cases with and without a lesion "
                                   "(ROC AUC compares them)")


def load(path: str | Path) -> StudyDefinition:
    """Read and validate a study YAML file."""
    path = Path(path)
    return parse(loads(path.read_text(), str(path)), path.parent)
