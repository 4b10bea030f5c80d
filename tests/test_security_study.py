"""Reader studies and the server's own files against a real `ldct serve`: YAML bombs, creation
checked before anything is registered, blinding through HTTP headers, reader tokens in a
namespace of their own, log lines that escape what a client sent, a site-model manifest that
cannot be used falls back to the shipped weights (issue 32, findings 5, 6, 7, 9-13)."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, bearer, free_port, running, serve_command

from ldct import registry
from ldct.auth import TokenStore, auth_file
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.processes import wait_for
from ldct.server.connections import REQUEST_TIMEOUT_ENV

REQUEST_TIMEOUT_S = 4  # this module's server: a request's head or body may stall this long


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokens):
    root = tmp_path_factory.mktemp("study-security")
    studies = root / "studies"
    studies.mkdir()
    for k in range(2):
        write_volume(make_phantom(size=64, slices=2, seed=k).volume, studies / f"case{k}.nrrd",
                     dtype="int16")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    site = root / "site-models"
    with running(serve_command(str(studies), port, "--models", "ldct-gauss,vagan",
                               "--study-root", str(root / "reader-studies")), f"{url}/health",
                 log, env={registry.SITE_MODELS_ENV: str(site),
                           REQUEST_TIMEOUT_ENV: str(REQUEST_TIMEOUT_S)}):
        yield {"url": url, "log": log, "root": root, "site": site,
               "coordinator": bearer(tokens["coordinator"]),
               "radiologist": bearer(tokens["radiologist"])}


def _definition(name: str, readers=("r1",), **changes) -> dict:
    return {"name": name, "seed": 7, "presentation": "pairs", "readers": list(readers),
            "cases": [{"id": f"c{k}", "datastore": f"case{k}"} for k in range(2)],
            "conditions": [{"name": "original"}, {"name": "g", "model": "ldct-gauss"},
                           {"name": "h", "model": "ldct-gauss", "strength": 0.5}],
            "criteria": [{"name": "q", "question": "Overall", "anchors": {1: "bad", 5: "good"}}],
            **changes}


def _create(server, text: str) -> requests.Response:
    return requests.post(f"{server['url']}/study/", data=text, timeout=120,
                         headers={"Content-Type": "text/plain", **server["coordinator"]})


def _status(server, study: str) -> requests.Response:
    return requests.get(f"{server['url']}/study/{study}/status", headers=server["coordinator"],
                        timeout=30)


def _open(server, definition: dict) -> dict:
    created = _create(server, yaml.safe_dump(definition))
    assert created.status_code == 200, created.text[:300]
    study = created.json()["study"]
    state = wait_for(lambda: (s := _status(server, study).json()["state"]) != "creating" and s,
                     "the study created", 120)
    assert state == "open", _status(server, study).text
    return created.json()


def _laughs(levels: int, field: str = "name") -> str:
    """The billion-laughs document of the probe: each level nine aliases of the one before."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{k}: &a{k} [{','.join([f'*a{k - 1}'] * 9)}]" for k in range(1, levels)]
    body = yaml.safe_dump(_definition("Laughs"), sort_keys=False)
    return "\n".join(lines) + "\n" + body.replace("name: Laughs", f"{field}: *a{levels - 1}", 1)


@pytest.mark.parametrize("levels", [6, 8])
def test_yaml_bombs_are_refused_at_once_with_a_short_answer(server, levels):
    text = _laughs(levels)
    assert len(text) < 2000
    started = time.monotonic()
    answer = _create(server, text)
    elapsed = time.monotonic() - started
    assert answer.status_code == 422 and "alias" in answer.text, answer.text[:300]
    assert len(answer.content) < 10_000
    assert elapsed < 5  # 65 s on the probe's main for eight levels (target < 1 s, see note)
    assert requests.get(f"{server['url']}/health", timeout=5).status_code == 200


def test_an_alias_in_an_accepted_field_is_refused_too(server):
    definition = yaml.safe_dump(_definition("Aliased"), sort_keys=False)
    text = "x: &x Overall quality of the image\n" + definition.replace("question: Overall",
                                                                      "question: *x")
    answer = _create(server, text)
    assert answer.status_code == 422 and "alias" in answer.text
    assert _status(server, "aliased").status_code == 404


