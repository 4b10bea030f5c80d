"""An upload is only its own bytes, and memory is bounded before anything is decoded: probes of
issue 32 (findings 1-4) against a real `ldct serve` on 127.0.0.1."""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from conftest import bearer, free_port, running, serve_command

from ldct.auth import TokenStore, auth_file
from ldct.io import CTInputError, read_volume, write_dicom_series, write_volume
from ldct.phantom import make_phantom
from ldct.processes import rss_mb, wait_for

NOT_ONE_FILE = "send the volume as one file"
DECODE_TIMEOUT_S = 15  # the test server's time box for one decode (a phantom takes ~1 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokens):
    """A server whose datastore holds a phantom and a FIFO (a reader of it blocks in open())."""
    root = tmp_path_factory.mktemp("uploads")
    studies = root / "studies"
    studies.mkdir()
    write_volume(make_phantom(size=128, slices=2).volume, studies / "case0.nrrd", dtype="int16")
    os.mkfifo(studies / "stuck.nrrd")  # like a hung network mount: open() never returns
    secret = root / "secret.raw"  # a server file an upload must never reach
    secret.write_bytes(np.full(64 * 64 * 4, 1234, np.int16).tobytes())
    os.mkfifo(root / "fifo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(str(studies), port, "--models", "ldct-gauss"), f"{url}/health",
                 root / "server.log", env={"TMPDIR": str(root),
                                           "LDCT_DECODE_TIMEOUT_S": str(DECODE_TIMEOUT_S)}
                 ) as proc:
        yield {"url": url, "pid": proc.pid, "root": root, "secret": secret,
               "fifo": root / "fifo", "auth": bearer(tokens["radiologist"])}


def _post(server, name, content, timeout=60, **query):
    return requests.post(f"{server['url']}/infer/ldct-gauss",
                         params={"output": "json", **query}, files={"file": (name, content)},
                         headers=server["auth"], timeout=timeout)


def _nrrd_header(target: str, skip: int = 0) -> bytes:
    """A detached NRRD header naming ``target`` (as the probe sent it, with a byte skip)."""
    return (f"NRRD0004\ntype: short\ndimension: 3\nsizes: 64 64 4\nencoding: raw\n"
            f"endian: little\nbyte skip: {skip}\ndata file: {target}\n").encode()


def _mha_header(target: str) -> bytes:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = 64 64 4\nElementType = MET_SHORT\n"
            f"ElementSpacing = 1 1 1\nElementDataFile = {target}\n").encode()


def _nifti_pair_header() -> bytes:
    """The .hdr of a NIfTI-1 pair (magic 'ni1'): its voxels live in a .img beside it."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 64, 64, 4, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)
    header[344:348] = b"ni1\0"
    return bytes(header)


def _nifti_single(dims: tuple[int, int, int], offset: float, voxels: int = 64 * 64 * 4) -> bytes:
    """A one-file NIfTI-1 (magic 'n+1') of int16 voxels declaring ``dims`` and ``offset``."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)
    struct.pack_into("<f", header, 108, offset)
    header[344:348] = b"n+1\0"
    return bytes(header) + bytes(2 * voxels)


def test_a_nifti_header_with_impossible_sizes_or_offset_is_refused(server):
    """Signed sizes below 1 (their product would pass every limit), and a voxel offset that is
    not a number, inside the header or past the end of the file: a 422 each, never a 500."""
    probes = {"negative size": _nifti_single((-1, 64, 4), 352.0),
              "zero size": _nifti_single((64, 0, 4), 352.0),
              "offset NaN": _nifti_single((64, 64, 4), float("nan")),
              "offset inside the header": _nifti_single((64, 64, 4), 0.0),
              "offset past the end": _nifti_single((64, 64, 4), 1e9)}
    for what, content in probes.items():
        answer = _post(server, "a.nii", content)
        assert answer.status_code == 422, (what, answer.status_code, answer.text[:300])
        assert "NIfTI" in answer.text or "at least 1" in answer.text, (what, answer.text[:300])
    assert _post(server, "ok.nrrd", _phantom_nrrd(server)).status_code == 200  # served still


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("slice1.dcm")
        link.create_system = 3
        link.external_attr = 0o120777 << 16  # a symbolic link to a server file
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def test_a_header_naming_a_server_file_is_refused_and_nothing_of_it_comes_back(server):
    secret = str(server["secret"])
    missing = str(server["root"] / "no-such-file.raw")
    probes = {  # name: (upload name, content)
        "nrrd, absolute": ("a.nrrd", _nrrd_header(secret)),
        "nrrd, missing file": ("a.nrrd", _nrrd_header(missing)),
        "nrrd, relative": ("a.nrrd", _nrrd_header("../secret.raw", skip=16)),
        "nrrd, token file": ("a.nrrd", _nrrd_header(str(auth_file()))),
        "nrrd, environ": ("a.nrrd", _nrrd_header("/proc/self/environ")),
        "nhdr": ("a.nhdr", _nrrd_header(secret).replace(b"data file", b"datafile")),
        "mha": ("a.mha", _mha_header(secret)),
        "mhd": ("a.mhd", _mha_header(missing)),
        "mhd named .nii": ("a.nii", _mha_header(secret)),
        "nifti pair": ("a.hdr", _nifti_pair_header()),
        "zip symlink": ("series.zip", _symlink_zip()),
    }
    answers = {what: _post(server, name, content) for what, (name, content) in probes.items()}
    for what, answer in answers.items():
        assert answer.status_code == 422, (what, answer.text[:300])
        text = answer.text
        assert "1234" not in text and "root:" not in text and "values span" not in text, what
        assert secret not in text and "no-such-file" not in text, (what, text[:300])
        if what == "zip symlink":
            assert "symbolic links" in text and "zip the DICOM files themselves" in text
        else:
            assert NOT_ONE_FILE in text, (what, text[:300])
    # no existence oracle: a present and a missing file get the same answer
    assert answers["nrrd, absolute"].text == answers["nrrd, missing file"].text
    assert _post(server, "ok.nrrd", _phantom_nrrd(server)).status_code == 200  # served still


