"""Running reader studies: creation, blinded reader sessions, coordinator actions.

Blinding: readers see items, volumes and placements only through random tokens; every (item,
side) has a volume token of its own, and every volume is written in the same uncompressed int16
encoding, so neither a token nor a size tells the original from a denoised volume; no response
to a reader names a condition, a model or a case source. Randomization: each reader's item
order and left/right placement come from ``random.Random(f"{seed}/{reader}")``, so they are
reproducible from the study's seed and differ between readers. Each reader gets a bearer token
of role ``reader`` bound to the study and reader id (`ldct.auth`). The coordinator sees
progress, closes the study and exports the unblinded scores: on the server any token of role
coordinator or admin, on the command line the study's coordinator token printed at creation.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ldct import registry
from ldct.access import reader_refusal
from ldct.auth import TokenStore
from ldct.batch import dicomweb
from ldct.batch.run import BatchOptions
from ldct.batch.worklist import Item
from ldct.infer import denoise, denoise_to_noise
from ldct.io import CTVolume, read_volume, write_volume
from ldct.jobs import DEVICE
from ldct.pacs import PacsError
from ldct.study import batch
from ldct.study.definition import Case, Condition, StudyDefinition, parse
from ldct.study.store import StudyStore

Progress = Callable[[int, int, str], None]  # (done, total, what)
STUDY_ROOT_ENV = "LDCT_STUDY_ROOT"
CHOICES = ("A", "B")


class ImageSource(Protocol):
    """The server's images as a study reads them (MONAI Label's datastores are such)."""

    def list_images(self) -> list[str]: ...

    def get_image_uri(self, image_id: str) -> str: ...


class StudyError(Exception):
    """A request the study cannot honour; ``status`` is the HTTP code that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def study_root() -> Path:
    """Where studies live: ``$LDCT_STUDY_ROOT``, else ~/.cache/ldct/reader_studies."""
    return Path(os.environ.get(STUDY_ROOT_ENV) or Path.home() / ".cache" / "ldct" /
                "reader_studies")


def reader_plan(seed: int, reader: str, items: int, pairs: bool) -> list[tuple[int, bool]]:
    """(item index, swap left/right) in this reader's order: reproducible, reader-specific."""
    rng = random.Random(f"{seed}/{reader}")
    order = list(range(items))
    rng.shuffle(order)
    return [(index, pairs and rng.random() < 0.5) for index in order]