def test_a_definition_past_its_limit_is_refused_while_it_arrives(server):
    answer = _create(server, "a" * (2 << 20))
    assert answer.status_code == 413 and "at most 1,048,576 bytes" in answer.text


def test_a_huge_value_is_never_echoed(server):
    answer = _create(server, yaml.safe_dump(_definition("Echo", seed="9" * 100_000)))
    assert answer.status_code == 422 and "seed must be a whole number" in answer.text
    assert len(answer.content) < 1000


@pytest.mark.parametrize("changes, expected", [
    (dict(readers=["bad reader"]), "reader id 'bad reader'"),
    (dict(readers=["r/1"]), "reader id 'r/1'"),
    (dict(readers=["r" * 80]), "reader id"),
    (dict(name="N" * 70), "name must be 1-64 characters"),
    (dict(name="!!!"), "name needs letters or digits"),
])
def test_study_ids_and_reader_ids_are_checked_before_anything_is_registered(server, changes,
                                                                            expected):
    definition = {**_definition(f"Checked {uuid.uuid4().hex[:6]}"), **changes}
    answer = _create(server, yaml.safe_dump(definition))
    assert answer.status_code == 422 and expected in answer.text, answer.text[:300]
    study = re.sub(r"[^a-z0-9]+", "-", definition["name"].lower()).strip("-")
    if study:
        assert _status(server, study).status_code == 404  # nothing registered
    assert not list((server["root"] / "reader-studies").glob(f"{study or 'x'}*"))


def test_every_header_of_every_side_is_the_same_apart_from_the_token(server):
    created = _open(server, _definition("Headers"))
    reader = bearer(created["reader_tokens"]["r1"])
    url, study = server["url"], created["study"]
    seen = []
    for _ in range(created["items"]):
        item = requests.get(f"{url}/study/{study}/readers/r1/next", headers=reader,
                            timeout=30).json()
        sides = {}
        for side, path in item["volumes"].items():
            answer = requests.get(f"{url}{path}", headers=reader, timeout=30)
            assert answer.status_code == 200
            sides[side] = {k.lower(): v for k, v in answer.headers.items() if k.lower() != "date"}
        assert sides["A"] == sides["B"], sides
        seen.append(sides["A"])
        submitted = requests.post(f"{url}/study/{study}/readers/r1/items/{item['item']}",
                                  headers=reader, timeout=30, json={
                                      "submission_id": uuid.uuid4().hex, "choice": "A",
                                      "scores": {"A": {"q": 3}, "B": {"q": 4}}})
        assert submitted.status_code == 200
    assert all(headers == seen[0] for headers in seen)  # the same on every item, too
    assert "etag" not in seen[0] and "last-modified" not in seen[0]
    assert seen[0]["cache-control"] == "no-store"


def test_a_study_cannot_take_over_another_roles_token(server):
    store = TokenStore()
    colleague = store.add("dr.smith", "radiologist")
    created = _open(server, _definition("dr", readers=["smith"]))
    again = requests.post(f"{server['url']}/study/", timeout=30, data=yaml.safe_dump(
        _definition("dr", readers=["smith"])), headers={"Content-Type": "text/plain",
                                                        **server["coordinator"]})
    assert again.status_code == 409
    info = requests.get(f"{server['url']}/info/", headers=bearer(colleague), timeout=30)
    assert info.status_code == 200  # the radiologist 'dr.smith' still signs in
    names = {i.name: i.role for i in store.identities()}
    assert names["dr.smith"] == "radiologist" and names["reader:dr/smith"] == "reader"
    session = requests.post(f"{server['url']}/study/dr/readers/smith/session", timeout=30,
                            headers=bearer(created["reader_tokens"]["smith"]))
    assert session.status_code == 200


