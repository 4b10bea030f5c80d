"""The panel's state as the scene keeps it, so that saving and loading a scene restores the
panel: pure Python, read and written by the controller, stored by the Logic in the module's
parameter node as Slicer's ``parameterNodeWrapper`` stores it (every field a string
parameter; a node field an empty parameter plus a node reference of the same name, so its ID
follows the scene when it is loaded)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from .display import LAYOUTS, VOLUME_PRESET, WINDOW_PRESETS

NODE_ROLES = ("input", "original", "result", "difference")  # node IDs; "" for none
DEFAULT_WINDOW = "Liver"


@dataclass(frozen=True)
class PanelState:
    """The panel's choices and the volumes it shows (node IDs)."""

    model: str = ""
    strength: float = 1.0
    window: str = DEFAULT_WINDOW
    layout: str = next(iter(LAYOUTS))
    input: str = ""
    original: str = ""
    result: str = ""
    difference: str = ""

    def to_strings(self) -> dict[str, str]:
        """Every field as the string a parameter node holds."""
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> PanelState:
        """The state from a parameter node's strings. A value missing or not understood (a
        scene from another version, an edited file) keeps its default."""
        default = cls()
        try:
            strength = float(values.get("strength", default.strength))
        except ValueError:
            strength = default.strength
        window = values.get("window", "")
        layout = values.get("layout", "")
        return cls(values.get("model", default.model),
                   strength if 0.0 <= strength <= 1.0 else default.strength,
                   window if window in (*WINDOW_PRESETS, VOLUME_PRESET) else default.window,
                   layout if layout in LAYOUTS else default.layout,
                   **{role: values.get(role, "") for role in NODE_ROLES})
