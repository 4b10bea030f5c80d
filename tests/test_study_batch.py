"""`ldct study create --batch` on a local Ray (2 workers): the same study as without it, a bad
case failing with its reason and leaving no study, and a re-run denoising only what is left."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
import ray
import yaml
from conftest import orthanc_server
from dicomweb_client.api import DICOMwebClient

from ldct.batch.ledger import JobKey, Ledger
from ldct.cli import main
from ldct.io import read_volume, write_dicom_series, write_volume
from ldct.phantom import make_phantom
from ldct.study.definition import StudyDefinitionError, load, parse
from ldct.study.service import StudyError, StudyService

ASSIGNMENTS = ("SELECT reader, position, case_id, left_condition, right_condition FROM "
               "assignments ORDER BY reader, position")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (start-up costs seconds): 2 CPUs, small object store."""
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def _noisy(seed: int):
    p = make_phantom(size=64, slices=4, seed=seed)
    noise = np.random.default_rng(seed).normal(0, 40, p.volume.hu.shape).astype(np.float32)
    return p.volume.with_hu(p.volume.hu + noise)


@pytest.fixture(scope="module")
def definition(tmp_path_factory):
    """4 noisy phantom cases (3 files, 1 series of a real Orthanc) x (original, vagan at 0.8,
    ldct-nlm to 25 HU: reached at strengths near 0.4), pairs, 2 readers."""
    folder = tmp_path_factory.mktemp("cases")
    for k in range(3):
        write_volume(_noisy(k), folder / f"case{k}.nrrd")
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as url:
        files = write_dicom_series(_noisy(3), folder / "series", description="LD study case")
        datasets = [pydicom.dcmread(f) for f in files]
        DICOMwebClient(f"{url}/dicom-web").store_instances(datasets)
        series = {"url": f"{url}/dicom-web", "study": str(datasets[0].StudyInstanceUID),
                  "series": str(datasets[0].SeriesInstanceUID)}
        data = _study_data([{"id": f"c{k}", "image": f"case{k}.nrrd"} for k in range(3)]
                           + [{"id": "c3", "dicomweb": series}])
        (folder / "study.yaml").write_text(yaml.safe_dump(data))
        yield folder / "study.yaml"


def _study_data(cases: list[dict]) -> dict:
    return {"name": "Batch study", "seed": 11, "presentation": "pairs", "readers": ["r1", "r2"],
            "cases": cases,
            "conditions": [{"name": "original"},
                           {"name": "vagan", "model": "vagan", "strength": 0.8},
                           {"name": "nlm25", "model": "ldct-nlm", "target_noise": 25}],
            "criteria": [{"name": "noise", "question": "Noise",
                          "anchors": {1: "severe", 5: "none"}}]}


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def _study(root):
    """The study's volume per 'case/condition' and its readers' assignments."""
    db = sqlite3.connect(root / "batch-study" / "study.sqlite")
    files = json.loads(db.execute("SELECT value FROM meta WHERE key='files'").fetchone()[0])
    return {key: read_volume(path) for key, path in files.items()}, db.execute(
        ASSIGNMENTS).fetchall()


