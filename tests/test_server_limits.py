"""A server that stays responsive and bounded, against a real `ldct serve` on 127.0.0.1:
every bad input a 4xx naming it, limits checked before decoding, nothing left on disk, jobs
that can be cancelled, a full queue answered 503, study creation that survives SIGKILL."""

from __future__ import annotations

import gzip
import io
import os
import signal
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from conftest import bearer, free_port, running, serve_command

from ldct.auth import TokenStore
from ldct.io import write_dicom_series, write_volume
from ldct.phantom import make_phantom
from ldct.processes import rss_mb, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokens):
    """A server with its own TMPDIR, a queue of one and a 64 MiB upload limit."""
    root = tmp_path_factory.mktemp("limits")
    studies = root / "studies"
    studies.mkdir()
    write_volume(make_phantom(size=128, slices=2).volume, studies / "case0.nrrd", dtype="int16")
    big = make_phantom(size=512, slices=24, pixel_mm=0.7).volume  # a long inference on a CPU
    write_volume(big, studies / "big.nrrd", dtype="int16")
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"TMPDIR": str(tmpdir), "LDCT_QUEUE_LIMIT": "1",
           "LDCT_MAX_UPLOAD_BYTES": str(64 << 20)}
    with running(serve_command(str(studies), port, "--models", "vagan,ldct-gauss",
                               "--study-root", str(root / "reader-studies")),
                 f"{url}/health", root / "server.log", env=env) as proc:
        yield {"url": url, "tmp": tmpdir, "pid": proc.pid, "root": root,
               "auth": bearer(tokens["radiologist"])}


def _nrrd_bytes(volume, folder: Path) -> bytes:
    return write_volume(volume, folder / f"{uuid.uuid4().hex}.nrrd", dtype="int16").read_bytes()


def _huge_header_nrrd() -> bytes:
    """A gzip NRRD whose header claims 100000^3 voxels (a few hundred bytes of body)."""
    header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 100000\n"
              "spacings: 1 1 1\nencoding: gzip\nendian: little\n\n").encode()
    return header + gzip.compress(b"\0" * 4096)


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice.dcm", b"\0" * (200 << 20))  # 200 MB of zeros, ~200 KB packed
    return buffer.getvalue()


def _mixed_orientation_zip(folder: Path) -> bytes:
    volume = make_phantom(size=128, slices=4).volume
    files = write_dicom_series(volume, folder / "series")
    import pydicom

    tilted = pydicom.dcmread(files[2])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.866025, -0.5]  # tilted 30 degrees
    tilted.save_as(files[2])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for f in files:
            archive.write(f, f.name)
    return buffer.getvalue(), files[2].name


def _post(server, model="ldct-gauss", params=None, file=None, image=None, timeout=120):
    data = {} if params is None else {"params": params}
    files = None if file is None else {"file": file}
    query = {"output": "json", **({"image": image} if image else {})}
    return requests.post(f"{server['url']}/infer/{model}", params=query, data=data,
                         files=files, headers=server["auth"], timeout=timeout)


def test_every_bad_input_gets_its_4xx_and_says_what_was_wrong(server, tmp_path):
    not_ct = _nrrd_bytes(make_phantom(size=128, slices=2).volume.with_hu(
        np.full((2, 128, 128), 500.0, np.float32)), tmp_path)
    mixed, tilted_name = _mixed_orientation_zip(tmp_path)
    cases = [
        (dict(model="nope", image="case0"), 404, "no model 'nope'"),
        (dict(params='{"strength": "abc"}', image="case0"), 422, "strength must be a number"),
        (dict(params="{not json", image="case0"), 422, "params is not valid JSON"),
        (dict(params="[1, 2]", image="case0"), 422, "params must be a JSON object"),
        (dict(params='{"device": "tpu"}', image="case0"), 422, "device must be one of"),
        (dict(params='{"ensemble": 2.7}', image="case0"), 422, "ensemble must be a whole"),
        (dict(params='{"result_dtype": "float64"}', image="case0"), 422, "result_dtype must"),
        (dict(params='{"strenght": 0.5}', image="case0"), 422, "unknown parameter(s) strenght"),
        (dict(), 422, "nothing to denoise"),
        (dict(image="no-such-image"), 404, "no image 'no-such-image'"),
        (dict(file=("scan.nrrd", b"")), 422, "'scan.nrrd' is empty"),
        (dict(file=("mine.nrrd", not_ct)), 422, "mine.nrrd: values span"),
        (dict(file=("huge.nrrd", _huge_header_nrrd())), 422, "exceed the limit"),
        (dict(file=("bomb.zip", _zip_bomb())), 422, "zip bomb"),
        (dict(file=("tilted.zip", mixed)), 422, f"more than one orientation: {tilted_name}"),
        (dict(file=("large.nrrd", b"\0" * (65 << 20))), 413, ""),
    ]
    for kwargs, status, message in cases:
        answer = _post(server, **kwargs)
        assert answer.status_code == status, (kwargs.get("params"), answer.text[:300])
        assert message in answer.text, answer.text[:300]
        assert "ldct-upload" not in answer.text  # the user's file name, not the server's


def test_a_huge_header_is_refused_before_decoding(server):
    before = rss_mb(server["pid"])
    for _ in range(3):
        answer = _post(server, file=("huge.nrrd", _huge_header_nrrd()))
        assert answer.status_code == 422
    assert rss_mb(server["pid"]) - before < 100