def _phantom_nrrd(server) -> bytes:
    path = server["root"] / f"{uuid.uuid4().hex}.nrrd"
    return write_volume(make_phantom(size=64, slices=2).volume, path, dtype="int16").read_bytes()


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/proc/self/fd/2"])
def test_a_header_naming_a_fifo_or_device_is_refused_at_once(server, target):
    target = str(server["fifo"]) if target == "fifo" else target
    started = time.monotonic()
    answer = _post(server, "f.nrrd", _nrrd_header(target), timeout=30)
    assert answer.status_code == 422 and NOT_ONE_FILE in answer.text
    assert time.monotonic() - started < 10
    assert _post(server, "ok.nrrd", _phantom_nrrd(server)).status_code == 200


def _state(server, job: str) -> str:
    """The job's state ('' while the server does not know it yet: 404)."""
    return requests.get(f"{server['url']}/jobs/{job}", headers=server["auth"],
                        timeout=30).json().get("state", "")


def test_delete_ends_a_job_blocked_reading_and_one_waiting_in_the_queue(server):
    url, auth = server["url"], server["auth"]
    blocked, queued = uuid.uuid4().hex, uuid.uuid4().hex
    answers = {}

    def call(job, image):
        answers[job] = requests.post(f"{url}/infer/ldct-gauss", headers=auth, timeout=120,
                                     params={"image": image, "job": job, "output": "json"})

    threads = [threading.Thread(target=call, args=(blocked, "stuck"))]
    threads[0].start()
    wait_for(lambda: _state(server, blocked) == "running", "the blocked job running")
    threads.append(threading.Thread(target=call, args=(queued, "case0")))
    threads[1].start()
    wait_for(lambda: _state(server, queued) == "queued", "the second job queued")
    for job in (queued, blocked):
        assert requests.delete(f"{url}/jobs/{job}", headers=auth, timeout=30).status_code == 200
        wait_for(lambda: _state(server, job) == "cancelled", f"{job} cancelled", 15)
    for thread in threads:
        thread.join(30)
    assert answers[blocked].status_code == 409 and "cancelled" in answers[blocked].text
    assert answers[queued].status_code == 409 and "cancelled" in answers[queued].text
    assert _post(server, "ok.nrrd", _phantom_nrrd(server)).status_code == 200  # worker free


def test_a_decode_that_never_ends_is_stopped_by_its_time_box(server):
    answer = requests.post(f"{server['url']}/infer/ldct-gauss", headers=server["auth"],
                           params={"image": "stuck", "output": "json"}, timeout=120)
    assert answer.status_code == 422, answer.text[:300]
    assert f"took more than {DECODE_TIMEOUT_S} s and was stopped" in answer.text
    assert str(server["root"]) not in answer.text  # the datastore's folder is not shown
    assert _post(server, "ok.nrrd", _phantom_nrrd(server)).status_code == 200  # worker free


def _zeros_deflated(count: int, gzip_wrapper: bool = False) -> bytes:
    """``count`` zero bytes deflated (raw deflate, or gzip), without holding them in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if gzip_wrapper
                              else -zlib.MAX_WBITS)
    return _zeros_deflated_tail(packer, count)


@functools.cache  # made once: deflating 512 MB of zeros takes seconds
def _deflated_dicom_bomb(rows: int = 16384) -> bytes:
    """A deflated-syntax CT file declaring one rows x rows slice (the probe's 0.5 MB bomb)."""
    ds = pydicom.dcmread(write_dicom_series(make_phantom(size=32, slices=1).volume,
                                            Path(os.environ.get("TMPDIR", "/tmp")) /
                                            uuid.uuid4().hex)[0])
    del ds.PixelData
    ds.Rows = ds.Columns = rows
    body = pydicom.filebase.DicomFileLike(io.BytesIO())
    body.is_little_endian, body.is_implicit_VR = True, False  # the deflated syntax's encoding
    pydicom.filewriter.write_dataset(body, ds)
    pixels_tag = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, rows * rows * 2)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = packer.compress(body.parent.getvalue() + pixels_tag)
    stream = head + _zeros_deflated_tail(packer, rows * rows * 2)
    meta = ds.file_meta
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(out), meta)
    return out.getvalue() + stream


