"""`ldct batch` on a local Ray (2 workers) against a real Orthanc: a worklist denoised and
written back, a worker SIGKILLed mid-run, re-runs that skip, a bad series failing alone."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pydicom
import pytest
import ray
from conftest import orthanc_server
from dicomweb_client.api import DICOMwebClient

from ldct.batch import worklist
from ldct.batch.ledger import Ledger
from ldct.batch.run import run_batch
from ldct.batch.workers import Job, model_version
from ldct.cli import main
from ldct.io import read_volume, write_dicom_series, write_volume
from ldct.phantom import make_phantom

GOOD = 7  # series of the worklist that denoise
STRENGTH = 0.8


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module (start-up costs seconds): 2 CPUs, small object store."""
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _noisy(seed: int):
    p = make_phantom(size=64, slices=4, seed=seed)
    noise = np.random.default_rng(seed).normal(0, 40, p.volume.hu.shape).astype(np.float32)
    return p, p.volume.with_hu(p.volume.hu + noise)


def _store(pacs: str, volume, folder, description: str, study_date: str,
           same_position: bool = False) -> pydicom.Dataset:
    files = write_dicom_series(volume, folder, description=description)
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ds.StudyDate = study_date
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # as a scanner writes it
        if same_position:  # every slice at one place: not a volume
            ds.ImagePositionPatient = datasets[0].ImagePositionPatient
    DICOMwebClient(f"{pacs}/dicom-web").store_instances(datasets)
    return datasets[0]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """A fresh Orthanc holding the worklist: 7 good low-dose series of January 2026, one bad
    one (all slices at one position), one of February and one other description (not asked
    for). Yields (url, {series uid: (header, phantom)}, bad uid)."""
    root = tmp_path_factory.mktemp("batch-orthanc")
    with orthanc_server(root) as url:
        good = {}
        for k in range(GOOD):
            phantom, noisy = _noisy(k)
            ds = _store(url, noisy, root / f"s{k}", f"LD abdomen {k}", f"202601{k + 10:02d}")
            good[str(ds.SeriesInstanceUID)] = (ds, phantom)
        _, noisy = _noisy(20)
        bad = _store(url, noisy, root / "bad", "LD abdomen bad", "20260120", same_position=True)
        _store(url, noisy, root / "feb", "LD abdomen feb", "20260210")
        _store(url, noisy, root / "nd", "ND abdomen", "20260115")
        yield url, good, str(bad.SeriesInstanceUID)


def _job(url: str) -> Job:
    return Job("vagan", model_version("vagan"), STRENGTH, source_pacs=url, write_pacs=url)


def _series(url: str) -> dict[str, pydicom.Dataset]:
    found = DICOMwebClient(f"{url}/dicom-web").search_for_series(
        fields=["SeriesDescription", "StudyInstanceUID"])
    return {str(ds.SeriesInstanceUID): ds for ds in map(pydicom.Dataset.from_json, found)}


def _query(url: str, exclude=frozenset()):
    return worklist.from_query(f"{url}/dicom-web", "20260101-20260131", "LD*", exclude)


@pytest.fixture(scope="module")
def first_run(pacs, ray_address, tmp_path_factory):
    """The worklist run once, one worker SIGKILLed as soon as the first series is done."""
    url, _, _ = pacs
    home = tmp_path_factory.mktemp("ledger")
    ledger = Ledger(home / "ledger.sqlite")
    killed: list[int] = []
    outcomes = []

    def kill_first_worker(outcome) -> None:
        outcomes.append(outcome)
        if not killed and outcome.status == "done":
            killed.append(int(outcome.worker.split("@")[0]))
            os.kill(killed[0], signal.SIGKILL)

    job = _job(f"{url}/dicom-web")
    summary = run_batch(_query(url), job, ledger, home / "audit.log", workers=2,
                        progress=False, on_outcome=kill_first_worker)
    return summary, outcomes, killed[0], ledger, home


def test_the_worklist_is_the_query(pacs):
    url, good, bad = pacs
    assert {item.series for item in _query(url)} == set(good) | {bad}


