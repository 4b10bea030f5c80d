"""The browser reader page in real Chromium (Debian's, driven by Playwright) against a real
`ldct serve`: a reader opens the link with their token, scrolls, changes the window, scores
every item, reloads mid-study and resumes; the scores land in the store exactly as the Slicer
panel's client stores them; other tokens see nothing of the study."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import requests
from conftest import bearer, free_port, running, serve_command
from LowDoseCTDenoiseLib import ReaderSession, StudyClient

from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.study.definition import parse
from ldct.study.service import StudyService

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HIDDEN = ("original", "smooth", "ldct-gauss", "lesion\": true", "truth", "case0", "c1")
ANSWER = {"A": {"lesion": 70, "noise": 4}, "B": {"lesion": 30, "noise": 2}}  # and choice A


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two studies on one server: 'Page study' (pairs, a detection criterion on 0-100 and a
    Likert one; readers r1 in the browser, r2 through the Slicer panel's client) and 'Other
    study' (reader x)."""
    folder = tmp_path_factory.mktemp("page-study")
    root = folder / "studies"
    for k in range(3):
        write_volume(make_phantom(size=96, slices=3, seed=k).volume, folder / f"case{k}.nrrd",
                     dtype="int16")
    service = StudyService(root)
    page = service.create(parse({
        "name": "Page study", "seed": 5, "presentation": "pairs", "readers": ["r1", "r2"],
        "window": {"width": 400, "level": 40},
        "cases": [{"id": f"c{k + 1}", "image": f"case{k}.nrrd", "lesion": k != 1}
                  for k in range(3)],
        "conditions": [{"name": "original"}, {"name": "smooth", "model": "ldct-gauss"}],
        "criteria": [{"name": "lesion", "task": "detection", "scale": [0, 100],
                      "question": "Liver lesion?", "anchors": {0: "surely not", 100: "surely"}},
                     {"name": "noise", "question": "Image noise",
                      "anchors": {1: "severe", 5: "none"}}]}, folder))
    other = service.create(parse({
        "name": "Other study", "seed": 1, "presentation": "single", "readers": ["x"],
        "cases": [{"id": "o1", "image": "case0.nrrd"}],
        "conditions": [{"name": "original"}, {"name": "smooth", "model": "ldct-gauss"}],
        "criteria": [{"name": "noise", "question": "Noise", "anchors": {1: "bad"}}]}, folder))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "server.log"
    with running(serve_command(str(folder), port, "--models", "ldct-gauss", "--study-root",
                               str(root)), f"{url}/health", log):
        yield url, page, other["reader_tokens"]["x"], log


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium, headless, with a fresh profile (never `playwright install`)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: scripts/test-servers.sh installs it (apt chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded test machine
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=ARGS, viewport={"width": 1200, "height": 900})
        context.set_default_timeout(60_000)
        yield context
        context.close()


def _canvas_sum(page, side: str) -> int:
    return page.evaluate("""side => {
        const c = document.getElementById('view-' + side);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }""", side)


def _score_item(page) -> None:
    """The ANSWER with sliders, keys 1-5, A and Enter, as a reader would."""
    page.locator("input[name='A:lesion']").fill(str(ANSWER["A"]["lesion"]))
    page.locator("input[name='B:lesion']").fill(str(ANSWER["B"]["lesion"]))
    page.locator("#progress").click()  # focus off the slider (no change)
    for key in ("ArrowRight", "ArrowRight", str(ANSWER["A"]["noise"]), str(ANSWER["B"]["noise"]),
                "a", "Enter"):
        page.keyboard.press(key)