def test_a_bad_case_fails_with_its_reason_then_a_rerun_does_only_what_is_left(
        definition, ray_local, tmp_path, capsys):
    """Case c2 unreadable: no study, the other 6 volumes in the ledger; c2 repaired: the re-run
    denoises its 2 volumes, takes the 6 from the ledger's results, and the study equals, voxel
    for voxel and item for item, the one created in this process without --batch."""
    in_process = tmp_path / "in-process"
    StudyService(in_process).create(load(definition))
    bad = definition.parent / "case2.nrrd"
    good = bad.read_bytes()
    bad.write_text("not a volume")
    root = tmp_path / "batched"
    command = ["study", "create", str(definition), "--root", str(root), "--batch",
               "--workers", "2"]
    assert main(command) == 2
    said = _said(capsys)
    assert "2 of 8 study volumes failed, so the study was not created" in said
    for condition in ("vagan", "nlm25"):
        assert (f"case c2 / condition {condition}: CTInputError: <series>: cannot be read"
                in said)
    assert not any(f"case c{k}" in said for k in (0, 1, 3))
    assert not (root / "batch-study").exists()
    home = root / ".batch" / "batch-study"
    rows = Ledger(home / "work" / "ledger.sqlite").rows()
    assert sorted(r["state"] for r in rows) == ["done"] * 6 + ["failed"] * 2
    assert {r["source"].split(" (state ")[0] for r in rows if r["state"] == "failed"} == {
        str(bad.resolve())}
    assert {(r["model"], r["strength"], r["target_noise"]) for r in rows} == {
        ("vagan", 0.8, 0.0), ("ldct-nlm", 1.0, 25.0)}

    results = sorted((home / "work").glob("*/*.nrrd"))
    assert len(results) == 6 and all(p.is_file() for p in results)  # NRRD, the DICOM case's too
    # c0's vagan result, 7 HU brighter: what the re-run shows proves it was not recomputed
    [marked] = [r["derived"] for r in rows if r["model"] == "vagan"
                and r["source"].split(" (state ")[0].endswith("case0.nrrd")]
    marked = home / "work" / "vagan-strength-0.8" / marked
    write_volume(read_volume(marked).with_hu(read_volume(marked).hu + 7), marked)
    bad.write_bytes(good)
    audited = len((home / "audit.log").read_text().splitlines())
    assert main(command) == 0
    assert "batch: done 2, skipped 6, failed 0" in _said(capsys)
    rerun = (home / "audit.log").read_text().splitlines()[audited:]
    assert sum("done in an earlier run (ledger)" in line for line in rerun) == 6
    assert not (home / "work").exists()  # the study holds the volumes now

    expected, plans = _study(in_process)
    volumes, batched_plans = _study(root)
    assert batched_plans == plans and len(plans) == 2 * 4 * 2
    assert volumes.keys() == expected.keys() and len(volumes) == 12
    assert np.array_equal(volumes["c0/vagan"].hu, expected["c0/vagan"].hu + 7)
    for key, volume in volumes.items():
        assert np.array_equal(volume.hu, expected[key].hu + 7 * (key == "c0/vagan")), key
        assert volume.spacing == expected[key].spacing
    for k in range(4):  # and the models did something
        assert not np.array_equal(volumes[f"c{k}/vagan"].hu, volumes[f"c{k}/original"].hu)
        assert not np.array_equal(volumes[f"c{k}/nlm25"].hu, volumes[f"c{k}/vagan"].hu)


def test_batch_options_need_create_batch(definition, tmp_path, capsys):
    assert main(["study", "create", str(definition), "--root", str(tmp_path),
                 "--workers", "2"]) == 2
    assert "options of `ldct study create --batch`" in _said(capsys)
    assert main(["study", "create", str(definition), "--root", str(tmp_path), "--batch",
                 "--workers", "0"]) == 2
    assert "--workers and --cpus-per-worker take whole numbers >= 1" in _said(capsys)
    # a typo of 100000 workers would start that many model loads: refused at once
    for flag in ("--workers", "--cpus-per-worker"):
        assert main(["study", "create", str(definition), "--root", str(tmp_path), "--batch",
                     flag, "100000"]) == 2
        assert "(at most 256 workers of 256 cores each)" in _said(capsys)
    assert main(["batch", str(tmp_path), "--model", "vagan", "--out", str(tmp_path / "out"),
                 "--workers", "100000"]) == 2
    assert "got 100000 and 1" in _said(capsys)
    assert not (tmp_path / "batch-study").exists() and not (tmp_path / "out").exists()


def test_a_ledger_written_before_noise_targets_still_reads(tmp_path):
    """An `ldct batch` ledger of the schema without target_noise: its done rows still count."""
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE series (source TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT "
               "NULL, strength REAL NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL, "
               "derived TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', attempts "
               "INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL, PRIMARY KEY (source, model, "
               "version, strength, destination))")
    db.execute("INSERT INTO series VALUES ('1.2.3', 'vagan', 'baseline', 0.8, 'dir:/out', "
               "'done', '1.2.3', '', 1, 0)")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.state("1.2.3", JobKey("vagan", "baseline", 0.8, "dir:/out")) == "done"
    assert ledger.state("1.2.3", JobKey("vagan", "baseline", 0.8, "dir:/out", 12.0)) is None