class StudyService:
    """All studies under one folder (one sub-folder with its SQLite file and volumes each)."""

    def __init__(self, root: str | Path,
                 datastore: ImageSource | None = None,
                 tokens: TokenStore | None = None) -> None:
        """``datastore``: the server's images, which cases may name by id; ``tokens``: where
        reader tokens go (default: the server's token file)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.datastore = datastore
        self.tokens = tokens or TokenStore()
        self._lock = threading.Lock()

    # -- creation -------------------------------------------------------------------------
    def create(self, definition: StudyDefinition, progress: Progress | None = None,
               device: str = "auto", batch_options: BatchOptions | None = None
               ) -> dict[str, Any]:
        """Denoise every (case, condition) once, store the volumes and every reader's plan.

        With ``batch_options`` the model conditions are denoised first by `ldct batch`'s Ray
        workers (`ldct.study.batch`): a failed case leaves no study, only the finished
        results for the next run; ``created["batch"]`` is the batch's summary line.
        """
        results = None
        try:
            if batch_options is not None:
                self._check_sources(definition)  # before hours of denoising
                self._check_free(definition)
                items = {case.id: self._case_item(definition, case) for case in definition.cases}
                home = batch.batch_home(self.root, definition.study_id)
                results, summary = batch.denoise_cases(definition, items, home, batch_options,
                                                       device)
            folder, store, created = self._register(definition)
            self._build_logged(definition, folder, store, device, progress, reraise=True,
                               results=results)
        except batch.StudyBatchError as exc:
            raise StudyError(422, str(exc)) from exc
        if batch_options is not None:
            batch.drop_results(home)
            created["batch"] = summary.line()
        return created

    def create_in_background(self, definition: StudyDefinition,
                             device: str = "auto") -> dict[str, Any]:
        """As :meth:`create` for a definition a client sent: its cases may name datastore
        images only (no server path, no URL of the client's choice); returns at once, and
        ``status`` shows the progress."""
        for case in definition.cases:
            if not case.datastore:
                raise StudyError(422, f"case {case.id}: a study created through the server names "
                                      "its cases by datastore id (`datastore: ID`, as GET "
                                      "/datastore/?output=all lists them); server paths and "
                                      "URLs are not accepted")
        folder, store, created = self._register(definition)
        threading.Thread(target=self._build_logged, name=f"study-{definition.study_id}",
                         args=(definition, folder, store, device), daemon=True).start()
        return created

    def _register(self, definition: StudyDefinition
                  ) -> tuple[Path, StudyStore, dict[str, Any]]:
        """The study's folder and store in state 'creating', and what the coordinator gets
        (the coordinator token and every reader's token)."""
        self._check_sources(definition)
        folder, store = self._new_study(definition)
        token = secrets.token_urlsafe(24)
        store.set_meta(name=definition.name, state="creating", coordinator_token=token,
                       definition=_as_yaml_data(definition), created=0, total=0)
        readers = {reader: self.reader_token(definition.study_id, reader)
                   for reader in definition.readers}
        return folder, store, {"study": definition.study_id, "coordinator_token": token,
                               "readers": list(definition.readers), "reader_tokens": readers,
                               "items": len(definition.items())}

    def _check_sources(self, definition: StudyDefinition) -> None:
        """Refuse, before anything is stored, models that cannot run and unknown images."""
        for condition in definition.conditions:
            if condition.model and (condition.model not in registry.names()
                                    or not registry.get(condition.model).available()):
                raise StudyError(422, f"condition {condition.name}: no model "
                                      f"'{condition.model}' with weights; `ldct models` lists "
                                      "them")
        named = [case for case in definition.cases if case.datastore]
        if named and self.datastore is None:
            raise StudyError(422, f"case {named[0].id}: datastore ids need the server's "
                                  "datastore; create the study through the server")
        listed = set(self.datastore.list_images()) if named else set()  # no image fetched
        for case in named:
            if case.datastore not in listed:
                raise StudyError(422, f"case {case.id}: no image '{case.datastore}' in the "
                                      "server's datastore")

    def reader_token(self, study: str, reader: str) -> str:
        """A new bearer token for ``reader`` of ``study`` (that reader's earlier one, and no
        other token, is revoked)."""
        return self.tokens.replace_reader(study, reader)

    def _check_free(self, definition: StudyDefinition) -> Path:
        """The study's folder, refused (409) while a study that did not fail holds it."""
        folder = self.root / definition.study_id
        if folder.exists() and not _failed(folder):
            raise StudyError(409, f"a study '{definition.study_id}' exists already; "
                                  "give the new one another name")
        return folder

    def _new_study(self, definition: StudyDefinition) -> tuple[Path, StudyStore]:
        with self._lock:
            folder = self._check_free(definition)
            if folder.exists():
                shutil.rmtree(folder)  # a failed creation does not block its name
            (folder / "volumes").mkdir(parents=True)
        return folder, StudyStore(folder / "study.sqlite")

    def _build_logged(self, definition, folder, store, device, progress=None,
                      reraise: bool = False, results: batch.Results | None = None) -> None:
        """Build the study; a failure is recorded for the coordinator's status."""
        try:
            self._build(definition, folder, store, progress, device, results)
        except Exception as exc:  # noqa: BLE001 - the coordinator reads it in status
            store.set_meta(state="failed", error=str(exc))
            if reraise:
                raise

    def resume_unfinished(self, device: str = "auto") -> list[str]:
        """Studies whose creation a stopped server left unfinished are built again, in the
        background, from their stored definition (their reader tokens stay valid)."""
        resumed = []
        for folder in sorted(self.root.iterdir()):
            if not (folder / "study.sqlite").exists():
                continue
            store = StudyStore(folder / "study.sqlite")
            meta = store.meta()
            if meta.get("state") != "creating":
                continue
            if store.readers_progress():  # stopped after its one last transaction: just open it
                store.set_meta(state="open")
                resumed.append(folder.name)
                continue
            for partial in (folder / "volumes").glob("*"):
                partial.unlink()
            definition = parse(meta["definition"])
            threading.Thread(target=self._build_logged, name=f"study-{folder.name}",
                             args=(definition, folder, store, device), daemon=True).start()
            resumed.append(folder.name)
        return resumed

    def _build(self, definition: StudyDefinition, folder: Path, store: StudyStore,
               progress: Progress | None, device: str,
               results: batch.Results | None = None) -> None:
        """Denoise (or take from the batch's ``results``) and write every (case, condition),
        then every reader's plan in one transaction: a crash before that leaves no item
        behind, only files to redo."""
        total = len(definition.cases) * len(definition.conditions)
        store.set_meta(total=total)
        done = 0
        files: dict[tuple[str, str], str] = {}
        for case in definition.cases:
            volume = self._case_volume(definition, case)
            for condition in definition.conditions:
                shown = (batch.result_image(volume, results[(case.id, condition.name)])
                         if results and condition.model else _shown(volume, condition, device))
                path = write_volume(shown, folder / "volumes" /
                                    f"{secrets.token_urlsafe(16)}.nrrd", dtype="int16",
                                    compress=False)  # one size for every condition
                files[(case.id, condition.name)] = str(path)
                done += 1
                store.set_meta(created=done)
                if progress:
                    progress(done, total, f"{case.id} / {condition.name}")
        stamp = time.time()  # one modification time for every volume, so that the ETag and
        for path in files.values():  # Last-Modified served with it tell neither the order the
            os.utime(path, (stamp, stamp))  # conditions were made in nor which file recurs
        store.set_meta(files={f"{case}/{condition}": path
                              for (case, condition), path in files.items()})
        store.add_assignments(*self._reader_rows(definition, definition.readers, files))
        store.set_meta(state="open")

    @staticmethod
    def _reader_rows(definition: StudyDefinition, readers: Sequence[str],
                     files: dict[tuple[str, str], str]
                     ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str, str]]]:
        """The readers' items in their order and placement, each side with a volume token of
        its own: (assignment rows, volume rows (token, case, condition, file))."""
        items = definition.items()
        rows, volumes = [], []
        for reader in readers:
            plan = reader_plan(definition.seed, reader, len(items),
                               definition.presentation == "pairs")
            for position, (index, swap) in enumerate(plan):
                item = items[index]
                names = list(reversed(item["conditions"])) if swap else item["conditions"]
                right = names[1] if len(names) > 1 else None
                tokens = {}
                for side, condition in (("left", names[0]), ("right", right)):
                    tokens[side] = secrets.token_urlsafe(16) if condition else None
                    if condition:
                        volumes.append((tokens[side], item["case"], condition,
                                        files[(item["case"], condition)]))
                rows.append({"token": secrets.token_urlsafe(12), "reader": reader,
                             "position": position, "case_id": item["case"],
                             "left_condition": names[0], "right_condition": right,
                             "left_volume": tokens["left"], "right_volume": tokens["right"]})
        return rows, volumes

    def add_reader(self, study: str, reader: str) -> dict[str, Any]:
        """Add ``reader`` to an open study (their own order and placement), or give an existing
        reader a new token (the old one is revoked); returns the token."""
        store = self._store(study)
        meta = store.meta()
        if meta.get("state") != "open":
            raise StudyError(409, f"study '{study}' is {meta.get('state')}; readers are added to "
                                  "open studies")
        data = meta["definition"]
        if reader not in data["readers"]:
            data["readers"].append(reader)
            definition = parse(data)
            files = {tuple(key.split("/", 1)): path for key, path in meta["files"].items()}
            store.add_assignments(*self._reader_rows(definition, [reader], files))
            store.set_meta(definition=data)
        return {"study": study, "reader": reader, "reader_token": self.reader_token(study, reader)}

    def _case_volume(self, definition: StudyDefinition, case: Case) -> CTVolume:
        if case.dicomweb:
            try:
                return _dicomweb_volume(case.dicomweb)
            except PacsError as exc:
                raise StudyError(422, f"case {case.id}: {exc}") from exc
        return read_volume(self._case_path(definition, case))

    def _case_path(self, definition: StudyDefinition, case: Case) -> Path:
        """The file or folder of a case given as an image path or a datastore id."""
        if case.image:
            return _absolute(definition, case.image)
        if self.datastore is None:
            raise StudyError(422, f"case {case.id}: datastore ids need the server's "
                                  "datastore; create the study through the server")
        return Path(self.datastore.get_image_uri(case.datastore))

    def _case_item(self, definition: StudyDefinition, case: Case) -> Item:
        """The case as a batch item (what the workers read)."""
        if case.dicomweb:
            return batch.case_item(case.dicomweb["series"], case.dicomweb)
        return batch.case_item(str(self._case_path(definition, case)))

    # -- readers --------------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        """Open studies, as readers may see them."""
        found = []
        for folder in sorted(self.root.iterdir()):
            if (folder / "study.sqlite").exists():
                meta = StudyStore(folder / "study.sqlite").meta()
                if meta.get("state") == "open":
                    found.append({"study": folder.name, "name": meta["name"]})
        return found

    def session(self, study: str, reader: str) -> dict[str, Any]:
        """Start or resume: the study's public description and this reader's progress."""
        store, definition = self._open(study)
        self._check_reader(definition, reader)
        done, total = store.progress(reader)
        return {**definition.public(), "reader": reader, "done": done, "total": total}

    def next_item(self, study: str, reader: str) -> dict[str, Any]:
        """The reader's next unscored item (the same one again until it is scored)."""
        store, definition = self._open(study)
        self._check_reader(definition, reader)
        done, total = store.progress(reader)
        row = store.next_assignment(reader)
        if row is None:
            return {"finished": True, "done": done, "total": total}
        volumes = {"A": f"/study/{study}/volumes/{row['left_volume']}"}
        if row["right_volume"]:
            volumes["B"] = f"/study/{study}/volumes/{row['right_volume']}"
        return {"finished": False, "item": row["token"], "number": done + 1, "done": done,
                "total": total, "volumes": volumes}

    def volume_file(self, study: str, token: str, reader: str | None = None) -> Path:
        """A volume's file; with ``reader``, only a volume of that reader's items."""
        store, _ = self._open(study, allow_closed=True)
        path = store.volume_path(token)
        if path is None or (reader is not None and store.volume_reader(token) != reader):
            raise StudyError(404, "no such volume in this study")
        return Path(path)

    def submit(self, study: str, reader: str, item: str, body: dict[str, Any]
               ) -> dict[str, Any]:
        """Store a reader's scores once; the same submission again is acknowledged again."""
        store, definition = self._open(study)
        self._check_reader(definition, reader)
        row = store.assignment(item)
        if row is None or row["reader"] != reader:
            raise StudyError(404, f"reader {reader} has no item {item} in this study")
        sides = ["A", "B"] if row["right_volume"] else ["A"]
        payload, choice, seconds, submission_id = _validate(body, sides, definition)
        if seconds is None and row["served_at"] is not None:
            seconds = time.time() - row["served_at"]
        stored, earlier = store.submit(item, reader, submission_id, payload, choice, seconds)
        if not stored and (earlier["payload"], earlier["choice"]) != (payload, choice):
            raise StudyError(409, "this item was scored already with other values; scores are "
                                  "final once acknowledged")
        done, total = store.progress(reader)
        return {"acknowledged": True, "duplicate": not stored, "done": done, "total": total}

    # -- coordinator ----------------------------------------------------------------------
    def status(self, study: str, token: str | None) -> dict[str, Any]:
        store = self._coordinator(study, token)
        meta = store.meta()
        return {"study": study, "name": meta["name"], "state": meta["state"],
                "created": meta.get("created", 0), "total_volumes": meta.get("total", 0),
                "error": meta.get("error", ""), "readers": store.readers_progress()}

    def close(self, study: str, token: str | None) -> dict[str, Any]:
        store = self._coordinator(study, token)
        store.set_meta(state="closed")
        return self.status(study, token)

    def export_rows(self, study: str, token: str | None) -> list[dict[str, Any]]:
        """Unblinded scores, one row per (reader, item side, criterion)."""
        store = self._coordinator(study, token)
        definition = parse(store.meta()["definition"])
        tasks = {c.name: c.task for c in definition.criteria}
        truth = {c.id: c.lesion for c in definition.cases}
        rows = []
        for r in store.scored_rows():
            payload = json.loads(r["payload"])
            sides = {"A": r["left_condition"], "B": r["right_condition"]}
            for side, scores in payload.items():
                other = sides["B" if side == "A" else "A"] or ""
                for criterion, score in scores.items():
                    rows.append({"reader": r["reader"], "case": r["case_id"],
                                 "position": r["position"] + 1,
                                 "presentation": definition.presentation,
                                 "reference": definition.reference.name,
                                 "condition": sides[side], "compared_with": other,
                                 "side": side, "criterion": criterion, "score": score,
                                 "chosen": "" if r["choice"] is None
                                 else int(r["choice"] == side),
                                 "reading_seconds": round(r["reading_seconds"] or 0.0, 2),
                                 "task": tasks[criterion],
                                 "truth": "" if tasks[criterion] != "detection"
                                 else int(truth[r["case_id"]])})
        return rows

    # -- helpers --------------------------------------------------------------------------
    def _store(self, study: str) -> StudyStore:
        path = self.root / study / "study.sqlite"
        # only a study id (`StudyDefinition.study_id`'s form) names a folder: never '..'
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", study) or not path.exists():
            raise StudyError(404, f"no study '{study}'")
        return StudyStore(path)

    def _open(self, study: str, allow_closed: bool = False
              ) -> tuple[StudyStore, StudyDefinition]:
        store = self._store(study)
        meta = store.meta()
        state = meta.get("state")
        if state == "creating":
            raise StudyError(409, f"study '{study}' is still being prepared; try again shortly")
        if state == "closed" and not allow_closed:
            raise StudyError(409, f"study '{study}' is closed")
        if state not in ("open", "closed"):
            raise StudyError(409, f"study '{study}' is not available ({state})")
        return store, parse(meta["definition"])

    @staticmethod
    def _check_reader(definition: StudyDefinition, reader: str) -> None:
        if reader not in definition.readers:
            raise StudyError(403, reader_refusal(definition.study_id, reader))

    def _coordinator(self, study: str, token: str | None) -> StudyStore:
        """The study's store for its coordinator: ``token`` is the study's coordinator token
        (command line), or None where the server's access guard checked the caller's role."""
        store = self._store(study)
        expected = store.meta().get("coordinator_token", "")
        if token is not None and (not token or not hmac.compare_digest(token, expected)):
            raise StudyError(403, "coordinator token missing or wrong")
        return store


