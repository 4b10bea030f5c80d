"""Shared fixtures: the phantom, the real data folder (tests needing it skip with a reason),
and real servers on 127.0.0.1 (the ldct MONAI Label server, Orthanc with DICOMweb)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ldct import registry
from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.data import CASES, prepare
from ldct.io import write_dicom_series, write_volume
from ldct.phantom import Phantom, make_phantom
from ldct.processes import free_port, running, serve_command  # noqa: F401 - for the tests

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SLICER_MODULE = ROOT / "slicer_extension" / "LowDoseCTDenoise"
sys.path.insert(0, str(SLICER_MODULE))  # the module's Logic and pure library, as Slicer loads them


TEST_ROLES = ("admin", "radiologist", "coordinator")


@pytest.fixture(scope="session", autouse=True)
def tokens(tmp_path_factory) -> dict[str, str]:
    """A token file for the whole session, one token per role: every server a test starts
    reads it, and reader tokens made by studies go there (never to ~/.config)."""
    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    os.environ[AUTH_FILE_ENV] = str(path)
    store = TokenStore(path)
    return {role: store.add(f"test-{role}", role) for role in TEST_ROLES}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def monai_client(url: str, tmpdir, token: str):
    """MONAI Label's own client, sending ``token``."""
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(url, tmpdir=str(tmpdir))
    client.update_auth({"token_type": "Bearer", "access_token": token})
    return client


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
    """`ldct prepare` output for the phantom data (doses 0.5 and 0.25 with the Hann and the
    edge-enhancing sharp kernel, 8 slices per case)."""
    out = tmp_path_factory.mktemp("prepared")
    prepare(fake_shared, out, doses=(0.5, 0.25), max_slices=8, progress=False,
            kernels=("sharp-ee",))
    return out


@pytest.fixture(scope="session")
def ldct_server(tmp_path_factory) -> Iterator[str]:
    """The ldct MONAI Label server with a local datastore holding one phantom ("phantom")."""
    studies = tmp_path_factory.mktemp("studies")
    write_volume(make_phantom(size=128, slices=3).volume, studies / "phantom.nrrd", dtype="int16")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site_models = tmp_path_factory.mktemp("site-models")  # never the repository's models/
    with running(serve_command(str(studies), port), f"{url}/health",
                 tmp_path_factory.mktemp("log") / "server.log",
                 env={registry.SITE_MODELS_ENV: str(site_models)}):
        yield url


@contextlib.contextmanager
def orthanc_server(root: Path, users: dict[str, str] | None = None) -> Iterator[str]:
    """A real Orthanc with the DICOMweb plugin and its own empty storage in ``root``; with
    ``users``, HTTP basic authentication on. Yields its URL."""
    binary = shutil.which("Orthanc")
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    assert binary and plugin.exists(), ("Orthanc is not installed: apt-get install orthanc "
                                        "orthanc-dicomweb (scripts/test-servers.sh does)")
    port = free_port()
    config = {"Name": "ldct-test", "StorageDirectory": str(root / "db"),
              "IndexDirectory": str(root / "db"), "HttpPort": port, "DicomPort": free_port(),
              "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
              "RegisteredUsers": users or {},
              "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (root / "orthanc.json").write_text(json.dumps(config))
    login = "" if not users else "{}:{}@".format(*next(iter(users.items())))
    with running([binary, str(root / "orthanc.json")], f"http://{login}127.0.0.1:{port}/system",
                 root / "orthanc.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[str]:
    """An Orthanc without authentication for the session's PACS tests."""
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as url:
        yield url
