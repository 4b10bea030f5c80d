"""A security reviewer's probes against a real `ldct serve` on 127.0.0.1, each refused.

The server starts as a site starts it: an empty token file (so it makes and prints the admin
token), a datastore folder, a site-models folder where a pickle has been planted as a model
version, and one web viewer origin allowed for CORS.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch
import yaml
from conftest import bearer, free_port, running, serve_command

from ldct import registry
from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.infer import load_network
from ldct.io import write_volume
from ldct.phantom import make_phantom

VIEWER = "http://viewer.hospital.example"
EVIL = "http://evil.example"
TOKEN_LINE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


class _Canary:
    """Unpickling this creates a file: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _plant(path: Path, canary: Path) -> None:
    path.parent.mkdir(parents=True)
    torch.save({"kwargs": {}, "state_dict": _Canary(canary)}, path)


def _env(auth: Path) -> dict[str, str]:
    return {**os.environ, AUTH_FILE_ENV: str(auth)}


def _token_add(auth: Path, name: str, role: str) -> str:
    """`ldct token add NAME --role ROLE`: the token is the last line of stdout."""
    done = subprocess.run([sys.executable, "-m", "ldct.cli", "token", "add", name, "--role", role],
                          capture_output=True, text=True, env=_env(auth), check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("secured")
    studies = root / "studies"
    studies.mkdir()
    for k in range(2):
        write_volume(make_phantom(size=128, slices=2, seed=k).volume, studies / f"case{k}.nrrd",
                     dtype="int16")
    site = root / "site"
    canary = root / "canary"
    _plant(site / "vagan" / "versions" / "zzzz" / "model.pt", canary)
    auth = root / "tokens.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    command = serve_command(str(studies), port, "--models", "vagan,ldct-gauss", "--study-root",
                            str(root / "reader-studies"), "--cors-origin", VIEWER)
    with running(command, f"{url}/health", log,
                 env={AUTH_FILE_ENV: str(auth), registry.SITE_MODELS_ENV: str(site)}):
        printed = [line for line in log.read_text().splitlines() if TOKEN_LINE.match(line)]
        assert len(printed) == 1, "the first start prints exactly one admin token"
        tokens = {"admin": printed[0]}
        for role in ("radiologist", "coordinator"):
            tokens[role] = _token_add(auth, f"probe-{role}", role)
        yield {"url": url, "root": root, "auth": auth, "tokens": tokens, "canary": canary,
               "site": site, "studies": studies}


@pytest.fixture(scope="module")
def study(secured):
    """A pairs study of two datastore cases, three conditions, readers r1 and r2."""
    url, tokens = secured["url"], secured["tokens"]
    definition = {
        "name": "Probe study", "seed": 3, "presentation": "pairs", "readers": ["r1", "r2"],
        "cases": [{"id": "c1", "datastore": "case0"}, {"id": "c2", "datastore": "case1"}],
        "conditions": [{"name": "original"}, {"name": "smooth", "model": "ldct-gauss"},
                       {"name": "half", "model": "ldct-gauss", "strength": 0.5}],
        "criteria": [{"name": "noise", "question": "Noise", "anchors": {1: "bad", 5: "good"}}]}
    auth = bearer(tokens["coordinator"])
    created = requests.post(f"{url}/study/", data=yaml.safe_dump(definition), timeout=30,
                            headers={"Content-Type": "text/plain", **auth})
    assert created.status_code == 200, created.text
    created = created.json()
    deadline = time.monotonic() + 120
    while requests.get(f"{url}/study/{created['study']}/status", headers=auth,
                       timeout=30).json()["state"] != "open":
        assert time.monotonic() < deadline, "study not ready in 120 s"
        time.sleep(0.2)  # polling the preparation, not synchronization
    return created


def _openapi_routes(url: str, token: str) -> list[tuple[str, str]]:
    paths = requests.get(f"{url}/openapi.json", headers=bearer(token), timeout=30).json()["paths"]
    return [(method.upper(), path) for path, methods in paths.items() for method in methods]


