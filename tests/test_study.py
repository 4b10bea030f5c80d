"""Reader studies: definition, randomization, blinding, durability, idempotence, analysis."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml
from conftest import bearer, free_port, running, serve_command

from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.study.analysis import analyse, holm, krippendorff_alpha_ordinal, read_scores
from ldct.study.definition import StudyDefinitionError, load, parse
from ldct.study.report import write_report
from ldct.study.service import StudyError, StudyService, reader_plan
from ldct.study.store import StudyStore
from ldct.study.synthetic import synthetic_scores


def _definition(folder, name="Liver study", presentation="pairs") -> dict:
    for k in range(2):
        path = folder / f"case{k}.nrrd"
        if not path.exists():
            write_volume(make_phantom(size=128, slices=2, seed=k).volume, path, dtype="int16")
    return {"name": name, "seed": 7, "presentation": presentation,
            "window": {"width": 400, "level": 40}, "readers": ["r1", "r2"],
            "cases": [{"id": "c1", "image": "case0.nrrd"}, {"id": "c2", "image": "case1.nrrd"}],
            "conditions": [{"name": "original"},
                           {"name": "smooth", "model": "ldct-gauss", "strength": 1.0},
                           {"name": "half", "model": "ldct-gauss", "strength": 0.5}],
            "criteria": [{"name": "noise", "question": "Image noise",
                          "anchors": {1: "severe", 5: "none"}},
                         {"name": "confidence", "question": "Diagnostic confidence",
                          "anchors": {1: "no", 3: "fair", 5: "full"}}]}


def _answer(item: dict, value: int = 4, choice: str = "A") -> dict:
    sides = sorted(item["volumes"])
    return {"submission_id": uuid.uuid4().hex, "reading_seconds": 12.5,
            "scores": {s: {"noise": value, "confidence": value} for s in sides},
            "choice": choice if len(sides) == 2 else None}


def test_definition_errors_name_the_field(tmp_path):
    good = _definition(tmp_path)
    for change, message in [({"readers": []}, "readers"),
                            ({"presentation": "grid"}, "presentation"),
                            ({"conditions": [{"name": "a"}, {"name": "b"}]}, "exactly one"),
                            ({"criteria": [{"name": "x", "anchors": {0: "bad"}}]}, "anchors"),
                            ({"cases": [{"id": "c"}]}, "exactly one of image"),
                            ({"seed": "abc"}, "seed must be a whole number"),
                            ({"seed": 1.5}, "seed must be a whole number"),
                            ({"conditions": [{"name": "o"}, {"name": "m", "model": "vagan",
                                                             "strength": "high"}]},
                             "strength must be a number")]:
        with pytest.raises(StudyDefinitionError, match=message):
            parse({**good, **change})
    # a huge value is named by its first 60 characters and its length: repr of 5000 r's is
    # 5002 characters long
    with pytest.raises(StudyDefinitionError) as caught:
        parse({**good, "readers": ["r" * 5000]})
    assert f"'{'r' * 59}... (5,002 characters)" in str(caught.value)
    assert "r" * 60 not in str(caught.value)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(good))
    definition = load(tmp_path / "s.yaml")
    assert definition.study_id == "liver-study" and len(definition.items()) == 4


def test_randomization_is_reproducible_per_seed_and_differs_across_readers():
    first = reader_plan(7, "r1", 30, pairs=True)
    assert first == reader_plan(7, "r1", 30, pairs=True)
    assert first != reader_plan(7, "r2", 30, pairs=True)
    assert first != reader_plan(8, "r1", 30, pairs=True)
    assert sorted(i for i, _ in first) == list(range(30))
    assert 5 < sum(swap for _, swap in first) < 25  # both placements occur


# Known-good plans, pinned: a change of the randomization would silently re-order running
# studies (a resumed reader would get other items), so it must be deliberate.
PINNED_PLANS = {("r1", True): [(1, False), (0, True), (3, True), (2, False)],
                ("r2", True): [(3, False), (0, True), (1, False), (2, True)],
                ("reader1", False): [(2, False), (4, False), (0, False), (5, False), (1, False),
                                     (3, False)]}


def test_the_plan_is_pinned_and_served_in_its_order(tmp_path):
    assert reader_plan(7, "r1", 4, pairs=True) == PINNED_PLANS[("r1", True)]
    assert reader_plan(7, "r2", 4, pairs=True) == PINNED_PLANS[("r2", True)]
    assert reader_plan(20261122, "reader1", 6, pairs=False) == PINNED_PLANS[("reader1", False)]
    service = StudyService(tmp_path / "studies")
    definition = parse(_definition(tmp_path), tmp_path)  # seed 7, 4 pair items per reader
    study = service.create(definition)["study"]
    store = StudyStore(tmp_path / "studies" / study / "study.sqlite")
    for reader in ("r1", "r2"):
        served = []
        while not (item := service.next_item(study, reader))["finished"]:
            row = store.assignment(item["item"])
            served.append((row["case_id"], row["left_condition"], row["right_condition"]))
            service.submit(study, reader, item["item"], _answer(item))
        expected = []
        for index, swap in PINNED_PLANS[(reader, True)]:
            pair = definition.items()[index]
            left, right = reversed(pair["conditions"]) if swap else pair["conditions"]
            expected.append((pair["case"], left, right))
        assert served == expected


def test_service_sessions_submissions_and_coordinator(tmp_path):
    service = StudyService(tmp_path / "studies")
    seen = []
    created = service.create(parse(_definition(tmp_path), tmp_path),
                             progress=lambda done, total, what: seen.append((done, total)))
    study, token = created["study"], created["coordinator_token"]
    assert seen[-1] == (6, 6)  # 2 cases x 3 conditions, each computed once
    session = service.session(study, "r1")
    assert session["total"] == 4 and session["done"] == 0 and session["forced_choice"]
    item = service.next_item(study, "r1")
    assert service.next_item(study, "r1")["item"] == item["item"]  # until scored
    body = _answer(item)
    first = service.submit(study, "r1", item["item"], body)
    again = service.submit(study, "r1", item["item"], body)
    assert first["acknowledged"] and not first["duplicate"] and again["duplicate"]
    assert again["done"] == 1
    with pytest.raises(StudyError, match="scored already") as err:
        service.submit(study, "r1", item["item"], _answer(item, value=2))
    assert err.value.status == 409
    with pytest.raises(StudyError, match="no item") as err:  # r2 cannot touch r1's item
        service.submit(study, "r2", item["item"], _answer(item))
    with pytest.raises(StudyError, match="not reader 'intruder'"):
        service.session(study, "intruder")
    with pytest.raises(StudyError, match="every criterion"):
        service.submit(study, "r1", service.next_item(study, "r1")["item"],
                       {"submission_id": "x", "scores": {"A": {"noise": 3}, "B": {}},
                        "choice": "A"})
    with pytest.raises(StudyError, match="coordinator token"):
        service.status(study, "guess")
    assert service.status(study, token)["readers"]["r1"] == {"done": 1, "total": 4}
    rows = service.export_rows(study, token)
    assert {r["condition"] for r in rows} <= {"original", "smooth", "half"}
    assert len(rows) == 4 and all(r["reading_seconds"] == 12.5 for r in rows)
    chosen = [r for r in rows if r["chosen"] == 1]
    assert len(chosen) == 2 and all(r["side"] == "A" for r in chosen)


@pytest.fixture(scope="module")
def study_server(tmp_path_factory):
    """A server with its own study root; yields (url, start) so a test can restart it."""
    root = tmp_path_factory.mktemp("study-root")
    folder = tmp_path_factory.mktemp("study-data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start(log_name: str):
        return running(serve_command(str(folder), port, "--models", "ldct-gauss",
                                     "--study-root", str(root)),
                       f"{url}/health", folder / log_name)

    return url, start, folder


def _reader_texts(url: str, study: str, reader: str, token: str, answers: int,
                  texts: list[str]) -> int:
    """Play a reader for ``answers`` items over HTTP with their token, keeping every
    response text."""
    auth = bearer(token)
    answer = requests.post(f"{url}/study/{study}/readers/{reader}/session", headers=auth,
                           timeout=30)
    texts.append(answer.text)
    acknowledged = 0
    for _ in range(answers):
        answer = requests.get(f"{url}/study/{study}/readers/{reader}/next", headers=auth,
                              timeout=30)
        texts.append(answer.text)
        item = answer.json()
        if item["finished"]:
            break
        for label, path in item["volumes"].items():
            volume = requests.get(url + path, headers=auth, timeout=30)
            assert volume.status_code == 200 and len(volume.content) > 1000
            texts.append(str(dict(volume.headers)) + volume.content[:2000].decode("latin-1"))
        answer = requests.post(f"{url}/study/{study}/readers/{reader}/items/{item['item']}",
                               json=_answer(item), headers=auth, timeout=30)
        texts.append(answer.text)
        assert answer.status_code == 200, answer.text
        acknowledged += 1
    return acknowledged


# What a reader's routes may say, written out: the study's own public fields, progress, random
# tokens. Anything else (a new key, a header, an NRRD key/value field) could carry the
# condition. The conditions, models and strengths of `_definition` must not appear as words.
# A criterion's task (likert/detection) and rating scale are the same for every condition.
READER_KEYS = {"study", "name", "presentation", "window", "width", "level", "criteria",
               "question", "anchors", "task", "scale", "forced_choice", "reader", "done",
               "total", "finished",
               "item", "number", "volumes", "A", "B", "acknowledged", "duplicate"}
# no ETag or Last-Modified: a file's own would recur for the original across items
VOLUME_HEADERS = {"date", "server", "content-type", "accept-ranges", "content-disposition",
                  "content-length", "cache-control", "x-content-type-options"}
NRRD_FIELDS = {"type", "dimension", "space", "sizes", "space directions", "kinds", "endian",
               "encoding", "space origin"}
CONDITION_WORDS = re.compile(r"(?i)(?<![\w.-])(original|smooth|half|ldct-gauss|gauss|strength|"
                             r"model|condition|0\.5|1\.0)(?![\w-])")


def assert_blinded(text: str, study: str) -> None:
    """``text``, a reader route's answer (JSON, or a volume's headers and NRRD header), holds
    only the fields above, its tokens are random, and no condition, model or strength is in
    it as a word."""
    found = CONDITION_WORDS.search(text)
    assert found is None, f"{found.group(0)!r} in {text[:300]}"
    if text.startswith("{'"):  # a volume: its response headers, then its NRRD header
        headers, _, nrrd = text.partition("}NRRD0004\n")
        shown = ast.literal_eval(headers + "}")
        assert set(shown) <= VOLUME_HEADERS, set(shown) - VOLUME_HEADERS
        assert shown["content-disposition"] == 'attachment; filename="volume.nrrd"'
        fields = [line for line in nrrd.split("\n\n")[0].splitlines()
                  if line and not line.startswith("#")]
        assert all(":=" not in line and line.split(":")[0] in NRRD_FIELDS for line in fields), \
            fields
        return
    keys, values = set(), []

    def walk(node) -> None:
        if isinstance(node, dict):
            keys.update(k for k in node if not re.fullmatch(r"[1-5]", k))  # anchors' scores
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        else:
            values.append(node)

    walk(json.loads(text))
    assert keys <= READER_KEYS, keys - READER_KEYS
    for path in re.findall(r"/study/[^\"]*", text):
        assert re.fullmatch(rf"/study/{study}/volumes/[A-Za-z0-9_-]{{22}}", path), path
    for item in re.findall(r'"item": ?"([^"]*)"', text):
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", item), item


def test_blinded_study_over_http_survives_sigkill(study_server, tokens):
    url, start, folder = study_server
    definition = _definition(folder, name="Durable study")
    for case in definition["cases"]:  # on the server, cases are datastore images
        case["datastore"] = case.pop("image").removesuffix(".nrrd")
    auth = bearer(tokens["coordinator"])
    with start("first.log") as server:
        created = requests.post(f"{url}/study/", data=yaml.safe_dump(definition),
                                headers={"Content-Type": "text/plain", **auth},
                                timeout=30).json()
        study, readers = created["study"], created["reader_tokens"]
        deadline = time.monotonic() + 120
        while requests.get(f"{url}/study/{study}/status", headers=auth,
                           timeout=30).json()["state"] != "open":
            assert time.monotonic() < deadline, "study not ready in 120 s"
            time.sleep(0.2)  # polling the preparation, not synchronization
        texts = [json.dumps(requests.get(f"{url}/study/", headers=bearer(readers["r1"]),
                                         timeout=30).json())]
        with ThreadPoolExecutor(2) as pool:  # two readers at once
            done = list(pool.map(lambda r: _reader_texts(url, study, r, readers[r], 2, texts),
                                 ["r1", "r2"]))
        assert done == [2, 2]
        for text in texts:  # nothing a reader can reach names a condition or model
            assert_blinded(text, study)
        # nor tells when or in which order a volume was made (the original first in each
        # case), nor which volumes are one file served twice: no ETag, no Last-Modified
        shown = [ast.literal_eval(t.partition("}NRRD0004")[0] + "}") for t in texts
                 if t.startswith("{'")]
        assert len(shown) == 8 and not any({"etag", "last-modified"} & set(h) for h in shown)
        assert requests.get(f"{url}/study/{study}/status", timeout=30).status_code == 401
        assert requests.get(f"{url}/study/{study}/status", headers=bearer(readers["r1"]),
                            timeout=30).status_code == 403
        os.kill(server.pid, signal.SIGKILL)  # no shutdown, no flush
        server.wait()
    with start("second.log"):
        status = requests.get(f"{url}/study/{study}/status", headers=auth, timeout=30).json()
        assert status["readers"] == {"r1": {"done": 2, "total": 4}, "r2": {"done": 2, "total": 4}}
        session = requests.post(f"{url}/study/{study}/readers/r1/session",
                                headers=bearer(readers["r1"]), timeout=30).json()
        assert (session["done"], session["total"]) == (2, 4)  # resumes where it stopped
        assert _reader_texts(url, study, "r1", readers["r1"], 5, []) == 2
        closed = requests.post(f"{url}/study/{study}/close", headers=auth, timeout=30).json()
        assert closed["state"] == "closed"
        export = requests.get(f"{url}/study/{study}/export", headers=auth, timeout=30)
        assert export.status_code == 200
        (folder / "export.csv").write_text(export.text)
        rows = read_scores(folder / "export.csv")
        assert len({(r["reader"], r["position"]) for r in rows}) == 6
        assert requests.get(f"{url}/study/{study}/readers/r2/next", headers=bearer(readers["r2"]),
                            timeout=30).status_code == 409


def test_analysis_finds_a_known_effect_and_no_effect_where_there_is_none(tmp_path):
    result = write_report(synthetic_scores({"better": 1.0, "same": 0.0}, seed=3), tmp_path)
    found = {(t["condition"], t["criterion"]): t for t in result.tests}
    assert all(found[("better", c)]["significant"] and found[("better", c)]["mean_diff"] > 0.5
               for c in result.criteria)
    assert not any(found[("same", c)]["significant"] for c in result.criteria)
    preference = {p["condition"]: p for p in result.preferences}
    assert preference["better"]["ci_low"] > 0.5
    assert preference["same"]["ci_low"] < 0.5 < preference["same"]["ci_high"]
    for name in ("report.md", "report.html", "scores.csv", "scores.png", "readers.png",
                 "preference.png"):
        assert (tmp_path / name).stat().st_size > 500, name
    assert "significantly higher" in (tmp_path / "report.md").read_text()
    again = analyse(read_scores(tmp_path / "scores.csv"))  # the raw CSV reproduces it
    assert [t["p"] for t in again.tests] == pytest.approx([t["p"] for t in result.tests])


def test_holm_and_wilson_match_published_examples():
    # Holm (1979) step-down on the textbook example p = 0.01, 0.04, 0.03, 0.005 (alpha 0.05:
    # H1 and H4 rejected): adjusted 4 x 0.005, 3 x 0.01, then max(2 x 0.03, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    # Newcombe (1998), Stat Med 17:857, example (c): 81 of 263, Wilson 95 % CI 0.2553-0.3662;
    # here as 263 forced choices in which the model was preferred 81 times
    rows = []
    for k in range(263):
        for side, condition, other in (("A", "model", "original"), ("B", "original", "model")):
            chosen = int((k < 81) == (condition == "model"))
            rows.append({"reader": "r1", "case": f"c{k}", "position": k + 1,
                         "presentation": "pairs", "reference": "original",
                         "condition": condition, "compared_with": other, "side": side,
                         "criterion": "noise", "score": 3, "chosen": chosen,
                         "reading_seconds": 1.0})
    preference = analyse(rows).preferences[0]
    assert (preference["preferred"], preference["n"]) == (81, 263)
    assert (preference["ci_low"], preference["ci_high"]) == pytest.approx((0.2553, 0.3662),
                                                                          abs=5e-5)


def test_agreement_statistics():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 observers, 12 units
    observers = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
                 [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
                 [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
                 [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in unit if v is not None] for unit in zip(*observers)]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.815, abs=1e-3)
    assert krippendorff_alpha_ordinal([[3, 3, 3], [1, 1, 1], [5, 5, 5]]) == 1.0


def _two_readers(first: list[int], second: list[int]) -> list[dict]:
    """Export rows: readers r1 and r2 scoring the same cases (one condition) for noise."""
    return [{"reader": reader, "case": f"c{k}", "position": k + 1, "presentation": "single",
             "reference": "original", "condition": "original", "compared_with": "", "side": "",
             "criterion": "noise", "score": score, "chosen": None, "reading_seconds": 1.0}
            for reader, scores in (("r1", first), ("r2", second))
            for k, score in enumerate(scores)]


@pytest.mark.parametrize("second, kappa", [
    # hand-worked, quadratic weights (i - j)^2, kappa = 1 - sum w O / sum w E:
    # r1 1,2,3,4,5 (each 1/5), r2 1,3,3,5,4 (1: 1/5, 3: 2/5, 4: 1/5, 5: 1/5).
    # Observed: disagreements (2,3), (4,5), (5,4), each weight 1: sum w O = 3/5.
    # Expected: sum_j p2_j sum_i (i - j)^2 / 5, the inner sums 30 (j=1), 10 (3), 15 (4),
    # 30 (5): (30/5 + 2*10/5 + 15/5 + 30/5) / 5 = 19/5; kappa = 1 - (3/5)/(19/5) = 16/19.
    ([1, 3, 3, 5, 4], 16 / 19),
    # reversed order: sum w O = (16 + 4 + 0 + 4 + 16)/5 = 8, sum w E = (30+15+10+15+30)/25 =
    # 4: kappa = 1 - 8/4 = -1 (perfect disagreement)
    ([5, 4, 3, 2, 1], -1.0),
    ([1, 2, 3, 4, 5], 1.0),  # perfect agreement
])
def test_weighted_kappa_matches_hand_worked_values(second, kappa):
    (agreement,) = analyse(_two_readers([1, 2, 3, 4, 5], second)).agreement
    assert agreement["statistic"] == "weighted kappa (quadratic)"
    assert agreement["n_items"] == 5
    assert agreement["value"] == pytest.approx(kappa, abs=1e-9)