def test_a_case_replaced_in_place_is_a_new_batch_item(tmp_path):
    """A failed run keeps its results for the re-run; a case file replaced meanwhile (same
    path, same shape, another patient) must not reuse the old one's result."""
    from ldct.study.batch import StudyBatchError, case_item, result_image

    path = write_volume(_noisy(1), tmp_path / "case.nrrd")
    first = case_item(str(path))
    assert case_item(str(path)) == first  # unchanged: the ledger's result is reused
    write_volume(_noisy(2), path)  # the same path and shape, other voxels
    again = case_item(str(path))
    assert (again.key, again.name) != (first.key, first.name) and again.path == first.path
    result = write_volume(make_phantom(size=32, slices=2).volume,
                          tmp_path / "work" / "vagan-strength-0.8" / "r.nrrd")
    with pytest.raises(StudyBatchError, match=f"delete {tmp_path / 'work'} and create"):
        result_image(read_volume(path), result)


@pytest.mark.parametrize("ref,words", [
    ({"url": "file:///etc/passwd"}, "is not an http(s) URL"),
    ({"url": "gopher://pacs/dicom-web"}, "is not an http(s) URL"),
    ({"url": "http:///dicom-web"}, "is not an http(s) URL"),  # no host
    ({"study": "1.2/../../studies/9.9"}, "dicomweb study '1.2/../../studies/9.9' is not a DICOM"),
    ({"series": "1.2.*"}, "dicomweb series '1.2.*' is not a DICOM UID"),
    ({"series": "1.2.3,1.2.4"}, "dicomweb series '1.2.3,1.2.4' is not a DICOM UID"),
    ({"series": "1." + "2" * 70}, "is not a DICOM UID (numbers joined by dots, at most 64"),
    ({"study": {"nested": ["1.2"]}}, "dicomweb study {'nested': ['1.2']} is not a DICOM")])
def test_a_study_dicomweb_case_pointing_elsewhere_is_refused(ref, words, tmp_path):
    """A study YAML names a URL and two UIDs that go into WADO-RS paths: another scheme, a
    path out of the series, a wildcard, a list or a nested value never reaches the network."""
    case = {"id": "c", "dicomweb": {"url": "http://pacs:8042/dicom-web", "study": "1.2",
                                    "series": "1.2.3", **ref}}
    with pytest.raises(StudyDefinitionError, match=re.escape(words)):
        parse(_study_data([case]), tmp_path)


def test_a_study_case_url_never_gets_the_sites_pacs_credentials(monkeypatch, tmp_path):
    """The site's PACS login goes only where the operator pointed `ldct batch`; a URL from a
    study YAML (someone else's file) is fetched without it. A real HTTP server records the
    Authorization header each request carried (it answers 404: no such series)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ldct.batch import dicomweb
    from ldct.pacs import PacsError
    from ldct.study.service import _dicomweb_volume

    seen: list[str | None] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    monkeypatch.setenv(dicomweb.USER_ENV, "site")
    monkeypatch.setenv(dicomweb.PASSWORD_ENV, "secret")
    try:
        with pytest.raises(PacsError):
            _dicomweb_volume({"url": url, "study": "1.2.3", "series": "1.2.3.4"})
        assert seen and all(header is None for header in seen), seen
        seen.clear()
        with pytest.raises(PacsError):  # the operator's own PACS: logged in
            dicomweb.fetch_series(dicomweb.client(url), "1.2.3", "1.2.3.4", Path("/nonexistent"))
        assert seen and all(header and header.startswith("Basic ") for header in seen), seen
        # a study whose DICOMweb case cannot be fetched: a study error naming the case
        case = {"id": "c9", "dicomweb": {"url": url, "study": "1.2.3", "series": "1.2.3.4"}}
        with pytest.raises(StudyError, match="case c9: the PACS refused") as refused:
            StudyService(tmp_path / "studies").create(parse(_study_data([case]), tmp_path))
        assert refused.value.status == 422
    finally:
        server.shutdown()