def _zeros_deflated_tail(packer, count: int) -> bytes:
    """``count`` zero bytes through ``packer``, 16 MiB at a time, and its end."""
    block = bytes(16 << 20)
    parts = [packer.compress(block) for _ in range(count // len(block))]
    return b"".join(parts) + packer.compress(bytes(count % len(block))) + packer.flush()


@functools.cache
def _gzip_nrrd_bomb() -> bytes:
    """The probe's 522 KB gzip NRRD claiming 512x512x1024 int16 voxels."""
    header = (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 1024\nspacings: 1 1 1\n"
              b"encoding: gzip\nendian: little\n\n")
    return header + _zeros_deflated(512 * 512 * 1024 * 2, gzip_wrapper=True)


def test_deflated_dicom_and_gzip_nrrd_bombs_are_refused_in_bounded_memory(server):
    bombs = {"bomb.dcm": _deflated_dicom_bomb(), "bomb.nrrd": _gzip_nrrd_bomb()}
    assert all(len(b) < 1 << 20 for b in bombs.values())  # each well under a megabyte
    before = rss_mb(server["pid"])
    for name, content in bombs.items():
        for _ in range(2):
            answer = _post(server, name, content)
            assert answer.status_code == 422, answer.text[:300]
            assert "compression bomb" in answer.text and name in answer.text, answer.text[:300]
    assert rss_mb(server["pid"]) - before < 100
    assert not list(server["root"].glob("ldct-upload-*"))  # nothing left behind


def test_standard_single_file_volumes_are_still_served(server, tmp_path):
    volume = make_phantom(size=64, slices=3).volume
    files = write_dicom_series(volume, tmp_path / "series")
    deflated = pydicom.dcmread(files[0])
    deflated.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", write_like_original=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed:
        for f in files:
            packed.write(f, f.name)
    uploads = {"v.nrrd": write_volume(volume, tmp_path / "v.nrrd").read_bytes(),
               "v.nii.gz": write_volume(volume, tmp_path / "v.nii.gz").read_bytes(),
               "v.nii": write_volume(volume, tmp_path / "v.nii").read_bytes(),
               "v.mha": write_volume(volume, tmp_path / "v.mha", compress=False).read_bytes(),
               "series.zip": archive.getvalue(),
               "deflated.dcm": (tmp_path / "deflated.dcm").read_bytes()}
    for name, content in uploads.items():
        answer = _post(server, name, content)
        assert answer.status_code == 200, (name, answer.text[:300])
        assert answer.json()["shape"] == ([1, 64, 64] if name == "deflated.dcm" else [3, 64, 64])


def test_gzip_streams_are_bounded_by_the_header_not_trusted(server):
    """A .nii.gz whose header declares more than its gzip can hold is refused unread."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 512, 512, 1024, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    answer = _post(server, "big.nii.gz", gzip.compress(bytes(header) + bytes(1 << 20)))
    assert answer.status_code == 422 and "compression bomb" in answer.text, answer.text[:300]


def test_a_job_id_of_another_user_tells_nothing(server):
    colleague = bearer(TokenStore().add(f"colleague-{uuid.uuid4().hex[:8]}", "radiologist"))
    job = uuid.uuid4().hex
    for auth in (server["auth"], colleague):  # the same id, two owners: each their own job
        answer = requests.post(f"{server['url']}/infer/ldct-gauss", headers=auth, timeout=120,
                               params={"image": "case0", "job": job, "output": "json"})
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["job"] == job
    again = requests.post(f"{server['url']}/infer/ldct-gauss", headers=colleague, timeout=120,
                          params={"image": "case0", "job": job, "output": "json"})
    assert again.status_code == 409 and "you have a job" in again.text  # only one's own


def test_a_deflated_bomb_inside_a_zipped_series_is_refused_by_the_reader(tmp_path):
    """The zip packs the bomb 1:1 (its own ratio check passes); reading the series inflates
    each deflated file to disk, bounded (main inflated it whole in memory)."""
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("IM00001.dcm", _deflated_dicom_bomb())
    with pytest.raises(CTInputError, match="compression bomb"):
        read_volume(archive)


def test_a_huge_header_value_is_shown_clipped_with_its_length(tmp_path):
    """An NRRD header line of 500 x's is named by its first 60 characters and its length,
    never whole (the same clip as the study definition's messages)."""
    upload = tmp_path / "upload"
    upload.write_bytes(b"NRRD0004\n" + b"x" * 500 + b"\n\n")
    from ldct.server.uploads import check_upload

    with pytest.raises(CTInputError) as caught:
        check_upload(upload, "upload.nrrd")
    assert f"{'x' * 60}... (500 characters)" in str(caught.value)
    assert "x" * 61 not in str(caught.value)
