"""Shared fixtures: the phantom, and the real data folder (tests needing it skip with a reason)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ldct.data import CASES, prepare
from ldct.io import write_dicom_series, write_volume
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


@pytest.fixture(scope="session")
def fake_shared(tmp_path_factory) -> Path:
    """Phantoms saved under the real data layout: DICOM series, NIfTI and masks."""
    root = tmp_path_factory.mktemp("shared_data")
    for seed, case in enumerate(CASES):
        p = make_phantom(size=128, slices=10, seed=seed)
        target = root / case.image
        if case.image.endswith(".nii.gz"):
            write_volume(p.volume, target)
        else:
            write_dicom_series(p.volume, target)
        for relative in case.masks:
            mask = p.masks["liver"] if "liver." in relative else p.masks["lesions"]
            write_volume(p.volume.with_hu(mask.astype(np.float32)), root / relative)
    return root


@pytest.fixture(scope="session")
def prepared(fake_shared, tmp_path_factory) -> Path:
    """`ldct prepare` output for the phantom data (doses 0.5 and 0.25, 8 slices per case)."""
    out = tmp_path_factory.mktemp("prepared")
    prepare(fake_shared, out, doses=(0.5, 0.25), max_slices=8, progress=False)
    return out