def test_a_forged_log_line_stays_on_the_line_of_the_refusal(server):
    marker = f"FORGED-{uuid.uuid4().hex[:8]}"
    requests.get(f"{server['url']}/x%0a{marker} INFO admin signed in", timeout=30)
    requests.get(f"{server['url']}/x%0d%0a{marker} again", timeout=30)
    lines = [line for line in Path(server["log"]).read_text().splitlines() if marker in line]
    assert len(lines) == 2 and all("refused GET /x\\n" in line or "refused GET /x\\r\\n"
                                   in line for line in lines), lines


def test_answers_are_not_cached_or_sniffed(server):
    for answer in (requests.get(f"{server['url']}/info/", headers=server["radiologist"],
                                timeout=30),
                   requests.get(f"{server['url']}/nowhere", timeout=30)):
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_docker_image_keeps_reader_studies_on_a_volume():
    text = (ROOT / "Dockerfile").read_text()
    root = re.search(r"LDCT_STUDY_ROOT=(\S+)", text)
    volumes = re.search(r"^VOLUME (\[.*\])$", text, re.M)
    assert root and volumes, "LDCT_STUDY_ROOT and a VOLUME line are needed"
    assert root.group(1) in yaml.safe_load(volumes.group(1))
    assert "/data/auth" in yaml.safe_load(volumes.group(1))


def _infer_version(server) -> str:
    answer = requests.post(f"{server['url']}/infer/vagan", headers=server["radiologist"],
                           params={"image": "case0", "output": "json"}, timeout=300)
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()["version"]


def test_a_manifest_that_cannot_be_used_means_the_shipped_weights_and_says_so(server):
    manifest = server["site"] / "vagan" / "versions.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = server["root"] / "elsewhere" / "evil" / "model.pt"  # outside versions/
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(registry.get("vagan").shipped_weights.read_bytes())
    planted = {"in_use": "../../../elsewhere/evil", "versions": {
        "../../../elsewhere/evil": {"sha256": registry.file_sha256(elsewhere)}}}
    for content in ("{not json", json.dumps([1, 2]), json.dumps(planted),
                    json.dumps({"in_use": [], "versions": {}})):  # unhashable: no TypeError
        manifest.write_text(content)
        info = requests.get(f"{server['url']}/info/", headers=server["radiologist"], timeout=60)
        assert info.status_code == 200, info.text[:300]
        vagan = info.json()["models"]["vagan"]["ldct"]
        assert vagan["version"] == "shipped" and "versions.json" in vagan["manifest_error"]
        assert _infer_version(server) == "shipped"
    assert "serving the shipped weights" in Path(server["log"]).read_text()


def test_the_openapi_schema_says_how_to_sign_in(server):
    schema = requests.get(f"{server['url']}/openapi.json", headers=server["radiologist"],
                          timeout=30).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearer": []}]


def test_a_token_file_others_can_read_is_reported(server):
    path = auth_file()
    path.chmod(0o644)
    try:
        assert requests.get(f"{server['url']}/info/", headers=server["radiologist"],
                            timeout=60).status_code == 200
    finally:
        path.chmod(0o600)
    log = Path(server["log"]).read_text()
    assert f"the token file {path} can be read or written by other users (mode 644)" in log


def test_a_creation_stopped_after_its_last_transaction_resumes(tmp_path):
    """A server killed between storing the readers' items and opening the study: the next
    start opens it as it is (main rebuilt it and failed on `UNIQUE constraint failed`)."""
    from ldct.study.definition import parse
    from ldct.study.service import StudyService
    from ldct.study.store import StudyStore

    for k in range(2):
        write_volume(make_phantom(size=32, slices=2, seed=k).volume, tmp_path / f"c{k}.nrrd",
                     dtype="int16")
    data = _definition("Resumed")
    data["cases"] = [{"id": f"c{k}", "image": f"c{k}.nrrd"} for k in range(2)]
    service = StudyService(tmp_path / "studies")
    created = service.create(parse(data, tmp_path))
    store = StudyStore(tmp_path / "studies" / "resumed" / "study.sqlite")
    item = service.next_item("resumed", "r1")
    service.submit("resumed", "r1", item["item"], {"submission_id": "s1", "choice": "B",
                                                   "scores": {"A": {"q": 2}, "B": {"q": 4}}})
    store.set_meta(state="creating")  # as the crash left it
    assert StudyService(tmp_path / "studies").resume_unfinished() == ["resumed"]
    assert store.meta()["state"] == "open"
    again = service.next_item("resumed", "r1")
    assert (again["done"], again["total"]) == (1, created["items"])  # the score is kept
    assert all(Path(p).exists() for p in store.meta()["files"].values())


