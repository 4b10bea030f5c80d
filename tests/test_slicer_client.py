"""The Slicer module's server client (pure Python) against real servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest
import requests
from conftest import free_port
from LowDoseCTDenoiseLib import (
    AuthenticationFailed,
    Cancelled,
    DenoiseClient,
    DenoiseJob,
    ModelMissing,
    NotMonaiLabel,
    RequestRejected,
    ServerFailure,
    ServerTimeout,
    ServerUnreachable,
    StudyClient,
    UrlHistory,
    symmetric_window,
)

from ldct.io import read_volume, write_volume
from ldct.phantom import make_phantom
from ldct.simulate import LowDoseParams, simulate_low_dose


@pytest.fixture(scope="module")
def noisy_nrrd(tmp_path_factory):
    p = make_phantom(size=256, slices=3, pixel_mm=0.78)
    low = simulate_low_dose(p.volume, LowDoseParams(dose=0.25), seed=2, progress=False)
    return write_volume(low, tmp_path_factory.mktemp("in") / "low.nrrd", dtype="int16"), p


DENOISER_INFO = json.dumps({"models": {"m": {"type": "others", "ldct": {"kind": "baseline"}}}}
                           ).encode()  # /info/ of a server offering the denoiser "m"


class _Handler(http.server.BaseHTTPRequestHandler):
    """A plain HTTP server with a scripted answer per path; requests to the ``held`` paths
    are held until ``release`` is set (a server busy for longer than any client waits)."""

    routes: dict[str, tuple | list] = {}  # path -> (status, body) or (status, body, headers),
    # or a list of them answered in turn (the last one repeated)
    bodies: list[bytes] = []  # every POST body, in order
    held: tuple[str, ...] = ("/infer",)
    release = threading.Event()
    hits: list[str] = []  # every request's path, in order
    bodies: list[bytes] = []  # every POST's body, in order

    def _answer(self):
        type(self).hits.append(self.path)
        if self.path.startswith(self.held):
            self.release.wait(60)  # set when the test releases it or is over
        entry = self.routes.get(self.path.split("?")[0], (404, b"<html>nope</html>"))
        if isinstance(entry, list):
            entry = entry.pop(0) if len(entry) > 1 else entry[0]
        status, body, *headers = entry
        self.send_response(status)
        for key, value in (headers[0] if headers else {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer

    def do_POST(self):
        type(self).bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self._answer()

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that timed out or cancelled has gone by design: no traceback."""


@pytest.fixture()
def fake_server():
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler
    _Handler.release.set()
    server.shutdown()
    _Handler.routes, _Handler.release, _Handler.held = {}, threading.Event(), ("/infer",)
    _Handler.hits.clear()
    _Handler.bodies.clear()


def test_models_come_with_their_cards(ldct_server, tokens):
    models = {m.name: m for m in DenoiseClient(ldct_server, token=tokens["radiologist"]).models()}
    assert {"vagan", "ldct-gauss", "ldct-nlm"} <= set(models)
    tip = models["vagan"].tooltip()
    assert "Visual-attention GAN" in tip and "Held-out" in tip and "psnr_db" in tip


def test_denoise_streams_the_result_with_the_input_geometry(ldct_server, noisy_nrrd, tmp_path,
                                                            tokens):
    path, phantom = noisy_nrrd
    phases = []
    client = DenoiseClient(ldct_server, token=tokens["radiologist"])
    out = client.denoise("vagan", path, tmp_path / "out.nrrd",
                         {"strength": 1.0, "result_dtype": "int16"},
                         progress=lambda phase, fraction: phases.append(phase))
    assert client.ct_check["passed"] is True  # the server's CT-number check, for the panel
    assert "CT-number check passed" in client.ct_check["message"]
    result, source = read_volume(out), read_volume(path)
    assert result.same_geometry(source)
    liver = phantom.masks["liver"]
    assert (result.hu - phantom.volume.hu)[liver].std() < 0.9 * (
        source.hu - phantom.volume.hu)[liver].std()
    assert phases[0] == "upload" and "denoise" in phases and phases[-1] == "done"
    assert not list(tmp_path.glob("*.part"))


