"""SWE-bench harness outputs -> outcomes: the real reports in ../shared, the list precedence, run ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srft.formats.outcomes import (OutcomeFileError, detect_outcome_file, read_outcome_file, read_outcomes,
                                   run_id_from_name)

GEMINI = "mini-swe-agent_gemini-3-pro-preview_verified"
SBCLI = "swe-bench_verified__test__20251118_mini-v1.15.0_gemini-3-pro-preview-20251118.json"
DEEPSEEK = "mini-swe-agent_deepseek-chat"
OPENHANDS = "openhands_codeact_claude-3-5-sonnet_verified50"


def _labels(folder: Path) -> dict[str, bool | None]:
    return {json.loads(line)["instance_id"]: json.loads(line)["resolved"]
            for line in (folder / "labels.jsonl").read_text().splitlines() if line.strip()}


def test_deepseek_run_summaries(traj_dir):
    totals = {}
    for path in sorted((traj_dir / DEEPSEEK).glob("deepseek__deepseek-chat.*.json")):
        report = read_outcome_file(path)
        assert report.kind == "harness_summary" and report.notes == []
        statuses = report.statuses()
        totals[report.run_id] = (sum(s == "resolved" for s in statuses.values()), len(statuses))
        assert all(o.source == str(path) for o in report.outcomes.values())
    # SOURCES.md run totals: dev 8/23, dev_rerun 8/23, lite_dev_noparallel 5/23, test_1-100 61/100
    assert totals == {"deepseek_chat_dev": (8, 23), "deepseek_chat_dev_rerun": (8, 23),
                      "deepseek_lite_dev_noparallel": (5, 23), "deepseek_chat_test_1-100": (61, 100)}


def test_sbcli_report_and_instance_reports_agree(traj_dir):
    sbcli = read_outcome_file(traj_dir / GEMINI / SBCLI)
    assert sbcli.kind == "harness_summary"
    assert sbcli.run_id == "20251118_mini-v1.15.0_gemini-3-pro-preview-20251118"
    assert sum(o.resolved for o in sbcli.outcomes.values()) == 371 and len(sbcli.outcomes) == 500
    [reports] = read_outcomes(traj_dir / GEMINI / "reports")
    assert reports.kind == "instance_reports" and reports.path == str(traj_dir / GEMINI / "reports")
    assert len(reports.outcomes) == 58
    for iid, outcome in reports.outcomes.items():
        assert outcome.status == sbcli.outcomes[iid].status, iid
        assert outcome.source.endswith(f"{iid}/report.json")
    labels = _labels(traj_dir / GEMINI)
    assert {iid: o.resolved for iid, o in reports.outcomes.items()} == labels


def test_openhands_markdown_keeps_the_empty_patch(traj_dir):
    report = read_outcome_file(traj_dir / OPENHANDS / "output.swebench_eval.md")
    assert report.kind == "openhands_md" and report.notes == []
    statuses = report.statuses()
    # listed both under Unresolved and Empty Patch: unresolved, with the reason kept
    assert statuses["django__django-11265"] == "empty_patch"
    assert report.outcomes["django__django-11265"].resolved is False
    assert sum(s == "resolved" for s in statuses.values()) == 26 and len(statuses) == 50
    assert {iid: o.resolved for iid, o in report.outcomes.items()} == _labels(traj_dir / OPENHANDS)


def test_read_outcomes_walks_a_tree(traj_dir):
    reports = read_outcomes(traj_dir)
    kinds = sorted((r.kind, Path(r.path).name) for r in reports)
    assert kinds == sorted([("harness_summary", p.name) for p in (traj_dir / DEEPSEEK).glob("*.json")]
                           + [("harness_summary", SBCLI), ("instance_reports", "reports"),
                              ("openhands_md", "output.swebench_eval.md")])


def test_non_reports_are_not_detected(traj_dir):
    assert detect_outcome_file(traj_dir / DEEPSEEK / "deepseek_chat_dev" / "preds.json") is None
    assert detect_outcome_file(traj_dir / OPENHANDS / "metadata.json") is None
    traj = next((traj_dir / GEMINI).glob("*.traj.json"))
    assert detect_outcome_file(traj) is None
    with pytest.raises(OutcomeFileError, match=r"metadata.json: not a SWE-bench harness output \(keys agent_class"):
        read_outcome_file(traj_dir / OPENHANDS / "metadata.json")


def test_summary_precedence(tmp_path):
    """An id in several lists: resolved > empty_patch > error > unresolved; completed/submitted alone: none."""
    path = tmp_path / "org__model.run7.json"
    path.write_text(json.dumps({
        "schema_version": 2, "completed_ids": ["a__a-1", "b__b-2", "c__c-3", "d__d-4"],
        "submitted_ids": ["a__a-1", "b__b-2", "c__c-3", "d__d-4", "e__e-5"], "incomplete_ids": ["e__e-5"],
        "resolved_ids": ["a__a-1"], "error_ids": ["a__a-1", "c__c-3"], "unresolved_ids": ["b__b-2", "c__c-3"],
        "empty_patch_ids": ["b__b-2"], "resolved_instances": 1, "unresolved_instances": 3}))
    report = read_outcome_file(path)
    assert report.run_id == "run7"
    assert report.statuses() == {"a__a-1": "resolved", "b__b-2": "empty_patch", "c__c-3": "error"}
    assert [o.resolved for o in report.outcomes.values()] == [True, False, False]
    assert report.outcomes["a__a-1"].detail == "also listed as error"
    assert any("a__a-1: listed as resolved, error" in n for n in report.notes)
    assert any("unresolved_instances = 3 but unresolved_ids lists 2" in n for n in report.notes)


def test_instance_report_shapes(tmp_path):
    flat = tmp_path / "run" / "x__y-1" / "report.json"
    flat.parent.mkdir(parents=True)
    flat.write_text(json.dumps({"patch_is_None": True, "patch_exists": False, "patch_successfully_applied": False,
                                "resolved": False, "tests_status": {}}))
    keyed = tmp_path / "run" / "x__y-2" / "report.json"
    keyed.parent.mkdir()
    keyed.write_text(json.dumps({"x__y-2": {"patch_is_None": False, "patch_exists": True,
                                            "patch_successfully_applied": False, "resolved": False}}))
    assert read_outcome_file(flat).statuses() == {"x__y-1": "empty_patch"}
    assert read_outcome_file(keyed).statuses() == {"x__y-2": "error"}
    [merged] = read_outcomes(tmp_path / "run")
    assert merged.path == str(tmp_path / "run") and merged.statuses() == {"x__y-1": "empty_patch", "x__y-2": "error"}


def test_broken_reports_name_the_file(tmp_path):
    bad = tmp_path / "org__m.r1.json"
    bad.write_text('{"schema_version": 2, "resolved_ids": ["a"')
    with pytest.raises(OutcomeFileError, match=r"org__m.r1.json: truncated JSON: the file ends at byte 42"):
        read_outcome_file(bad)
    wrong = tmp_path / "org__m.r2.json"
    wrong.write_text(json.dumps({"schema_version": 2, "resolved_ids": [1], "completed_ids": []}))
    with pytest.raises(OutcomeFileError, match="r2.json: resolved list holds a non-string id 1"):
        read_outcome_file(wrong)
    with pytest.raises(OutcomeFileError, match="no such file"):
        read_outcomes(tmp_path / "missing")


@pytest.mark.parametrize("name, kind, run_id", [
    ("deepseek__deepseek-chat.deepseek_chat_dev.json", "harness_summary", "deepseek_chat_dev"),
    ("swe-bench_lite__dev__my.run.v2.json", "harness_summary", "my.run.v2"),
    ("openai__gpt-4o.2024-run.json", "harness_summary", "2024-run"),
    ("logs/run_evaluation/run42/gpt/django__django-1/report.json", "instance_reports", "run42"),
    ("reports/django__django-1/report.json", "instance_reports", None),
])
def test_run_id_from_name(name, kind, run_id):
    assert run_id_from_name(Path(name), kind) == run_id
