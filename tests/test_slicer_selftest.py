"""The module's self-test as Slicer's factory machines run it (no live server): the same
scenario (LowDoseCTDenoiseLib.selftest) on plain MRML with the in-process fake server."""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np
import pytest
from LowDoseCTDenoiseLib import DenoiseClient, ServerUnreachable, fakeserver, selftest
from LowDoseCTDenoiseLib.fakeserver import MODEL, FakeServer, smooth
from LowDoseCTDenoiseLib.transfer import NrrdHeader, read_nrrd, write_nrrd
from test_slicer_logic import scene  # noqa: F401 - the fixture

from ldct.io import read_volume


def test_the_self_test_passes_without_a_live_server(scene, tmp_path):  # noqa: F811
    result = selftest.run(temp_root=str(tmp_path))
    assert result.GetName() == f"synthetic CT {MODEL} s=0.5"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    assert list(tmp_path.iterdir()) == []  # upload and result removed


def test_the_self_test_catches_a_server_that_changes_nothing(scene, tmp_path,  # noqa: F811
                                                             monkeypatch):
    monkeypatch.setattr(fakeserver, "smooth", lambda raw, nrrd_type, endian=sys.byteorder: raw)
    with pytest.raises(AssertionError, match="not the server's"):
        selftest.run(temp_root=str(tmp_path))


def test_the_fake_server_answers_the_clients_routes(tmp_path):
    """/health, /info/ (one denoiser) and /infer/{model}: the upload smoothed, sent back as
    a gzip NRRD with the upload's header, which ITK (the real server's reader) reads."""
    hu = np.random.default_rng(3).integers(-1000, 1000, (3, 64, 70)).astype(np.int16)
    header = NrrdHeader("int16", (70, 64, 3), ((0.7, 0.0, 0.0), (0.0, 0.7, 0.0),
                                               (0.0, 0.0, 2.5)), (-10.0, 20.0, 30.5))
    upload = write_nrrd(tmp_path / "in.nrrd", header, iter(hu))
    with FakeServer() as server:
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as answer:
            assert json.load(answer) == {"status": "ok"}
        client = DenoiseClient(server.url)
        assert [m.name for m in client.models()] == [MODEL]
        out = client.denoise(MODEL, upload, tmp_path / "out.nrrd")
    back, raw = read_nrrd(out)
    assert back == header and raw == smooth(hu.tobytes(), "int16") != hu.tobytes()
    volume = read_volume(out)
    assert volume.spacing == (0.7, 0.7, 2.5) and volume.origin == (-10.0, 20.0, 30.5)
    with pytest.raises(ServerUnreachable):  # stopped with its block
        DenoiseClient(server.url, retries=0).models()
