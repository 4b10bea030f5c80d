"""The parameters of a denoising request, checked by name before any work starts.

A value of the wrong type or out of range is refused with the parameter's name and what it
takes (never coerced: ``ensemble: 2.7`` is an error, not 2); unknown keys are refused too, so
a misspelt ``strenght`` does not silently run at full strength. ``target_noise`` (HU, or the
name of one of the server's noise levels) replaces ``strength``: give one of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ldct.infer import DEFAULT_ENSEMBLE, DIHEDRAL_VIEWS

DEVICES = ("auto", "cuda", "cpu")
RESULT_DTYPES = ("float32", "int16")
CLIENT_KEYS = ("client_id",)  # MONAI Label's own client adds it to every request


class ParamError(ValueError):
    """A request parameter is wrong; the message names it and says what it takes."""


@dataclass(frozen=True)
class DenoiseParams:
    strength: float = 1.0
    ensemble: int = DEFAULT_ENSEMBLE
    device: str = "auto"
    result_dtype: str = "float32"
    write_back: bool = False
    target_noise: float | str | None = None  # HU or a level's name; None: use strength

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a request carries them: ``strength`` or ``target_noise``."""
        fields = asdict(self)
        fields.pop("strength" if self.target_noise is not None else "target_noise")
        return fields


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_params(raw: str | dict[str, Any] | None) -> DenoiseParams:
    """The request's ``params`` (a JSON object, as text or parsed), checked field by field."""
    if raw is None or raw == "":
        return DenoiseParams()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ParamError(f"params is not valid JSON ({exc}); send a JSON object such as "
                             '{"strength": 0.8}') from exc
    if not isinstance(raw, dict):
        raise ParamError(f"params must be a JSON object, got {type(raw).__name__}")
    known = set(DenoiseParams.__dataclass_fields__)
    unknown = sorted(set(raw) - known - set(CLIENT_KEYS))
    if unknown:
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; this server takes "
                         f"{', '.join(sorted(known))}")
    fields = {k: v for k, v in raw.items() if k in known}
    strength = fields.get("strength", 1.0)
    if not _number(strength) or not 0.0 <= strength <= 1.0:
        raise ParamError(f"strength must be a number from 0 (the input) to 1 (full), got "
                         f"{strength!r}")
    ensemble = fields.get("ensemble", DEFAULT_ENSEMBLE)
    if (not isinstance(ensemble, int) or isinstance(ensemble, bool)
            or not 1 <= ensemble <= len(DIHEDRAL_VIEWS)):
        raise ParamError(f"ensemble must be a whole number of views from 1 (one pass, fastest) "
                         f"to {len(DIHEDRAL_VIEWS)}, got {ensemble!r}")
    device = fields.get("device", "auto")
    if device not in DEVICES:
        raise ParamError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    dtype = fields.get("result_dtype", "float32")
    if dtype not in RESULT_DTYPES:
        raise ParamError(f"result_dtype must be one of {', '.join(RESULT_DTYPES)}, got "
                         f"{dtype!r}")
    write_back = fields.get("write_back", False)
    if not isinstance(write_back, bool):
        raise ParamError(f"write_back must be true or false, got {write_back!r}")
    target = fields.get("target_noise")
    if target is not None:
        if "strength" in fields:
            raise ParamError("give strength or target_noise, not both: target_noise chooses "
                             "the strength that leaves that noise")
        if not (isinstance(target, str) and target) and not (_number(target) and target > 0):
            raise ParamError(f"target_noise must be a noise SD in HU above 0 (e.g. 12) or the "
                             f"name of one of the server's noise levels, got {target!r}")
        target = float(target) if _number(target) else target
    return DenoiseParams(float(strength), ensemble, device, dtype, write_back, target)