def test_anonymous_requests_are_refused_on_every_route_but_health(secured):
    url, tokens = secured["url"], secured["tokens"]
    health = requests.get(f"{url}/health", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    routes = _openapi_routes(url, tokens["admin"])
    assert len(routes) >= 12
    hidden = [("POST", "/reload"), ("GET", "/logs/"), ("GET", "/proxy/dicom/qido/studies"),
              ("PUT", "/datastore/image"), ("DELETE", "/datastore/"), ("GET", "/docs"),
              ("GET", "/"), ("POST", "/activelearning/random"), ("POST", "/session/"),
              ("PUT", "/model/vagan")]
    for method, path in routes + hidden + [("GET", "/openapi.json")]:
        concrete = re.sub(r"\{\w+\}", "x", path)
        answer = requests.request(method, url + concrete, timeout=30)
        assert answer.status_code == 401, (method, path, answer.status_code)
        assert answer.headers["www-authenticate"] == "Bearer"
        wrong = requests.request(method, url + concrete, headers=bearer("not-a-token"),
                                 timeout=30)
        assert wrong.status_code == 401, (method, path)
    for method, path in hidden:  # gone, whatever the role
        answer = requests.request(method, url + path, headers=bearer(tokens["admin"]),
                                  timeout=30)
        assert answer.status_code == 404, (method, path, answer.status_code)


def test_traversal_and_absolute_ids_write_nothing(secured, study, tmp_path):
    """Every id a served route takes, given as a traversal or an absolute path: refused with
    404/422 and nothing is read or written outside the server's own folders. A study database
    planted one level above the study root (where `..` would lead) is never opened. MONAI
    Label's datastore write routes, which joined such ids onto its folder, are not served."""
    url, root = secured["url"], secured["root"]
    tokens = secured["tokens"]
    admin, coordinator = bearer(tokens["admin"]), bearer(tokens["coordinator"])
    studies = root / "reader-studies"
    planted = root / "study.sqlite"  # what /study/../... would open
    copy = (studies / study["study"] / "study.sqlite").read_bytes()
    planted.write_bytes(copy)
    target = tmp_path / "planted.py"
    payload = {"file": ("x.nrrd", b"print('owned')")}
    before = sorted(p for p in root.rglob("*") if "reader-studies" not in p.parts)
    probes = [
        ("PUT", "/datastore/image", {"image": str(target)}, admin, 404),
        ("PUT", "/datastore/image", {"image": "../../" + target.name}, admin, 404),
        ("PUT", "/datastore/label", {"label": "case0", "tag": f"../../{target.name}"}, admin,
         404),
        ("POST", "/infer/ldct-gauss", {"image": str(secured["studies"] / "case0.nrrd")}, admin,
         404),
        ("POST", "/infer/ldct-gauss", {"image": "../studies/case0"}, admin, 404),
        ("POST", "/infer/ldct-gauss", {"image": "%2E%2E%2Fstudies%2Fcase0"}, admin, 404),
        ("POST", "/infer/%2E%2E", {"image": "case0"}, admin, 404),
        ("POST", "/train/%2E%2E", {}, admin, 404),
        ("GET", "/jobs/%2E%2E", {}, admin, 404),
        ("GET", "/study/%2E%2E/status", {}, coordinator, 404),
        ("GET", "/study/%2E%2E/export", {}, coordinator, 404),
        ("POST", "/study/%2E%2E/close", {}, coordinator, 404),
        ("GET", f"/study/{study['study']}/volumes/%2E%2E", {}, coordinator, 404),
        ("GET", f"/study/{study['study']}/volumes/{planted}", {}, coordinator, 404),
    ]
    for method, path, params, headers, status in probes:
        answer = requests.request(method, url + path, params=params, headers=headers,
                                  files=payload if method == "PUT" else None, timeout=30)
        assert answer.status_code == status, (method, path, params, answer.status_code,
                                              answer.text)
        assert "Probe study" not in answer.text  # the planted study was never read
    assert not target.exists()
    after = sorted(p for p in root.rglob("*") if "reader-studies" not in p.parts)
    assert after == before, set(after) ^ set(before)
    assert planted.read_bytes() == copy  # never opened for writing (close would change it)
    assert sorted(p.name for p in secured["studies"].glob("*.nrrd")) == ["case0.nrrd",
                                                                         "case1.nrrd"]


def test_a_planted_pickle_never_runs_and_is_not_served(secured, tmp_path):
    url, radiologist = secured["url"], bearer(secured["tokens"]["radiologist"])
    answer = requests.post(f"{url}/infer/vagan", params={"image": "case0", "output": "json"},
                           headers=radiologist, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "shipped"
    info = requests.get(f"{url}/info/", headers=radiologist, timeout=30).json()
    assert info["models"]["vagan"]["ldct"]["version"] == "shipped"
    assert "8 convs" in " ".join(info["models"]["vagan"]["ldct"]["differences_from_paper"])
    assert not secured["canary"].exists()
    # the loader itself refuses a pickle even when pointed straight at it
    canary = tmp_path / "canary"
    _plant(tmp_path / "evil" / "model.pt", canary)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_network("vagan", "cpu", str(tmp_path / "evil" / "model.pt"))
    assert not canary.exists()


def test_a_recorded_version_is_served_only_while_its_hash_holds(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.SITE_MODELS_ENV, str(tmp_path))
    info = registry.get("vagan")
    version = info.versions_dir / "20260101-000000-000000"
    version.mkdir(parents=True)
    (version / "model.pt").write_bytes(info.shipped_weights.read_bytes())
    (info.versions_dir / "zzzz").mkdir()
    (info.versions_dir / "zzzz" / "model.pt").write_bytes(b"planted")
    info.record_version(version, {"steps": 0})
    assert info.weights == version / "model.pt" and info.version() == version.name
    assert info.versions() == [version]  # the planted folder is not a version
    info.use("shipped")  # roll back
    assert info.weights == info.shipped_weights
    with pytest.raises(ValueError, match="no version 'zzzz'"):
        info.use("zzzz")
    info.use(version.name)
    (version / "model.pt").write_bytes(info.shipped_weights.read_bytes() + b"\0")  # tampered
    assert info.weights == info.shipped_weights


def test_only_an_admin_fine_tunes(secured):
    url, tokens = secured["url"], secured["tokens"]
    for headers, status in [({}, 401), (bearer(tokens["radiologist"]), 403),
                            (bearer(tokens["coordinator"]), 403)]:
        answer = requests.post(f"{url}/train/vagan", json={"steps": 1}, headers=headers,
                               timeout=30)
        assert answer.status_code == status
    limits = requests.post(f"{url}/train/vagan", json={"steps": 10**6},
                           headers=bearer(tokens["admin"]), timeout=30)
    assert limits.status_code == 422 and "steps must be a whole number" in limits.text
    info = requests.get(f"{url}/info/", headers=bearer(tokens["radiologist"]), timeout=30)
    assert info.json()["models"]["vagan"]["ldct"]["version"] == "shipped"


def test_no_client_path_reaches_the_disk(secured):
    url, radiologist = secured["url"], bearer(secured["tokens"]["radiologist"])
    server_file = str(secured["studies"] / "case0.nrrd")
    for params, form, status in [({"image": server_file}, {}, 404),
                                 ({"image": "../studies/case0"}, {}, 404),
                                 ({"image": "no-such-id"}, {}, 404),
                                 ({"image": "case0"}, {"params": f'{{"image": "{server_file}"}}'},
                                  422)]:
        answer = requests.post(f"{url}/infer/ldct-gauss", params=params, data=form,
                               headers=radiologist, timeout=30)
        assert answer.status_code == status, (params, answer.text)


def test_study_cases_with_server_paths_or_foreign_urls_are_refused(secured):
    url, coordinator = secured["url"], bearer(secured["tokens"]["coordinator"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    foreign = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    base = {"name": "Sneaky", "seed": 1, "presentation": "single", "readers": ["r1"],
            "conditions": [{"name": "original"}],
            "criteria": [{"name": "q", "question": "Q", "anchors": {1: "a", 5: "b"}}]}
    for case in [{"id": "a", "image": str(secured["studies"] / "case0.nrrd")},
                 {"id": "b", "dicomweb": {"url": foreign, "study": "1.2", "series": "1.3"}},
                 {"id": "c", "datastore": "../studies/case0"}]:
        answer = requests.post(f"{url}/study/", data=yaml.safe_dump({**base, "cases": [case]}),
                               headers={"Content-Type": "text/plain", **coordinator}, timeout=30)
        assert answer.status_code == 422, (case, answer.text)
    unknown_model = {**base, "cases": [{"id": "a", "datastore": "case0"}],
                     "conditions": [{"name": "original"}, {"name": "x", "model": "nope"}]}
    answer = requests.post(f"{url}/study/", data=yaml.safe_dump(unknown_model),
                           headers={"Content-Type": "text/plain", **coordinator}, timeout=30)
    assert answer.status_code == 422 and "no model 'nope'" in answer.text
    ready, _, _ = select.select([listener], [], [], 0)  # refused before any work started
    assert ready == [], "the server contacted the client's URL"
    listener.close()
    assert not (secured["root"] / "reader-studies" / "sneaky").exists()


def test_a_reader_reaches_only_their_own_items(secured, study):
    url = secured["url"]
    name, r1, r2 = study["study"], study["reader_tokens"]["r1"], study["reader_tokens"]["r2"]
    base = f"{url}/study/{name}/readers"
    other = requests.get(f"{base}/r2/next", headers=bearer(r1), timeout=30)
    unknown = requests.get(f"{base}/nobody/next", headers=bearer(r1), timeout=30)
    assert other.status_code == unknown.status_code == 403
    assert (other.json()["detail"].replace("r2", "?")
            == unknown.json()["detail"].replace("nobody", "?"))
    item = requests.get(f"{base}/r2/next", headers=bearer(r2), timeout=30).json()
    answer = {"submission_id": "forged", "choice": "A",
              "scores": {s: {"noise": 1} for s in item["volumes"]}}
    forged = requests.post(f"{base}/r2/items/{item['item']}", json=answer, headers=bearer(r1),
                           timeout=30)
    assert forged.status_code == 403
    for path in item["volumes"].values():  # r2's volumes are not r1's to fetch
        assert requests.get(url + path, headers=bearer(r1), timeout=30).status_code == 404
    own = requests.post(f"{base}/r2/items/{item['item']}", headers=bearer(r2), timeout=30,
                        json={**answer, "submission_id": "real", "scores": {
                            s: {"noise": 4} for s in item["volumes"]}})
    assert own.status_code == 200 and own.json()["acknowledged"]
    listed = requests.get(f"{url}/study/", headers=bearer(r1), timeout=30).json()
    assert [s["study"] for s in listed] == [name]
    status = requests.get(f"{url}/study/{name}/status", headers=bearer(r1), timeout=30)
    assert status.status_code == 403


def test_blinding_every_side_has_its_own_token_and_the_same_size(secured, study):
    url, name = secured["url"], study["study"]
    tokens, sizes = [], []
    for reader in ("r1", "r2"):
        auth = bearer(study["reader_tokens"][reader])
        base = f"{url}/study/{name}/readers/{reader}"
        requests.post(f"{base}/session", headers=auth, timeout=30)
        while not (item := requests.get(f"{base}/next", headers=auth, timeout=30).json()
                   )["finished"]:
            pair = {}
            for side, path in item["volumes"].items():
                tokens.append(path.rsplit("/", 1)[1])
                volume = requests.get(url + path, headers=auth, timeout=30)
                assert volume.status_code == 200
                pair[side] = (len(volume.content), volume.headers["content-length"])
            sizes.append(pair)
            requests.post(f"{base}/items/{item['item']}", headers=auth, timeout=30, json={
                "submission_id": item["item"], "choice": "A",
                "scores": {s: {"noise": 3} for s in item["volumes"]}})
    assert len(tokens) >= 14 and len(set(tokens)) == len(tokens)  # no token recurs
    assert all(pair["A"] == pair["B"] for pair in sizes)


def test_cors_answers_only_the_listed_origin(secured):
    url, token = secured["url"], secured["tokens"]["radiologist"]
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    evil = requests.options(f"{url}/info/", headers={"Origin": EVIL, **preflight}, timeout=30)
    assert "access-control-allow-origin" not in evil.headers
    viewer = requests.options(f"{url}/info/", headers={"Origin": VIEWER, **preflight},
                              timeout=30)
    assert viewer.headers.get("access-control-allow-origin") == VIEWER
    assert "access-control-allow-credentials" not in viewer.headers
    simple = requests.get(f"{url}/info/", headers={"Origin": EVIL, **bearer(token)}, timeout=30)
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


# What each role may call, written from the README's Security section and DESIGN.md 9 (not
# from the allow-list in ldct/access.py): radiologist - info, datastore, denoising and its
# jobs (the Slicer workflow); coordinator - info, datastore, create/follow/close/export
# studies; admin - all of that and fine-tuning, but never a reader's own routes (a score is
# the reader's); reader - only their own study's items and volumes, the study list; no token
# - 401 everywhere. Where a role is allowed, the call is made harmless and its answer is the
# route's own: 200, or 404 for an id that exists nowhere / 422 for a malformed body (a 404
# there must be the route's, never the guard's "not served"). "S" is the probe study, on
# which r1 holds the reader token.
ROLES = ("anonymous", "radiologist", "coordinator", "admin", "reader")
ROLE_TABLE = [
    # method, path,                                  anon rad  coord admin reader
    ("GET", "/openapi.json",                          401, 200, 200, 200, 200),
    ("GET", "/info/",                                 401, 200, 200, 200, 403),
    ("GET", "/datastore/",                            401, 200, 200, 200, 403),
    ("GET", "/datastore/no-such-image/dicom",         401, 404, 403, 404, 403),
    ("POST", "/infer/nonexistent",                    401, 404, 403, 404, 403),
    ("GET", "/jobs/",                                 401, 200, 403, 200, 403),
    ("GET", "/jobs/no-such-job",                      401, 404, 403, 404, 403),
    ("DELETE", "/jobs/no-such-job",                   401, 404, 403, 404, 403),
    ("GET", "/train/",                                401, 403, 403, 200, 403),
    ("POST", "/train/nonexistent",                    401, 403, 403, 404, 403),
    ("GET", "/study/",                                401, 403, 200, 200, 200),
    ("POST", "/study/",                               401, 403, 422, 422, 403),
    ("POST", "/study/S/readers/r1/session",           401, 403, 403, 403, 200),
    ("GET", "/study/S/readers/r1/next",               401, 403, 403, 403, 200),
    ("POST", "/study/S/readers/r1/items/no-such-item", 401, 403, 403, 403, 404),
    ("GET", "/study/S/volumes/no-such-volume",        401, 403, 404, 404, 404),
    ("GET", "/study/S/status",                        401, 403, 200, 200, 403),
    ("POST", "/study/no-such-study/close",            401, 403, 404, 404, 403),
    ("GET", "/study/S/export",                        401, 403, 200, 200, 403),
]


def test_each_role_reaches_exactly_its_routes(secured, study):
    """Every served route, called by every role and without a token, answers the status the
    table above gives; the table covers every route the server's schema lists."""
    url = secured["url"]
    callers = {**secured["tokens"], "reader": study["reader_tokens"]["r1"]}
    served = {(method, re.sub(r"\{\w+\}", "{}", path))
              for method, path in _openapi_routes(url, callers["admin"])} | {
                  ("GET", "/openapi.json")}  # the schema does not list itself
    tabled = {(method, re.sub(r"/(S|r1|no-such-[a-z]+|nonexistent)(?=/|$)", "/{}", path))
              for method, path, *_ in ROLE_TABLE}
    assert served == tabled, "routes served but not in the table (or gone): " + str(
        served ^ tabled)
    wrong = []
    for method, path, *expected in ROLE_TABLE:
        concrete = path.replace("/S/", f"/{study['study']}/")
        body = {"data": "name: [", "headers": {"Content-Type": "text/plain"}} if (
            method, path) == ("POST", "/study/") else {"json": {}} if method == "POST" else {}
        for role, status in zip(ROLES, expected):
            headers = {**body.get("headers", {}),
                       **(bearer(callers[role]) if role != "anonymous" else {})}
            answer = requests.request(method, url + concrete, timeout=30, headers=headers,
                                      **{k: v for k, v in body.items() if k != "headers"})
            detail = answer.json().get("detail", "") if "json" in answer.headers.get(
                "content-type", "") and isinstance(answer.json(), dict) else ""
            if answer.status_code != status or (status == 404 and "not served" in str(detail)):
                wrong.append((role, method, path, status, answer.status_code, detail))
    assert not wrong, "\n".join(map(str, wrong))


def test_tokens_are_hashed_and_revocable(secured):
    url, auth = secured["url"], secured["auth"]
    token = _token_add(auth, "short-lived", "radiologist")
    assert token not in auth.read_text()  # only its hash is stored
    assert requests.get(f"{url}/info/", headers=bearer(token), timeout=30).status_code == 200
    subprocess.run([sys.executable, "-m", "ldct.cli", "token", "revoke", "short-lived"],
                   env=_env(auth), check=True, capture_output=True)
    assert requests.get(f"{url}/info/", headers=bearer(token), timeout=30).status_code == 401
    names = {i.name: i.role for i in TokenStore(auth).identities()}
    assert names["admin"] == "admin" and "short-lived" not in names


def test_insecure_mode_is_loopback_only_and_says_so(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with running(serve_command(str(tmp_path), port, "--models", "ldct-gauss",
                               "--insecure-no-auth"), f"{url}/health", log):
        assert requests.get(f"{url}/info/", timeout=30).status_code == 200  # no token needed
        assert requests.get(f"{url}/logs/", timeout=30).status_code == 404  # still closed
    assert "WARNING: --insecure-no-auth" in log.read_text()


def test_no_insecure_server_off_loopback(tmp_path):
    port = free_port()
    done = subprocess.run(serve_command(str(tmp_path), port, "--host", "0.0.0.0",
                                        "--insecure-no-auth"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "loopback address only" in done.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