def test_rejected_uploads_leave_nothing_behind(server):
    before = sorted(p.name for p in server["tmp"].iterdir())
    bad = [("a.nrrd", b"not a volume at all" * 1000), ("b.nrrd", b""),
           ("c.zip", _zip_bomb()), ("d.nrrd", b"\x01" * (1 << 20))]
    for k in range(100):
        name, content = bad[k % len(bad)]
        assert _post(server, file=(name, content)).status_code == 422
    assert sorted(p.name for p in server["tmp"].iterdir()) == before


def test_cancel_stops_a_running_job_and_the_server_answers_meanwhile(server):
    url, auth = server["url"], server["auth"]
    job = uuid.uuid4().hex
    answers = {}
    request = threading.Thread(target=lambda: answers.update(done=requests.post(
        f"{url}/infer/vagan", params={"image": "big", "job": job, "output": "json"},
        data={"params": '{"ensemble": 8}'}, headers=auth, timeout=600)))
    request.start()
    wait_for(lambda: requests.get(f"{url}/jobs/{job}", headers=auth,
                                   timeout=30).json().get("state") == "running", "job running")
    started = time.monotonic()
    info = requests.get(f"{url}/info/", headers=auth, timeout=30)
    assert info.status_code == 200 and time.monotonic() - started < 5  # not queued behind it
    busy = _post(server, image="case0")  # the queue of one is full
    assert busy.status_code == 503 and busy.headers["retry-after"].isdigit()
    colleague = TokenStore().add(f"colleague-{uuid.uuid4().hex[:8]}", "radiologist")
    other = requests.get(f"{url}/jobs/{job}", headers=bearer(colleague), timeout=30)
    assert other.status_code == 404  # another radiologist's job is not theirs to see
    cancelled_at = time.monotonic()
    assert requests.delete(f"{url}/jobs/{job}", headers=auth, timeout=30).status_code == 200
    ended = wait_for(lambda: (state := requests.get(f"{url}/jobs/{job}", headers=auth,
                                                     timeout=30).json())["state"] == "cancelled"
                      and state, "cancelled")
    # within a network pass or two (a batch of views), not at the end of the job: seconds on a
    # quiet CPU, more when the machine is shared, so the job's own progress is the measure
    assert ended["progress"] < 0.9 and time.monotonic() - cancelled_at < 15.0
    request.join(60)
    assert answers["done"].status_code == 409 and "cancelled" in answers["done"].text
    assert _post(server, image="case0").status_code == 200  # the worker is free again


def test_a_client_that_goes_away_cancels_its_job(server):
    import socket

    url, auth = server["url"], server["auth"]
    job = uuid.uuid4().hex
    port = int(url.rsplit(":", 1)[1])
    body = (b'--B\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
            b'{"ensemble": 8}\r\n--B--\r\n')
    head = (f"POST /infer/vagan?image=big&job={job}&output=json HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {auth['Authorization']}\r\nContent-Type: multipart/form-data; "
            f"boundary=B\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(head + body)
        wait_for(lambda: requests.get(f"{url}/jobs/{job}", headers=auth,
                                       timeout=30).json().get("state") == "running", "running")
    wait_for(lambda: requests.get(f"{url}/jobs/{job}", headers=auth,
                                   timeout=30).json()["state"] == "cancelled", "cancelled", 5)


def test_study_creation_survives_sigkill(tmp_path, tokens):
    studies = tmp_path / "studies"
    studies.mkdir()
    for k in range(3):
        write_volume(make_phantom(size=256, slices=6, seed=k).volume,
                     studies / f"case{k}.nrrd", dtype="int16")
    root = tmp_path / "reader-studies"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    coordinator = bearer(tokens["coordinator"])
    command = serve_command(str(studies), port, "--models", "vagan", "--study-root", str(root))
    definition = {"name": "Killed", "seed": 1, "presentation": "pairs", "readers": ["r1"],
                  "cases": [{"id": f"c{k}", "datastore": f"case{k}"} for k in range(3)],
                  "conditions": [{"name": "original"}, {"name": "v", "model": "vagan"},
                                 {"name": "w", "model": "vagan", "strength": 0.5},
                                 {"name": "x", "model": "vagan", "strength": 0.8}],
                  "criteria": [{"name": "q", "question": "Q", "anchors": {1: "a", 5: "b"}}]}

    def status():
        return requests.get(f"{url}/study/killed/status", headers=coordinator, timeout=30).json()

    with running(command, f"{url}/health", tmp_path / "first.log") as proc:
        created = requests.post(f"{url}/study/", data=yaml.safe_dump(definition), timeout=30,
                                headers={"Content-Type": "text/plain", **coordinator}).json()
        wait_for(lambda: status()["created"] >= 2, "two volumes made")
        assert status()["state"] == "creating"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with running(command, f"{url}/health", tmp_path / "second.log"):
        wait_for(lambda: status()["state"] == "open", "the study resumed", 180)
        reader = bearer(created["reader_tokens"]["r1"])  # the tokens made before still work
        item = requests.get(f"{url}/study/killed/readers/r1/next", headers=reader,
                            timeout=30).json()
        assert item["total"] == 9 and not item["finished"]
        volumes = sorted((root / "killed" / "volumes").iterdir())
        assert len(volumes) == 12  # 3 cases x 4 conditions, none left over from the first run
