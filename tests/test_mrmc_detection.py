"""Detection tasks with truth: the definition, blinded reading, the export with truth, and
`ldct study report` / `ldct study plan` on the command line."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import uuid

import pytest

from ldct.cli import main
from ldct.io import write_volume
from ldct.phantom import make_phantom
from ldct.study.analysis import read_scores, write_scores
from ldct.study.definition import StudyDefinitionError, parse
from ldct.study.service import StudyError, StudyService
from ldct.study.synthetic import synthetic_detection_scores, synthetic_scores


def _detection(folder, scale=(0, 100)) -> dict:
    for k in range(3):
        path = folder / f"case{k}.nrrd"
        if not path.exists():
            write_volume(make_phantom(size=96, slices=2, seed=k).volume, path, dtype="int16")
    return {"name": "Lesion study", "seed": 3, "presentation": "single",
            "readers": ["r1", "r2"],
            "cases": [{"id": "c1", "image": "case0.nrrd", "lesion": True,
                       "location": [40, 52, 1]},
                      {"id": "c2", "image": "case1.nrrd", "lesion": False},
                      {"id": "c3", "image": "case2.nrrd", "lesion": True}],
            "conditions": [{"name": "original"},
                           {"name": "smooth", "model": "ldct-gauss", "strength": 1.0}],
            "criteria": [{"name": "lesion", "task": "detection", "scale": list(scale),
                          "question": "Is there a liver lesion?",
                          "anchors": {scale[0]: "surely not", scale[1]: "surely"}},
                         {"name": "noise", "question": "Image noise",
                          "anchors": {1: "severe", 5: "none"}}]}


def test_detection_definition_errors_name_the_field(tmp_path):
    good = _detection(tmp_path)
    assert parse(good).criteria[0].scale == (0, 100)
    cases = good["cases"]
    for change, message in [
            ({"cases": [{"id": "c1", "image": "case0.nrrd"}, *cases[1:]]},
             "lesion: true or false to cases c1"),
            ({"cases": [{**c, "lesion": True} for c in cases]}, "with and without a lesion"),
            ({"cases": [{**cases[1], "location": [1, 2, 3]}]}, "needs lesion: true"),
            ({"cases": [{**cases[0], "lesion": "yes"}]}, "lesion must be true or false"),
            ({"criteria": [{**good["criteria"][0], "scale": [0, 10]}]}, "scale must be one of"),
            ({"criteria": [{**good["criteria"][1], "scale": [0, 100]}]}, "for a likert"),
            ({"criteria": [{**good["criteria"][0], "task": "roc"}]}, "task must be one of"),
            ({"criteria": [{**good["criteria"][0], "anchors": {101: "x"}}]}, "0-100 scale")]:
        with pytest.raises(StudyDefinitionError, match=message):
            parse({**good, **change})


def test_detection_study_is_blind_to_truth_and_exports_it(tmp_path):
    """Readers never see the truth or a condition; ratings are checked against the criterion's
    own scale; the coordinator's export carries task and truth per row, and the stored
    definition keeps the truth (a reader added later gets the same items)."""
    service = StudyService(tmp_path / "studies")
    created = service.create(parse(_detection(tmp_path), tmp_path))
    study, token = created["study"], created["coordinator_token"]
    session = service.session(study, "r1")
    assert session["criteria"][0]["task"] == "detection"
    assert session["criteria"][0]["scale"] == [0, 100]
    seen = json.dumps(session)
    for _ in range(6):
        item = service.next_item(study, "r1")
        seen += json.dumps(item)
        with pytest.raises(StudyError, match=r"lesion\]: each score is an integer 0-100") as err:
            service.submit(study, "r1", item["item"], {"submission_id": "x", "scores": {
                "A": {"lesion": 101, "noise": 3}}})
        assert err.value.status == 422
        with pytest.raises(StudyError, match=r"noise\]: each score is an integer 1-5"):
            service.submit(study, "r1", item["item"], {"submission_id": "x", "scores": {
                "A": {"lesion": 50, "noise": 0}}})
        service.submit(study, "r1", item["item"], {"submission_id": uuid.uuid4().hex,
                                                   "scores": {"A": {"lesion": 0, "noise": 4}}})
    # the opaque random ids (items, volumes: 16+ characters) can hold "c1" or "52" by chance
    shown = re.sub(r"[A-Za-z0-9_-]{16,}", "<id>", seen).lower()
    for hidden in ("truth", "location", "true", "original", "smooth", "ldct-gauss", "c1", "52"):
        assert hidden not in shown, hidden
    assert service.next_item(study, "r1")["finished"]
    rows = service.export_rows(study, token)
    truth = {(r["case"], r["criterion"]): (r["task"], r["truth"]) for r in rows}
    assert truth[("c1", "lesion")] == ("detection", 1)
    assert truth[("c2", "lesion")] == ("detection", 0)
    assert truth[("c3", "lesion")] == ("detection", 1)
    assert truth[("c2", "noise")] == ("likert", "")
    added = service.add_reader(study, "r3")  # parses the stored definition again
    assert added["reader_token"] and service.session(study, "r3")["total"] == 6
    write_scores(rows, tmp_path / "export.csv")
    again = read_scores(tmp_path / "export.csv")
    assert [(r["task"], r["truth"]) for r in again] == [
        (r["task"], r["truth"] if r["truth"] != "" else None) for r in rows]


def test_report_and_plan_on_the_command_line(tmp_path, ldct_command, capsys):
    """`ldct study report` writes mrmc.csv: a model with a known AUC gain (larger lesion
    separation) and a known +1 Likert point is found, one without an effect is not;
    `ldct study plan` reads that mrmc.csv and answers readers x cases."""
    rows = synthetic_scores({"model_better": 1.0, "model_same": 0.0}, readers=5, cases=40,
                            seed=1)
    rows += synthetic_detection_scores({"original": 1.2, "model_better": 2.6,
                                        "model_same": 1.2}, readers=5, cases=60, seed=1)
    write_scores(rows, tmp_path / "export.csv")
    out = tmp_path / "report"
    done = subprocess.run([*ldct_command, "study", "report", str(tmp_path / "export.csv"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(out / "mrmc.csv", newline="") as f:
        table = {(r["criterion"], r["model"]): r for r in csv.DictReader(f)}
    assert {"criterion", "model", "fom_model", "fom_original", "difference", "ci_low",
            "ci_high", "df", "p"} <= set(next(iter(table.values())))
    for criterion in ("lesion", "noise", "sharpness", "confidence"):
        better, same = table[(criterion, "model_better")], table[(criterion, "model_same")]
        assert float(better["p"]) < 0.05 and float(better["ci_low"]) > 0, criterion
        assert float(same["p"]) > 0.05, criterion
        assert float(same["ci_low"]) < 0 < float(same["ci_high"]), criterion
    assert table[("lesion", "model_better")]["fom"] == "AUC (empirical)"
    assert table[("lesion", "model_better")]["covariance"] == "delong"
    assert "## MRMC analysis (primary)" in (out / "report.md").read_text()
    assert main(["study", "plan", str(out / "mrmc.csv"), "--effect", "0.1", "--criterion",
                 "lesion", "--model", "model_better", "--readers", "4-6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4] == "readers,cases,power" and len(lines[-3:]) == 3
    assert main(["study", "plan", str(out / "mrmc.csv"), "--effect", "0.1"]) == 2
    assert "choose one of" in capsys.readouterr().out


def test_mrmc_inputs_pair_scores_by_reader_and_case_by_hand():
    """A hand-made `single` export: reader r2 never scored c3's original, so c3 drops out;
    FOMs by hand over c1, c2: original (2.5 + 3) / 2 = 2.75, model (4 + 5) / 2 = 4.5. With fixed
    cases the OR test of two modalities is the paired t-test of the readers' differences
    (1.5 and 2.0; scipy's ttest_1samp as the key)."""
    from scipy import stats

    from ldct.study.analysis import mrmc_table

    scores = {("r1", "original"): {"c1": 2, "c2": 3, "c3": 4},
              ("r1", "m"): {"c1": 4, "c2": 4, "c3": 5},
              ("r2", "original"): {"c1": 3, "c2": 3},
              ("r2", "m"): {"c1": 5, "c2": 5, "c3": 4}}
    rows = [{"reader": reader, "case": case, "position": 1, "presentation": "single",
             "reference": "original", "condition": condition, "compared_with": "",
             "side": "A", "criterion": "noise", "score": score, "chosen": None,
             "reading_seconds": 1.0, "task": "likert", "truth": None}
            for (reader, condition), cases in scores.items() for case, score in cases.items()]
    (row,) = mrmc_table(rows)
    assert (row["readers"], row["cases"]) == (2, 2)
    assert (row["fom_original"], row["fom_model"]) == (pytest.approx(2.75), pytest.approx(4.5))
    assert row["difference"] == pytest.approx(1.75)
    key = stats.ttest_1samp([1.5, 2.0], 0.0)
    low, high = key.confidence_interval(0.95)
    assert row["fixed_cases_p"] == pytest.approx(key.pvalue, rel=1e-9)
    assert (row["fixed_cases_ci_low"], row["fixed_cases_ci_high"]) == (pytest.approx(low),
                                                                       pytest.approx(high))


def test_plan_from_published_components(tmp_path, capsys):
    """`ldct study plan` from OR components typed in from a publication: Van Dyke's jackknife
    components as MRMCaov prints them ("Fixed Factors": treatment:reader 0.0002004025, Error
    0.0008022883, Cov1 0.0003466137, Cov2 0.0003440748, Cov3 0.0002390284; 114 cases) and the
    observed AUC difference 0.04380032 give RJafroc's published 251 cases for 6 readers and
    163 for 10 (tests/test_mrmc.py quotes them)."""
    pilot = tmp_path / "published.csv"
    pilot.write_text("criterion,model,cases,var_reader,var_treatment_reader,var_error,cov1,cov2,"
                     "cov3\nvandyke,SE MRI,114,0.0015349993,0.0002004025,0.0008022883,"
                     "0.0003466137,0.0003440748,0.0002390284\n")
    assert main(["study", "plan", str(pilot), "--effect", "0.04380032", "--readers",
                 "6-10"]) == 0
    rows = dict(line.split(",")[:2] for line in capsys.readouterr().out.splitlines()
                if line[:1].isdigit())
    assert (rows["6"], rows["10"]) == ("251", "163")
    assert main(["study", "plan", str(pilot), "--effect", "0.05", "--readers", "1-3"]) == 2
    assert "--readers must be a range like 3-15" in capsys.readouterr().out
    for hostile in (["--readers", "2-100000000"], ["--power", "1.5"], ["--alpha", "0"]):
        assert main(["study", "plan", str(pilot), "--effect", "0.05", *hostile]) == 2, hostile
        assert "--" in capsys.readouterr().out  # the message names the option


def _export_with(tmp_path, name: str, column: str, value: str | None) -> str:
    """A real export (3 readers, 4 cases) with ``column`` of its third row set to ``value``
    (None: the row cut short before that column)."""
    rows = synthetic_scores({"m": 1.0}, readers=3, cases=4, seed=2)
    write_scores(rows, tmp_path / "good.csv")
    lines = (tmp_path / "good.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    if value is None:
        cells = cells[:header.index(column)]
    else:
        cells[header.index(column)] = value
    lines[3] = ",".join(cells)
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return str(tmp_path / name)


@pytest.mark.parametrize("action", ["report", "plan"])
@pytest.mark.parametrize("column,value,words", [
    ("score", "nan", "row 3, column 'score': 'nan' is not a whole number"),
    ("score", "4.5", "row 3, column 'score': '4.5' is not a whole number"),
    ("score", "9" * 30, f"row 3, column 'score': '{'9' * 30}' is not a whole number"),
    ("reading_seconds", "nan", "row 3, column 'reading_seconds': 'nan' is not a finite"),
    ("chosen", "yes", "row 3, column 'chosen': 'yes' is not a whole number"),
    ("score", None, "row 3: the row ends before column 'score'")])
def test_a_malformed_score_cell_is_refused_naming_file_row_and_column(
        action, column, value, words, tmp_path, capsys):
    path = _export_with(tmp_path, f"bad_{column}.csv", column, value)
    extra = ["--out", str(tmp_path / "out")] if action == "report" else ["--effect", "0.1"]
    assert main(["study", action, path, *extra]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"bad_{column}.csv, {words}" in out, out
    assert not (tmp_path / "out" / "report.md").exists()


@pytest.mark.parametrize("action", ["report", "plan"])
def test_an_empty_or_headless_export_is_refused(action, tmp_path, capsys):
    """Empty: every required column is named missing; a header alone: zero cases."""
    from ldct.study.analysis import FIELDS

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(FIELDS) + "\n")
    (tmp_path / "no_score.csv").write_text(",".join(f for f in FIELDS if f != "score")
                                           + "\n" + ",".join("1" for f in FIELDS[1:]) + "\n")
    extra = ["--out", str(tmp_path / "out")] if action == "report" else ["--effect", "0.1"]
    for name, words in (("empty.csv", "no column case, chosen"),
                        ("header.csv", "no score rows (zero cases)"),
                        ("no_score.csv", "not a study export: no column score;")):
        assert main(["study", action, str(tmp_path / name), *extra]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert name in out and words in out, (name, out)


def test_plan_refuses_a_pilot_it_cannot_plan_from(tmp_path, capsys):
    """One reader (no MRMC row), and mrmc.csv rows whose case count or components are not
    numbers, or that lack a column: each refused naming the file and the column."""
    rows = [r for r in synthetic_scores({"m": 1.0}, readers=3, cases=4, seed=2)
            if r["reader"] == "reader1"]
    write_scores(rows, tmp_path / "one_reader.csv")
    header = "criterion,model,cases,var_reader,var_treatment_reader,var_error,cov1,cov2,cov3"
    good = ["noise", "m", "50", "0.01", "0.001", "0.002", "0.001", "0.0009", "0.0008"]

    def pilot(name: str, column: str, value: str) -> None:
        cells = list(good)
        cells[header.split(",").index(column)] = value
        (tmp_path / name).write_text(header + "\n" + ",".join(cells) + "\n")

    pilot("nan_cases.csv", "cases", "nan")
    pilot("zero_cases.csv", "cases", "0")
    pilot("nan_error.csv", "var_error", "nan")
    pilot("text_cov2.csv", "cov2", "n/a")
    (tmp_path / "no_cov3.csv").write_text(header.rsplit(",", 1)[0] + "\n"
                                          + ",".join(good[:-1]) + "\n")
    for name, words in (("one_reader.csv", "at least 2 readers and 2 cases"),
                        ("nan_cases.csv", "column 'cases': 'nan' is not a case count"),
                        ("zero_cases.csv", "column 'cases': '0.0' is not a case count"),
                        ("nan_error.csv", "column 'var_error': 'nan' is not a finite number"),
                        ("text_cov2.csv", "column 'cov2': 'n/a' is not a finite number"),
                        ("no_cov3.csv", "an MRMC table without column cov3")):
        assert main(["study", "plan", str(tmp_path / name), "--effect", "0.1"]) == 2, name
        out = " ".join(capsys.readouterr().out.split())
        assert name in out and words in out, (name, out)
