"""A study's model conditions denoised by `ldct batch`'s machinery (`ldct study create --batch`).

Each model condition is one batch job (conditions with the same model and level share one):
Ray actors that load the model once, bounded in-flight work, and a ledger per study in
``<study root>/.batch/<study id>/work``, so a re-run after a crash or a failed case denoises
only what is left. Results are float32 NRRD files (exact HU) that the study reads back onto
each case's own geometry, so the study is the one an in-process creation makes; they are
removed once the study is created (the audit log stays).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import ray

from ldct import registry
from ldct.batch.ledger import Ledger
from ldct.batch.run import BatchOptions, Summary, run_batch, start_ray
from ldct.batch.workers import Job, model_version
from ldct.batch.worklist import Item
from ldct.io import CTVolume, read_volume
from ldct.study.definition import Condition, StudyDefinition

Results = dict[tuple[str, str], Path]  # (case id, condition name) -> result file


class StudyBatchError(RuntimeError):
    """Some (case, condition) failed; the message names each and says why."""


def batch_home(root: Path, study_id: str) -> Path:
    """Where a study's batch keeps its ledger, results (``work``) and audit log."""
    return root / ".batch" / study_id


def case_item(key: str, pacs: dict[str, str] | None = None) -> Item:
    """A case as a batch item: a file or folder ``key`` (an absolute path), or with ``pacs``
    (url, study, series) a DICOMweb series; its result is named, and the ledger keys it, by a
    hash of its source: for a file, its path and what it is now (size, modification time,
    inode), so that a case replaced between a failed run and its re-run is denoised again."""
    if pacs:
        name = hashlib.sha256(key.encode()).hexdigest()[:24]  # a case id is no file name
        return Item(key=key, name=name, study=pacs["study"], series=pacs["series"],
                    pacs=pacs["url"])
    state = hashlib.sha256(_file_state(Path(key)).encode()).hexdigest()[:12]
    source = f"{key} (state {state})"  # the ledger's key: which file, and as it is now
    name = hashlib.sha256(source.encode()).hexdigest()[:24]
    return Item(key=source, name=name, path=key)


def _file_state(path: Path) -> str:
    """Size, modification time and inode of a file, or of every file of a folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    states = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:  # gone: the worker says so when it reads the case
            continue
        states.append(f"{file}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}")
    return "\n".join(states)


def _job(condition: Condition, work: Path, device: str) -> Job:
    """The batch job of a model condition: its model's version, strength or noise target."""
    model = condition.model
    if condition.target_noise is not None:
        level, strength = f"noise-{condition.target_noise:g}HU", 1.0
    else:
        strength = registry.get(model).strength_or_default(condition.strength)
        level = f"strength-{strength:g}"
    return Job(model, model_version(model), strength, out=str(work / f"{model}-{level}"),
               device=device, target_noise=condition.target_noise, volumes=True)


def denoise_cases(definition: StudyDefinition, items: dict[str, Item], home: Path,
                  options: BatchOptions, device: str = "auto") -> tuple[Results, Summary]:
    """Every (case, model condition)'s result file and the counts over all jobs; raises
    StudyBatchError naming every failed (case, condition) after all jobs ran (what finished
    stays in the ledger for the next run). ``items``: case id -> its batch item."""
    work = home / "work"
    jobs: dict[Job, list[str]] = {}
    for condition in definition.conditions:
        if condition.model:
            jobs.setdefault(_job(condition, work, device), []).append(condition.name)
    sources = list({item.key: item for item in items.values()}.values())  # a source once
    total = Summary()
    failed: list[str] = []
    ledger = Ledger(work / "ledger.sqlite")
    started_here = start_ray(options.address, options.workers * options.cpus_per_worker)
    try:
        for job, names in jobs.items():
            Path(job.out).mkdir(parents=True, exist_ok=True)
            summary = run_batch(sources, job, ledger, home / "audit.log", options.workers,
                                options.cpus_per_worker, address=options.address)
            total.add(summary)
            reasons = {failure.key: failure.reason for failure in summary.failures}
            failed += [f"case {case} / condition {name}: {reasons[item.key].rstrip('.')}"
                       for case, item in items.items() if item.key in reasons for name in names]
    finally:
        ledger.close()
        if started_here:
            ray.shutdown()
    if failed:
        raise StudyBatchError(
            f"{len(failed)} of {len(items) * sum(map(len, jobs.values()))} study volumes "
            f"failed, so the study was not created: {'; '.join(failed)}. What finished is kept "
            f"(ledger {ledger.path}): fix these cases and run the same command again, which "
            "denoises only what is left.")
    return {(case, name): Path(job.out) / f"{item.name}.nrrd" for case, item in items.items()
            for job, names in jobs.items() for name in names}, total


def result_image(volume: CTVolume, result: Path) -> CTVolume:
    """A condition's image from its batch result: the result's voxels on the case's own
    volume (geometry, header), as the in-process creation makes it."""
    hu = read_volume(result).hu
    if hu.shape != volume.hu.shape:
        raise StudyBatchError(f"{result}: a batch result of shape {hu.shape} for a case of "
                              f"shape {volume.hu.shape} (the case changed since it was "
                              f"denoised); delete {result.parent.parent} and create the study "
                              "again")
    return volume.with_hu(hu)


def drop_results(home: Path) -> None:
    """The study holds its volumes now: its batch results and ledger go (the audit log stays)."""
    shutil.rmtree(home / "work", ignore_errors=True)
