"""Shared fixtures: the phantom, and the real data folder (tests needing it skip with a reason)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ldct.phantom import Phantom, make_phantom

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def phantom() -> Phantom:
    return make_phantom(size=128, slices=6, seed=3)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real CT data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ldct_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "ldct"
    assert script.exists(), f"console script missing at {script}: is the package installed?"
    return [str(script)]