def test_a_job_runs_off_the_calling_thread_and_reports(ldct_server, noisy_nrrd, tmp_path, tokens):
    path, _ = noisy_nrrd
    client = DenoiseClient(ldct_server, token=tokens["radiologist"])
    job = DenoiseJob(client, "ldct-gauss", path, tmp_path / "o.nrrd")
    assert not job.done
    job.start()
    assert job.wait(300) and job.error is None
    assert job.result.exists() and job.status_text() == "Done (100 %)"


def test_wrong_port_is_unreachable():
    with pytest.raises(ServerUnreachable, match="Cannot reach .* Is the server running"):
        DenoiseClient(f"http://127.0.0.1:{free_port()}", retries=0).info()
    with pytest.raises(ServerUnreachable, match="not a server URL"):
        DenoiseClient("127.0.0.1:8000")


def test_a_plain_web_server_is_not_monai_label(fake_server):
    url, handler = fake_server
    with pytest.raises(NotMonaiLabel, match="not a MONAI Label server"):
        DenoiseClient(url).info()
    handler.routes = {"/info/": (200, b'{"name": "something else"}')}
    with pytest.raises(NotMonaiLabel, match="no model list"):
        DenoiseClient(url).info()


def test_only_denoisers_are_offered(fake_server):
    """A MONAI Label server's segmentation model is not a denoiser: it is not listed."""
    url, handler = fake_server
    handler.routes = {"/info/": (200, json.dumps({"models": {
        "spleen": {"type": "segmentation", "labels": ["spleen"], "description": "Spleen"},
        "m": {"type": "others", "description": "A denoiser", "ldct": {"version": "shipped"}},
    }}).encode())}
    models = DenoiseClient(url).models()
    assert [m.name for m in models] == ["m"] and models[0].card["version"] == "shipped"


def test_401_and_403_ask_for_credentials(fake_server):
    url, handler = fake_server
    for status in (401, 403):
        handler.routes = {"/info/": (status, b'{"detail": "Not authenticated"}')}
        with pytest.raises(AuthenticationFailed, match=f"HTTP {status}.*token"):
            DenoiseClient(url, token="wrong").info()


def test_5xx_is_retried_then_reported(fake_server):
    url, handler = fake_server
    handler.routes = {"/info/": (503, b'{"detail": "busy"}')}
    handler.hits.clear()
    with pytest.raises(ServerFailure, match="HTTP 503.*busy"):
        DenoiseClient(url, retries=2).info()
    assert handler.hits == ["/info/"] * 3  # the call and exactly two retries


def test_a_transient_5xx_is_retried_to_success(fake_server):
    """A server (or its proxy) that fails twice and then answers: the idempotent calls get
    the answer; a reader's submission is resent unchanged (the same submission id, so the
    server stores it once); a denoising (here a PACS write-back), not idempotent, is not
    resent."""
    url, handler = fake_server
    handler.routes = {
        "/info/": [(502, b'{"detail": "bad gateway"}'), (503, b'{"detail": "busy"}'),
                   (200, DENOISER_INFO)],
        "/study/s/readers/r1/items/i1": [(500, b'{"detail": "oops"}'),
                                         (200, b'{"acknowledged": true, "duplicate": false}')],
        "/infer/m": [(503, b'{"detail": "busy"}'), (200, b"{}")]}
    handler.held = ()
    info = DenoiseClient(url, retries=2).info()
    assert list(info["models"]) == ["m"] and handler.hits == ["/info/"] * 3
    body = {"submission_id": "sub-1", "scores": {"A": {"noise": 4}}, "choice": None}
    answer = StudyClient(url, retries=2).submit("s", "r1", "i1", body)
    assert answer == {"acknowledged": True, "duplicate": False}
    assert handler.hits[3:] == ["/study/s/readers/r1/items/i1"] * 2
    assert [json.loads(b) for b in handler.bodies] == [body, body]
    with pytest.raises(ServerFailure, match="HTTP 503"):
        DenoiseClient(url, retries=2).write_back("m", "series-1", {})
    assert [h.split("?")[0] for h in handler.hits[5:]] == ["/infer/m"]  # never started twice