def _failed(folder: Path) -> bool:
    database = folder / "study.sqlite"
    return database.exists() and StudyStore(database).meta().get("state") == "failed"


def _validate(body: dict[str, Any], sides: list[str], definition: StudyDefinition
              ) -> tuple[dict, str | None, float | None, str]:
    """The submission's scores, choice, reading time and id, or a 422 saying what is wrong."""
    if not isinstance(body, dict):
        raise StudyError(422, "the submission must be a JSON object")
    submission_id = body.get("submission_id")
    if not isinstance(submission_id, str) or not submission_id:
        raise StudyError(422, "submission_id (a string the client makes once per "
                              "submission) is required")
    scores = body.get("scores")
    if not isinstance(scores, dict) or sorted(scores) != sides:
        raise StudyError(422, f"scores must hold exactly the sides {sides}")
    criteria = {c.name: c for c in definition.criteria}
    payload = {}
    for side in sides:
        given = scores[side]
        if not isinstance(given, dict) or sorted(given) != sorted(criteria):
            raise StudyError(422, f"scores[{side}] must score every criterion: "
                                  f"{list(criteria)}")
        for name, value in given.items():
            low, high = criteria[name].scale
            if not criteria[name].accepts(value):
                raise StudyError(422, f"scores[{side}][{name}]: each score is an integer "
                                      f"{low}-{high}, got {value!r}")
        payload[side] = {k: int(v) for k, v in given.items()}
    choice = body.get("choice")
    if len(sides) == 2 and choice not in CHOICES:
        raise StudyError(422, "choice must be 'A' or 'B' (forced choice: which is better)")
    if len(sides) == 1 and choice is not None:
        raise StudyError(422, "choice is only for pairs")
    seconds = body.get("reading_seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
        raise StudyError(422, "reading_seconds must be a non-negative number")
    return payload, choice, seconds, submission_id


def _shown(volume: CTVolume, condition: Condition, device: str) -> CTVolume:
    """A condition's image: the original, or its model's result at its strength or at the
    strength that leaves its target noise."""
    if not condition.model:
        return volume
    with DEVICE:  # one at a time with the server's denoising requests
        if condition.target_noise is None:
            strength = registry.get(condition.model).strength_or_default(condition.strength)
            return denoise(volume, condition.model, strength, device=device)
        return denoise_to_noise(volume, condition.model, condition.target_noise,
                                device=device)[0]


def _as_yaml_data(definition: StudyDefinition) -> dict[str, Any]:
    """The definition as the YAML mapping it came from (stored with the study)."""
    return {"name": definition.name, "seed": definition.seed,
            "presentation": definition.presentation,
            "window": {"width": definition.window[0], "level": definition.window[1]},
            "readers": list(definition.readers),
            "cases": [{"id": c.id, **({"image": str(_absolute(definition, c.image))}
                                      if c.image else {}),
                       **({"datastore": c.datastore} if c.datastore else {}),
                       **({"dicomweb": c.dicomweb} if c.dicomweb else {}),
                       **({"lesion": c.lesion} if c.lesion is not None else {}),
                       **({"location": list(c.location)} if c.location else {})}
                      for c in definition.cases],
            "conditions": [{"name": c.name, **({"model": c.model} if c.model else {}),
                            **({"strength": c.strength} if c.strength is not None else {}),
                            **({"target_noise": c.target_noise} if c.target_noise else {})}
                           for c in definition.conditions],
            "criteria": [{"name": c.name, "question": c.question, "anchors": c.anchors,
                          "task": c.task, "scale": list(c.scale)}
                         for c in definition.criteria]}


def _absolute(definition: StudyDefinition, image: str) -> Path:
    path = Path(image)
    return path if path.is_absolute() else (definition.base_dir / path).resolve()


def _dicomweb_volume(ref: dict[str, str]) -> CTVolume:
    """Download a DICOMweb series (WADO-RS, as a batch worker does) and read it."""
    with tempfile.TemporaryDirectory(prefix="ldct-study-") as folder:
        dicomweb.fetch_series(dicomweb.client(ref["url"], credentials=False),
                              ref["study"], ref["series"],
                              Path(folder))
        return read_volume(folder)