def test_every_series_is_written_back_exactly_once_after_a_worker_is_killed(pacs, first_run,
                                                                           tmp_path):
    url, good, bad = pacs
    summary, outcomes, killed, _, _ = first_run
    assert (summary.done, summary.failed) == (GOOD, 1)  # nothing lost, nothing doubled
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # the worker really died ...
    after_kill = [o.worker for o in outcomes[1:] if o.status == "done"]
    assert after_kill and any(not w.startswith(f"{killed}@") for w in after_kill)
    stored = _series(url)
    derived = {uid: ds for uid, ds in stored.items() if uid not in good and "denoised" in
               str(ds.get("SeriesDescription", ""))}
    assert len(derived) == GOOD
    web = DICOMwebClient(f"{url}/dicom-web")
    for source_uid, (source, phantom) in good.items():
        k = str(source.SeriesDescription).split()[-1]
        mine = [uid for uid, ds in derived.items()
                if ds.SeriesDescription == f"LD abdomen {k} denoised (vagan shipped, strength 0.8)"]
        assert len(mine) == 1, (k, mine)  # exactly one derived series per source
        instances = web.retrieve_series(str(source.StudyInstanceUID), mine[0])
        assert len(instances) == 4
        assert list(instances[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert instances[0].PatientID == source.PatientID
        result = _read(instances, tmp_path / mine[0])
        noisy = _read(web.retrieve_series(str(source.StudyInstanceUID),
                                          str(source.SeriesInstanceUID)), tmp_path / k)
        liver = phantom.masks["liver"]
        assert np.std((result.hu - phantom.volume.hu)[liver]) < 0.9 * np.std(
            (noisy.hu - phantom.volume.hu)[liver])  # it was denoised, not copied


def _read(instances: list[pydicom.Dataset], folder):
    """Instances retrieved from the PACS, saved and read as a volume."""
    folder.mkdir()
    for n, ds in enumerate(instances):
        ds.save_as(folder / f"{n}.dcm", write_like_original=False)
    return read_volume(folder)


def test_a_bad_series_fails_alone_with_its_reason(pacs, first_run):
    _, _, bad = pacs
    summary, _, _, ledger, home = first_run
    [failure] = summary.failures
    assert failure.series == bad
    assert "several slices share one position" in failure.reason
    assert "/tmp" not in failure.reason and "ldct-batch-" not in failure.reason  # no paths
    audit = (home / "audit.log").read_text().splitlines()
    assert len(audit) == GOOD + 1
    [line] = [line for line in audit if "status=failed" in line]
    assert f"series={bad}" in line and "share one position" in line
    assert all("PatientName" not in line and "Anonymous" not in line for line in audit)


def test_a_second_run_skips_everything(pacs, first_run, ray_address, ldct_command):
    """The CLI, joining the module's Ray with --address, with the first run's ledger."""
    url, _, bad = pacs
    _, _, _, ledger, home = first_run
    before = _series(url)
    audited = len((home / "audit.log").read_text().splitlines())
    ledger.close()
    out = subprocess.run(
        [*ldct_command, "batch", f"{url}/dicom-web", "--model", "vagan", "--write-back",
         "--strength", "0.8", "--workers", "2", "--address", ray_address,
         "--study-date", "20260101-20260131", "--description", "LD*",
         "--ledger", str(home / "ledger.sqlite")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("done 0, skipped 7, failed 1"), out.stdout[-2000:]
    assert _series(url).keys() == before.keys()  # nothing written
    lines = (home / "audit.log").read_text().splitlines()[audited:]
    assert sum("done in an earlier run (ledger)" in line for line in lines) == GOOD
    assert sum(f"series={bad} " in line and "status=failed" in line for line in lines) == 1


def test_a_lost_ledger_still_writes_nothing_twice(pacs, first_run, ray_address, tmp_path):
    """Without the ledger the PACS itself says what is done: each source's derived series is
    found (and the derived series, matched by the query too, are not taken for sources)."""
    url, good, _ = pacs
    before = _series(url)
    outcomes = []
    summary = run_batch(_query(url), _job(f"{url}/dicom-web"), Ledger(tmp_path / "new.sqlite"),
                        tmp_path / "audit.log", workers=2, progress=False,
                        on_outcome=outcomes.append)
    assert (summary.done, summary.skipped, summary.failed) == (0, 2 * GOOD, 1)
    reasons = sorted(o.reason for o in outcomes if o.status == "skipped")
    assert reasons == ["already in the PACS"] * GOOD + ["an ldct result, not a source"] * GOOD
    assert {o.series for o in outcomes if o.reason == "already in the PACS"} == set(good)
    assert _series(url).keys() == before.keys()


def test_a_csv_of_pacs_series_ids_to_a_folder(pacs, ray_address, tmp_path, capsys):
    """Ids as a PACS-backed server's datastore lists them (series UIDs) fetched from the PACS
    and written to a folder, each named by its UID; an id the PACS lacks is refused."""
    url, good, _ = pacs
    chosen = sorted(good)[:2]
    table = tmp_path / "ids.csv"
    table.write_text("id\n" + "\n".join(chosen) + "\n")
    out = tmp_path / "out"
    code, last = _cli(capsys, "batch", str(table), "--pacs", f"{url}/dicom-web", "--model",
                      "vagan", "--out", str(out), "--workers", "1")
    assert code == 0 and last.startswith("done 2, skipped 0, failed 0"), last
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == chosen
    for uid in chosen:
        result = read_volume(out / uid)
        assert result.dicom.StudyInstanceUID == good[uid][0].StudyInstanceUID
        assert list(result.dicom.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    table.write_text("id\n1.2.3.4\n")
    code = main(["batch", str(table), "--pacs", f"{url}/dicom-web", "--model", "vagan",
                 "--out", str(out)])
    said = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "series 1.2.3.4 is not in the PACS" in said
    # ids that are no UID are refused before any query (a PACS may match * or a UID list)
    for bad in ("*", f"{chosen[0]}\\{chosen[1]}", "1.2.03", "1." + "2" * 70, "../x"):
        table.write_text(f"id\n{chosen[0]}\n{bad}\n")
        code = main(["batch", str(table), "--pacs", f"{url}/dicom-web", "--model", "vagan",
                     "--out", str(tmp_path / "never")])
        said = " ".join(capsys.readouterr().out.split())
        assert code == 2 and "(id 2) is not a DICOM series UID" in said, said
        assert not [p for p in (tmp_path / "never").iterdir() if not p.name.startswith(".")]


def _cli(capsys, *args: str) -> tuple[int, str]:
    """`ldct ARGS` in this process (its Ray is the module's); exit code and last line."""
    code = main(list(args))
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def test_a_folder_and_a_csv_of_datastore_ids_to_a_folder(ray_address, tmp_path, capsys):
    """A folder of series (DICOM and NRRD) denoised to --out and re-run; a CSV naming one of
    them; a CSV id that is a path is refused."""
    source = tmp_path / "series"
    write_dicom_series(_noisy(30)[1], source / "a", description="LD folder")
    write_volume(_noisy(31)[1], source / "b.nrrd")
    out = tmp_path / "out"
    command = ["batch", str(source), "--model", "vagan", "--out", str(out), "--workers", "1"]
    code, last = _cli(capsys, *command)
    assert code == 0 and last.startswith("done 2, skipped 0, failed 0 ("), last
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a", "b.nrrd"]
    dicom = read_volume(out / "a")
    assert list(dicom.dicom.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    # no --strength: vagan's default level, 0.9 (benchmarks/quality/texture/kernels.md)
    assert dicom.dicom.SeriesDescription == "LD folder denoised (vagan shipped, strength 0.9)"
    assert _cli(capsys, *command)[1].startswith("done 0, skipped 2, failed 0")
    table = tmp_path / "ids.csv"
    table.write_text("id\nb\n")
    by_id = tmp_path / "by-id"
    code, last = _cli(capsys, "batch", str(table), "--datastore", str(source), "--model",
                      "vagan", "--out", str(by_id))
    assert last.startswith("done 1, skipped 0, failed 0")
    assert [p.name for p in by_id.iterdir() if not p.name.startswith(".")] == ["b.nrrd"]
    table.write_text("id\n../series/a\n")
    code = main(["batch", str(table), "--datastore", str(source), "--model", "vagan", "--out",
                 str(tmp_path / "x")])
    said = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "id '../series/a' is not an image of the datastore" in said


def _cli(capsys, *args: str) -> tuple[int, str]:
    """`ldct ARGS` in this process (joining the module's Ray): exit code, last output line."""
    code = main(list(args))
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def test_a_ledger_row_per_series_and_job(first_run, pacs):
    _, good, bad = pacs
    _, _, _, ledger, home = first_run
    rows = Ledger(home / "ledger.sqlite").rows()
    assert {r["source"] for r in rows} == set(good) | {bad}
    assert {r["state"] for r in rows if r["source"] in good} == {"done"}
    assert [r["state"] for r in rows if r["source"] == bad] == ["failed"]
    assert all(r["version"].startswith("shipped:") for r in rows)