def test_missing_model_and_rejected_input(ldct_server, tmp_path, tokens):
    client = DenoiseClient(ldct_server, token=tokens["radiologist"])
    picture = tmp_path / "picture.nrrd"
    import SimpleITK as sitk
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 64, 64), 500.0, np.float32)),
                    str(picture))
    with pytest.raises(ModelMissing, match="does not offer the model 'nope'"):
        client.denoise("nope", picture, tmp_path / "o.nrrd")
    with pytest.raises(RequestRejected, match="HTTP 422.*not a CT volume"):
        client.denoise("ldct-gauss", picture, tmp_path / "o.nrrd")
    assert not (tmp_path / "o.nrrd").exists()


def test_a_slow_server_times_out(fake_server, noisy_nrrd, tmp_path):
    url, handler = fake_server
    handler.routes = {"/info/": (200, DENOISER_INFO)}
    with pytest.raises(ServerTimeout, match="did not answer within 0.5 s") as raised:
        DenoiseClient(url, read_timeout=0.5).denoise("m", noisy_nrrd[0], tmp_path / "o.nrrd")
    assert "Device 'cuda'" in str(raised.value)  # what the panel offers, not a hidden setting
    assert "raise the timeout" not in str(raised.value)
    assert not (tmp_path / "o.nrrd").exists()


def test_cancel_ends_a_request_while_the_server_works(fake_server, noisy_nrrd, tmp_path):
    url, handler = fake_server
    handler.routes = {"/info/": (200, DENOISER_INFO)}
    waiting = threading.Event()
    job = DenoiseJob(DenoiseClient(url), "m", noisy_nrrd[0], tmp_path / "o.nrrd",
                     on_progress=lambda phase, _: phase == "denoise" and waiting.set())
    job.start()
    assert waiting.wait(30)  # uploaded; the server holds the request
    job.cancel()
    assert job.wait(30)  # ends long before the server would answer
    assert isinstance(job.error, Cancelled) and "unchanged" in str(job.error)
    assert not (tmp_path / "o.nrrd").exists() and not list(tmp_path.glob("*.part"))


def test_cancel_in_slicer_stops_the_servers_job(ldct_server, tokens, tmp_path):
    """Against the real server: Cancel closes the connection and the server's worker stops."""
    big = write_volume(make_phantom(size=512, slices=16, pixel_mm=0.7).volume,
                       tmp_path / "big.nrrd", dtype="int16")
    client = DenoiseClient(ldct_server, token=tokens["radiologist"])
    job = DenoiseJob(client, "vagan", big, tmp_path / "o.nrrd", {"ensemble": 8})
    job.start()
    auth = {"Authorization": f"Bearer {tokens['radiologist']}"}

    def state() -> str:
        answer = requests.get(f"{ldct_server}/jobs/{job.job_id}", headers=auth, timeout=30)
        return answer.json().get("state", "") if answer.status_code == 200 else ""

    deadline = time.monotonic() + 120
    while state() != "running":
        assert time.monotonic() < deadline, "the server never ran the job"
        time.sleep(0.05)  # polling the server's job state
    job.cancel()
    assert job.wait(30) and isinstance(job.error, Cancelled)
    deadline = time.monotonic() + 5
    while state() != "cancelled":
        assert time.monotonic() < deadline, "the server's worker kept computing"
        time.sleep(0.05)


def test_url_history_and_difference_window():
    history = UrlHistory(["http://a:1", "http://b:2"], size=3)
    history.add("http://b:2/")
    history.add("http://c:3")
    history.add("http://d:4")
    assert history.urls == ["http://d:4", "http://c:3", "http://b:2"]
    tokens = UrlHistory(["http://a:1", "http://b:2"],
                        tokens={"http://a:1": "ta", "http://b:2": "tb"})
    tokens.add("http://b:2/", "tb2")  # a new token for a server replaces the old one
    assert (tokens.token("http://a:1/"), tokens.token("http://b:2")) == ("ta", "tb2")
    assert tokens.token("http://other:1") == ""
    kept = UrlHistory(tokens.urls, size=1, tokens=tokens.tokens)  # the settings round trip
    assert kept.urls == ["http://b:2"] and kept.tokens == {"http://b:2": "tb2"}
    width, level = symmetric_window([-30.0, 10.0, 5.0, -2.0], percentile=100)
    assert (width, level) == (60.0, 0.0)
    assert symmetric_window([0.1, -0.2])[0] == 20.0  # never a window narrower than 20 HU