def test_a_pacs_that_is_down_is_a_502_on_info(tmp_path, tokens):
    port, pacs = free_port(), f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(pacs, port, "--models", "ldct-gauss", "--study-root",
                               str(tmp_path / "reader-studies")), f"{url}/health",
                 tmp_path / "server.log"):
        answer = requests.get(f"{url}/info/", headers=bearer(tokens["radiologist"]),
                              timeout=60)
    assert answer.status_code == 502 and "the PACS did not answer" in answer.text


@pytest.mark.parametrize("seed, expected", [
    ("9" * 5000, "a number in it is too long"),  # past Python's 4300 digits for int()
    (str(2**64), "seed must be a whole number from 0 to 9223372036854775807"),
    ("-1", "seed must be a whole number from 0"),
])
def test_a_seed_out_of_range_is_a_422_naming_the_bound(server, seed, expected):
    text = yaml.safe_dump(_definition("Seeds")).replace("seed: 7", f"seed: {seed}")
    answer = _create(server, text)
    assert answer.status_code == 422 and expected in answer.text, answer.text[:300]
    assert len(answer.content) < 1000


@pytest.mark.parametrize("params, expected", [
    ("[" * 100_000 + "]" * 100_000, "at most 4,096"),
    ("[" * 2000 + "]" * 2000, "deeper than 8 levels"),  # short, but past the JSON parser's stack
    ("[" * 900 + "]" * 900, "deeper than 8 levels"),  # within the parser's stack, not ours
    ('{"client_id": "' + "[" * 3000 + '"}', None),  # brackets inside a string are no nesting
])
def test_params_are_bounded_in_size_and_depth(server, params, expected):
    url = f"{server['url']}/infer/ldct-gauss"
    answer = requests.post(url, params={"image": "case0", "output": "json"}, timeout=120,
                           headers=server["radiologist"], files={"params": (None, params)})
    if expected is None:
        assert answer.status_code == 200, answer.text[:300]
        return
    assert answer.status_code == 422 and expected in answer.text, answer.text[:300]
    served = requests.post(url, params={"image": "case0", "output": "json"}, timeout=120,
                           headers=server["radiologist"], files={"params": (None, "{}")})
    assert served.status_code == 200, served.text[:300]


def _half_sent(url: str, request: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(request)
    return connection


def _answer_then_closed(connection: socket.socket, deadline: float) -> bytes:
    """What the server sent before it closed the connection (recv with a deadline: b'' is
    the close; a socket.timeout means it stayed open)."""
    answer = b""
    with connection:
        while True:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = connection.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def test_half_sent_requests_are_closed_and_the_next_request_is_served(server, tokens):
    auth = f"Authorization: Bearer {tokens['radiologist']}\r\n".encode()
    head = b"POST /infer/ldct-gauss?image=case0 HTTP/1.1\r\nHost: x\r\n" + auth
    kinds = {
        "nothing": b"",
        "half a head": head,
        "half a body": head + b"Content-Type: multipart/form-data; boundary=b\r\n"
                       b"Content-Length: 100000\r\n\r\n--b\r\n" + b"x" * 100,
    }
    opened = {(kind, k): _half_sent(server["url"], sent) for kind, sent in kinds.items()
              for k in range(20)}
    deadline = time.monotonic() + REQUEST_TIMEOUT_S + 30
    for (kind, _), connection in opened.items():
        answer = _answer_then_closed(connection, deadline)  # raises socket.timeout if open
        if kind == "nothing":
            assert answer == b"", answer[:200]  # closed, as an idle keep-alive connection
        else:
            assert answer.startswith(b"HTTP/1.1 408"), (kind, answer[:200])
            assert f"request's {kind.split()[-1]} did not arrive within 4 s".encode() in answer
    health = requests.get(f"{server['url']}/info/", headers=server["radiologist"], timeout=30)
    assert health.status_code == 200

