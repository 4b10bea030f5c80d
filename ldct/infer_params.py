"""The parameters of a denoising request: one table, checked by name before any work starts.

Each row is one parameter: its default, what it takes, what it means and who defines it - this
project, or MONAI Label, whose clients send its writer's parameters (``result_extension``,
``result_dtype``, ``result_compress``) and a few of their own with every request. The same
table gives the task config MONAI Label clients read from ``/info/`` (choices as a list, the
default first) and the JSON Schema shown beside it, so a new parameter is one row here and one
field in `DenoiseParams`.

A value of the wrong type or out of range is refused with the parameter's name and what it
takes (never coerced: ``ensemble: 2.7`` is an error, not 2); unknown keys are refused too, so a
misspelt ``strenght`` does not silently run at full strength. ``target_noise`` (HU, or the
name of one of the server's noise levels) replaces ``strength``: give one of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ldct.infer import DEFAULT_ENSEMBLE, DIHEDRAL_VIEWS

LDCT, MONAI_LABEL = "ldct", "monailabel"  # who defines a parameter

# Integer types MONAI Label's clients ask for (its Slicer and OHIF plugins always send uint8,
# being made for label maps) that cannot hold CT numbers (air is -1000 HU): the result is
# written in the narrowest type that can, whole HU, and the answer says so.
WIDENED_DTYPES = {"uint8": "int16", "int8": "int16", "uint16": "int16"}


# A request's params are a flat object of a dozen short values (some 300 characters): these
# bounds refuse what no client sends before the JSON parser sees it (it recurses per level).
MAX_PARAMS_CHARS = 4096
MAX_PARAMS_DEPTH = 8


class ParamError(ValueError):
    """A request parameter is wrong; the message names it and says what it takes."""


@dataclass(frozen=True)
class Param:
    """One request parameter. ``kind`` is number, whole, choice, flag, text or level (a
    number above ``low`` or a name); ``choices``
    are advertised (the first is the default), ``also`` accepted beyond them; a parameter
    that is not ``used`` is accepted for a client's sake and has no effect."""

    name: str
    kind: str
    default: Any
    meaning: str
    source: str = LDCT
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    takes: str = ""  # how an error message words the values it takes, when not the choices
    advertised: bool = True
    used: bool = True

    def check(self, value: Any) -> Any:
        """``value`` if this parameter takes it, else a `ParamError` naming what it takes."""
        if self._accepts(value):
            numeric = self.kind == "number" or (self.kind == "level" and _number(value))
            return float(value) if numeric else value
        takes = self.takes or ("one of " + ", ".join(self.choices + self.also))
        raise ParamError(f"{self.name} must be {takes}, got {value!r}")

    def _accepts(self, value: Any) -> bool:
        if self.kind in ("number", "whole"):
            wanted = (int, float) if self.kind == "number" else (int,)
            return (isinstance(value, wanted) and not isinstance(value, bool)
                    and self.low <= value <= self.high)
        if self.kind == "level":
            return (_number(value) and value > self.low) or (isinstance(value, str) and value)
        if self.kind == "choice":
            return value in self.choices or value in self.also
        if self.kind == "flag":
            return isinstance(value, bool)
        return value is None or isinstance(value, str)  # MONAI Label's client sends null

    def advertise(self) -> Any:
        """The value in MONAI Label's task config: the choices (default first), else the
        default (its clients show a list as a menu, a bool as a check box)."""
        return list(self.choices) if self.choices else self.default

    def schema(self) -> dict[str, Any]:
        """This parameter as a JSON Schema property (``x-source``: who defines it)."""
        types = {"number": "number", "whole": "integer", "choice": "string", "flag": "boolean",
                 "text": ["string", "null"], "level": ["number", "string"]}
        out: dict[str, Any] = {"type": types[self.kind], "default": self.default,
                               "description": self.meaning, "x-source": self.source}
        if self.kind in ("number", "whole"):
            out.update(minimum=self.low, maximum=self.high)
        if self.kind == "level":
            out["exclusiveMinimum"] = self.low
        if self.kind == "choice":
            out["enum"] = list(self.choices + self.also)
        return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


PARAMS: tuple[Param, ...] = (
    Param("strength", "number", 1.0, "blend between the input (0) and the full result (1); "
          "left out: the model's default (registry.DEFAULT_STRENGTHS)",
          low=0.0, high=1.0, takes="a number from 0 (the input) to 1 (full)"),
    # not in the task config: MONAI Label's clients send every advertised value back, and
    # with strength a target_noise would always be a conflict
    Param("target_noise", "level", None, "instead of strength: the noise SD (HU, flat soft "
          "tissue) the result should have, or the name of one of the server's noise levels",
          low=0.0, takes="a noise SD in HU above 0 (e.g. 12) or the name of one of the "
          "server's noise levels", advertised=False),
    Param("ensemble", "whole", DEFAULT_ENSEMBLE,
          "flipped/rotated views of each slice averaged (more: a little less noise, slower)",
          low=1, high=len(DIHEDRAL_VIEWS),
          takes=f"a whole number of views from 1 (one pass, fastest) to {len(DIHEDRAL_VIEWS)}"),
    Param("device", "choice", "auto", "where the network runs: auto is CUDA when present",
          choices=("auto", "cuda", "cpu")),
    Param("write_back", "flag", False, "store the result in the PACS as a derived series "
          "(a datastore image of a server started with --studies URL)", takes="true or false"),
    Param("result_extension", "choice", ".nrrd", "the result file's format (MONAI Label's "
          "writer): NRRD, NIfTI (gzipped or not) or MetaImage; empty means NRRD",
          source=MONAI_LABEL, choices=(".nrrd", ".nii.gz", ".nii", ".mha"), also=("",),
          takes="one of .nrrd, .nii.gz, .nii, .mha (empty: .nrrd)"),
    Param("result_dtype", "choice", "float32", "the result's voxel type (MONAI Label's "
          "writer): float32 HU, or int16 whole HU; uint8, int8 and uint16 cannot hold CT "
          "numbers and are written as int16", source=MONAI_LABEL,
          choices=("float32", "int16"), also=tuple(WIDENED_DTYPES),
          takes="one of float32, int16 (uint8, int8 and uint16 are written as int16)"),
    Param("result_compress", "flag", True, "compress the result file (MONAI Label's writer; "
          "NRRD and MetaImage: .nii.gz is always compressed, .nii never)",
          source=MONAI_LABEL, takes="true or false"),
    Param("restore_label_idx", "flag", False, "MONAI Label's label-index mapping, sent by its "
          "OHIF plugin: no effect, a denoiser has no labels", source=MONAI_LABEL,
          takes="true or false", advertised=False, used=False),
    Param("client_id", "text", "", "the id MONAI Label's client adds to every request: no "
          "effect", source=MONAI_LABEL, takes="a string or null", advertised=False, used=False),
)
BY_NAME = {p.name: p for p in PARAMS}
RESULT_EXTENSIONS = BY_NAME["result_extension"].choices


