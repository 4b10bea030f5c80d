"""The oldest 3D Slicer the module runs in, checked when Slicer loads it (pure Python)."""

from __future__ import annotations

# slicer.i18n (the module's translatable strings) first ships in Slicer 5.6 (Slicer's
# maintainers: "Internationalization was introduced in Slicer-5.6"); parameterNodeWrapper
# and the DICOM database calls the module uses are older.
MINIMUM_SLICER = (5, 6)


def check_slicer(major: int, minor: int, found: str) -> None:
    """Raise a clear error (shown in Slicer's Python console and error log) when the running
    Slicer is older than :data:`MINIMUM_SLICER`."""
    if (major, minor) < MINIMUM_SLICER:
        needed = ".".join(map(str, MINIMUM_SLICER))
        raise ImportError(f"Low-dose CT Denoise needs 3D Slicer {needed} or newer; this is "
                          f"Slicer {found}. Install a current Slicer from "
                          "https://download.slicer.org and the extension again.")