def test_reader_page_scores_resumes_and_stores_as_the_panel(served, browser, tokens):
    from playwright.sync_api import expect

    url, created, other_token, log = served
    token = created["reader_tokens"]["r1"]
    plain = requests.get(f"{url}/study/_reader/", timeout=30)  # the page: no data, no token
    assert plain.status_code == 200 and "Content-Security-Policy" in plain.headers
    assert plain.headers["Referrer-Policy"] == "no-referrer"
    assert requests.get(f"{url}/study/_reader/server.log", timeout=30).status_code == 404
    assert requests.get(f"{url}/study/page-study/readers/r1/next", timeout=30).status_code == 401

    page = browser.new_page()
    texts = []

    def keep(response) -> None:
        if "json" in response.headers.get("content-type", ""):
            texts.append(response.text())

    page.on("response", keep)
    page.goto(f"{url}/study/_reader/#token={token}")
    expect(page.locator("#progress")).to_have_text("Item 1 of 3")
    assert "token" not in page.url  # the fragment is gone from the address bar
    expect(page.locator("#study-name")).to_have_text("Page study")
    expect(page.locator("#window-readout")).to_have_text("W 400 L 40")
    expect(page.locator("#slice-readout")).to_have_text("Slice 2 / 3")
    box = page.locator("#view-A").bounding_box()
    before, other = _canvas_sum(page, "A"), _canvas_sum(page, "B")
    assert before > 0 and other > 0
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)  # scroll over A: both images move one slice
    expect(page.locator("#slice-readout")).to_have_text("Slice 3 / 3")
    assert _canvas_sum(page, "B") != other
    page.keyboard.press("ArrowUp")
    expect(page.locator("#slice-readout")).to_have_text("Slice 2 / 3")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 50, box["y"] + box["height"] / 2 + 20)
    page.mouse.up()  # drag: W +100, L +40
    expect(page.locator("#window-readout")).to_have_text("W 500 L 80")
    assert _canvas_sum(page, "A") != before
    page.get_by_role("button", name="Abdomen W350 L40").click()
    expect(page.locator("#window-readout")).to_have_text("W 350 L 40")
    expect(page.locator("#submit")).to_be_disabled()  # nothing rated yet
    _score_item(page)
    expect(page.locator("#progress")).to_have_text("Item 2 of 3")
    page.reload()  # mid-study: the tab keeps the token, the server the progress
    expect(page.locator("#progress")).to_have_text("Item 2 of 3")
    for number in (2, 3):
        expect(page.locator("#progress")).to_have_text(f"Item {number} of 3")
        _score_item(page)
    expect(page.locator("#finished-text")).to_have_text("All 3 items scored. Thank you.")
    page.remove_listener("response", keep)
    page.close()
    for text in texts:  # nothing the page received names a condition, a case or the truth
        assert not any(name in text for name in HIDDEN), text[:300]
    assert token not in log.read_text()  # the token never reached a log

    panel = ReaderSession(StudyClient(url, token=created["reader_tokens"]["r2"]), "page-study",
                          "r2")
    (log.parent / "panel").mkdir()
    while not panel.finished:
        panel.load_next(log.parent / "panel")
        if panel.item:
            panel.answer(ANSWER, "A")
    export = requests.get(f"{url}/study/page-study/export", headers=bearer(tokens["coordinator"]),
                          timeout=30)
    rows = list(csv.DictReader(io.StringIO(export.text)))
    stored = {reader: sorted((r["case"], r["side"], r["criterion"], r["score"], r["chosen"],
                              r["task"], r["truth"]) for r in rows if r["reader"] == reader)
              for reader in ("r1", "r2")}
    assert len(stored["r1"]) == 12 and stored["r1"] == stored["r2"]
    assert all(float(r["reading_seconds"]) > 0 for r in rows if r["reader"] == "r1")


def test_other_tokens_see_nothing_of_the_study(served, browser):
    from playwright.sync_api import expect

    url, created, other_token, _ = served
    page = browser.new_page()
    page.goto(f"{url}/study/_reader/#token=not-a-token")
    expect(page.locator("#message")).to_contain_text("This token is not accepted")
    assert page.locator("#reader").is_hidden() and _canvas_sum(page, "A") == 0
    page.goto(f"{url}/study/_reader/#token={other_token}")  # a reader of another study
    expect(page.locator("#study-name")).to_have_text("Other study")
    expect(page.locator("#progress")).to_have_text("Item 1 of 2")
    expect(page.locator("#figure-B")).to_be_hidden()  # `single`: one image
    statuses = page.evaluate("""async token => {
        const get = path => fetch(path, {headers: {Authorization: 'Bearer ' + token}})
            .then(r => r.status);
        return [await get('/study/page-study/readers/r1/next'),
                await get('/study/page-study/readers/x/next'),
                await get('/study/page-study/export')]; }""", other_token)
    assert statuses == [403, 403, 403]
    assert "Page study" not in page.content()
    page.close()