@dataclass(frozen=True)
class DenoiseParams:
    """The checked values of the parameters that have an effect (one field per used row)."""

    strength: float | None = None  # None: the model's default (registry.DEFAULT_STRENGTHS)
    ensemble: int = DEFAULT_ENSEMBLE
    device: str = "auto"
    write_back: bool = False
    result_extension: str = ".nrrd"
    result_dtype: str = "float32"
    result_compress: bool = True
    target_noise: float | str | None = None  # HU or a level's name; None: use strength
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def extension(self) -> str:
        """The result file's suffix (MONAI Label's empty extension: the default, NRRD)."""
        return self.result_extension or BY_NAME["result_extension"].default

    @property
    def written_dtype(self) -> str:
        """The voxel type the result is written in (a label type widened to int16)."""
        return WIDENED_DTYPES.get(self.result_dtype, self.result_dtype)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a request carries them: ``strength`` or ``target_noise`` when
        given (neither: the model's default strength), no notes."""
        values = asdict(self)
        del values["notes"]
        return {k: v for k, v in values.items()
                if v is not None or k not in ("strength", "target_noise")}


def parse_params(raw: str | dict[str, Any] | None) -> DenoiseParams:
    """The request's ``params`` (a JSON object, as text or parsed), checked field by field."""
    if raw is None or raw == "":
        raw = {}
    if isinstance(raw, str):
        raw = _parsed(raw)
    if not isinstance(raw, dict):
        raise ParamError(f"params must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(BY_NAME))
    if unknown:
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; this server takes "
                         f"{', '.join(sorted(p.name for p in PARAMS if p.used))}")
    given = {k: v for k, v in raw.items() if not (k == "target_noise" and v is None)}
    if "target_noise" in given and "strength" in given:
        raise ParamError("give strength or target_noise, not both: target_noise chooses the "
                         "strength that leaves that noise")
    values = {p.name: p.check(given[p.name]) for p in PARAMS if p.name in given}
    params = DenoiseParams(**{k: v for k, v in values.items() if BY_NAME[k].used})
    if params.written_dtype != params.result_dtype:
        params = replace(params, notes=(
            f"result_dtype {params.result_dtype} cannot hold CT numbers (air is -1000 HU): "
            f"the result was written as {params.written_dtype}, whole HU",))
    return params


def _parsed(text: str) -> Any:
    """``text`` as JSON, refused when longer or more deeply nested than any request needs
    (json's own stack limit, a RecursionError, is never reached: 4096 characters can nest
    2000 deep)."""
    if len(text) > MAX_PARAMS_CHARS:
        raise ParamError(f"params is {len(text):,} characters; at most {MAX_PARAMS_CHARS:,} "
                         'are taken: send a flat JSON object such as {"strength": 0.8}')
    try:
        value = json.loads(text)
        deep = _nests_deeper(value, MAX_PARAMS_DEPTH)
    except RecursionError:
        deep = True
    except ValueError as exc:
        raise ParamError(f"params is not valid JSON ({exc}); send a JSON object such as "
                         '{"strength": 0.8}') from exc
    if deep:
        raise ParamError(f"params nests deeper than {MAX_PARAMS_DEPTH} levels; send a flat JSON "
                         'object such as {"strength": 0.8}')
    return value


def _nests_deeper(value: Any, levels: int) -> bool:
    """Do JSON arrays and objects nest more than ``levels`` deep in ``value``? (Looks no
    deeper than that, so a parsed 900-level document cannot exhaust the stack here.)"""
    if not isinstance(value, (dict, list)):
        return False
    if levels == 0:
        return True
    return any(_nests_deeper(v, levels - 1)
               for v in (value.values() if isinstance(value, dict) else value))


def task_config(strength: float = 1.0) -> dict[str, Any]:
    """The infer task's config as MONAI Label shows it in /info/ (what its clients send), with
    the model's default ``strength``."""
    return {**{p.name: p.advertise() for p in PARAMS if p.advertised}, "strength": strength}


def json_schema(strength: float = 1.0) -> dict[str, Any]:
    """Every parameter a request may carry, ours and MONAI Label's, as a JSON Schema (the
    model's default ``strength``)."""
    properties = {p.name: p.schema() for p in PARAMS}
    properties["strength"]["default"] = strength
    return {"type": "object", "additionalProperties": False, "properties": properties}
