"""The batch worker: one per CPU slice or GPU, the model loaded once, one series per call.

A call fetches its series (PACS or file), checks that its result is not already in the
destination (a retried or resumed series is never written twice), denoises it through
`ldct.infer.denoise` (or `denoise_to_noise` for a noise target) and writes it back
(`ldct.pacs.store_derived_series`) or to a folder.
Whatever goes wrong with one series comes back as its failure, with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom

from ldct import registry
from ldct.batch import dicomweb
from ldct.batch.ledger import JobKey
from ldct.batch.worklist import Item
from ldct.derived import Derivation, denoising, is_denoised
from ldct.device import pick_device
from ldct.infer import DEFAULT_ENSEMBLE, denoise, denoise_to_noise, load_network
from ldct.io import CTVolume, read_volume, write_dicom_series, write_volume
from ldct.pacs import store_derived_series


@dataclass(frozen=True)
class Job:
    """What every series of a batch gets: model (at ``version``), strength (or a noise
    target), destination.

    ``volumes``: every result a float32 NRRD file (exact HU, whatever the source) and every
    item a source, an ldct result too: items a caller chose and reads back (a reader study's
    cases), not a query's matches.
    """

    model: str
    version: str
    strength: float = 1.0
    source_pacs: str = ""  # DICOMweb URL PACS items are read from
    write_pacs: str = ""  # DICOMweb URL results are stored in ('' : the folder ``out``)
    out: str = ""
    ensemble: int = DEFAULT_ENSEMBLE
    device: str = "auto"
    target_noise: float | None = None  # HU in flat soft tissue: chooses each series' strength
    volumes: bool = False

    def __post_init__(self) -> None:
        if self.target_noise is not None and self.write_pacs:
            raise ValueError("a noise target's results go to a folder: a derived series in "
                             "the PACS names one strength")

    @property
    def level(self) -> tuple[str, str]:
        """How much is removed, as the audit log names it: (strength or target_noise, value)."""
        return (("strength", f"{self.strength:g}") if self.target_noise is None
                else ("target_noise", f"{self.target_noise:g}"))

    @property
    def weights_version(self) -> str:
        """The version as `/infer`'s write-back names it (``version`` adds the weights' hash)."""
        return self.version.split(":")[0]

    @property
    def key(self) -> JobKey:
        where = f"pacs:{self.write_pacs}" if self.write_pacs else f"dir:{self.out}"
        return JobKey(self.model, self.version, self.strength, where, self.target_noise or 0.0)


@dataclass(frozen=True)
class Outcome:
    """What became of one series: done, skipped (its result exists) or failed (``reason``)."""

    key: str
    status: str
    series: str = ""  # the source's SeriesInstanceUID, when it is DICOM
    study: str = ""
    derived: str = ""  # the derived series' UID, or the output's name
    reason: str = ""
    slices: int = 0  # slices denoised (0 unless done)
    seconds: float = 0.0
    worker: str = ""  # pid@host


def model_version(name: str) -> str:
    """The version a ledger records: the weights in use and their SHA-256 prefix."""
    info = registry.get(name)
    if info.kind != "network":
        return "baseline"
    return f"{info.version()}:{registry.file_sha256(info.weights)[:12]}"


class SeriesWorker:
    """Denoises series one call at a time with the model it loaded once (a Ray actor)."""

    def __init__(self, job: Job, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        here = model_version(job.model)
        if here != job.version:  # a cluster node with other weights must not mix versions
            raise RuntimeError(f"this worker has {job.model} {here}, the batch asked for "
                               f"{job.version}; install the same weights on every node")
        if registry.get(job.model).kind == "network":
            load_network(job.model, str(pick_device(job.device)))
        self.job = job
        self.source = dicomweb.client(job.source_pacs) if job.source_pacs else None
        self.target = dicomweb.client(job.write_pacs) if job.write_pacs else None
        self.name = f"{os.getpid()}@{socket.gethostname()}"

    def process(self, item: Item, exclude: frozenset[str] = frozenset()) -> Outcome:
        """Denoise and write one series; never raises for the series' own faults.

        ``exclude``: derived series of other versions of the model (not this job's results).
        """
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ldct-batch-") as tmp:
            try:
                outcome = self._process(item, exclude, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - one bad series fails alone, with its reason
                reason = f"{type(exc).__name__}: {exc}"
                for place in filter(None, (tmp, item.path)):
                    reason = reason.replace(place, "<series>")  # no paths (names) in the log
                outcome = Outcome(item.key, "failed", item.series, item.study, reason=reason)
        return replace(outcome, seconds=time.perf_counter() - start, worker=self.name)

    def _read(self, item: Item, folder: Path) -> tuple[CTVolume, set[str]]:
        """The source volume and the SOPInstanceUIDs its derived series may reference."""
        if item.series:
            # a study case's own URL (its YAML's): never the site's credentials
            source = dicomweb.client(item.pacs, credentials=False) if item.pacs else self.source
            dicomweb.fetch_series(source, item.study, item.series, folder)
            path = folder
        else:
            path = Path(item.path)
        volume = read_volume(path)
        if volume.dicom is None:
            return volume, set()
        if path.is_dir():
            return volume, _instances(path, str(volume.dicom.SeriesInstanceUID))
        return volume, {str(volume.dicom.SOPInstanceUID)}

    def _process(self, item: Item, exclude: frozenset[str], tmp: Path) -> Outcome:
        job = self.job
        volume, sops = self._read(item, tmp)
        header = volume.dicom
        series = str(header.SeriesInstanceUID) if header is not None else ""
        study = str(header.get("StudyInstanceUID", "")) if header is not None else ""
        known = Outcome(item.key, "skipped", series, study)
        if header is not None and is_denoised(header) and not job.volumes:
            return replace(known, reason="an ldct result, not a source")
        if self.target is not None:
            if header is None:
                raise ValueError("write-back needs a DICOM source (it is stored in the source's "
                                 "study); use --out for volume files")
            existing = dicomweb.find_derived(
                self.target, study, self._made_by(volume).description, sops,
                volume.hu.shape[0], set(exclude))
            if existing:
                return replace(known, derived=existing, reason="already in the PACS")
        else:
            series_out = header is not None and not job.volumes
            target = Path(job.out) / (item.name if series_out else f"{item.name}.nrrd")
            if target.exists():
                return replace(known, derived=target.name, reason="already written")
        if job.target_noise is None:
            result = denoise(volume, job.model, strength=job.strength, device=job.device,
                             ensemble=job.ensemble)
        else:
            result = denoise_to_noise(volume, job.model, job.target_noise, device=job.device,
                                      ensemble=job.ensemble)[0]
        if self.target is not None:
            derived = store_derived_series(self.target, volume, result, job.model, job.strength,
                                           job.weights_version)
        else:
            derived = self._write(volume, result, target)
        return Outcome(item.key, "done", series, study, derived, slices=volume.hu.shape[0])

    def _made_by(self, volume: CTVolume) -> Derivation:
        """The derived series' description, derivation and equipment entry for this job."""
        source = str(volume.dicom.get("SeriesDescription", "CT")) if volume.dicom else "CT"
        return denoising(source, self.job.model, self.job.weights_version, self.job.strength)

    def _write(self, volume: CTVolume, result: CTVolume, target: Path) -> str:
        """Write to a hidden partial name, then rename: the output exists complete or not."""
        partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed worker of the same pid
        if volume.dicom is not None and not self.job.volumes:
            write_dicom_series(result, partial, made_by=self._made_by(volume))
        else:
            write_volume(result, partial)
        os.replace(partial, target)
        return target.name


def _instances(folder: Path, series: str) -> set[str]:
    """The SOPInstanceUIDs of ``series`` among the DICOM files of ``folder``."""
    found = set()
    for path in folder.rglob("*"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
                "SeriesInstanceUID", "SOPInstanceUID"])
        except Exception:  # noqa: BLE001 - not a DICOM file (or a folder): not an instance
            continue
        if str(ds.get("SeriesInstanceUID", "")) == series and "SOPInstanceUID" in ds:
            found.add(str(ds.SOPInstanceUID))
    return found

