"""`srft ingest`: real folders against labels.jsonl, a broken-file corpus, outcome joins, exclusions, duplicates."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from srft.cli import app
from srft.formats._spill import SortedSpill
from srft.formats.ingest import IngestError, ingest, run_ingest
from srft.io import read_trajectories

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "trajectories"
FIXTURES = Path(__file__).parent / "fixtures" / "formats"
DEEPSEEK = "mini-swe-agent_deepseek-chat"
GEMINI = "mini-swe-agent_gemini-3-pro-preview_verified"


def _raw_assistant_turns(path: Path) -> int:
    """Assistant turns counted straight from the file, independently of the readers."""
    raw = json.loads(path.read_text())
    if "history" in raw:
        return sum(h["role"] == "assistant" for h in raw["history"])
    return sum(m["role"] == "assistant" for m in raw["messages"]) + (1 if "response" in raw else 0)


@pytest.fixture(scope="module")
def real(traj_dir):
    return ingest([traj_dir])


def test_real_files_match_labels(real, traj_dir):
    """Outcomes joined from the original harness files equal labels.jsonl; steps = assistant turns."""
    expected = {}
    for labels in sorted(traj_dir.glob("*/labels.jsonl")):
        for line in labels.read_text().splitlines():
            row = json.loads(line)
            expected[str(labels.parent / row["file"])] = row["resolved"]
    got = {t.source.path: t for t in real.trajectories}
    assert set(got) == set(expected) and len(got) == 164
    assert {p: t.outcome.resolved for p, t in got.items()} == expected
    for path, traj in got.items():
        assert len(traj.steps) == _raw_assistant_turns(Path(path)), path
        if traj.outcome.resolved is not None:
            assert Path(traj.outcome.source).name != "labels.jsonl"
    # the only files that are not trajectories, reports or companions: our own labels.jsonl
    assert sorted(Path(b["path"]).name for b in real.report["bad"]) == ["labels.jsonl"] * 4
    assert real.report["outcomes"]["conflicts"] == 0
    assert {k: v["count"] for k, v in real.report["companions"].items()} == {
        "exit_statuses": 9, "log": 50, "predictions": 5, "run_metadata": 1}


def test_run_aware_join(real, traj_dir):
    """The same instance in two runs gets each run's own outcome (reports named <model>.<run>.json)."""
    by_run = {Path(t.source.path).parent.name: t for t in real.trajectories
              if t.instance_id == "pylint-dev__astroid-1333"}
    assert by_run["deepseek_chat_dev"].outcome.resolved is False
    assert by_run["deepseek_chat_dev_rerun"].outcome.resolved is True
    rerun_source = by_run["deepseek_chat_dev_rerun"].outcome.source
    assert rerun_source.endswith("deepseek__deepseek-chat.deepseek_chat_dev_rerun.json")
    empty = next(t for t in real.trajectories if t.instance_id == "django__django-11265"
                 and t.source.format == "litellm-log")
    assert empty.outcome.status == "empty_patch" and empty.outcome.resolved is False
    gemini = next(t for t in real.trajectories if t.instance_id == "django__django-11265"
                  and t.source.format == "mini-swe-agent-1")
    assert GEMINI in gemini.outcome.source  # the OpenHands report beside another run does not leak in


def test_reports_given_on_the_command_line_are_run_scoped(traj_dir, results_dir):
    copies = sorted((results_dir / "mini-swe-agent-pr816").glob("*.json"))
    paths = sorted((traj_dir / DEEPSEEK).glob("*/*.traj.json"))
    result = ingest(paths, outcomes=copies)
    rows = [json.loads(line) for line in (traj_dir / DEEPSEEK / "labels.jsonl").read_text().splitlines()]
    labels = {str(traj_dir / DEEPSEEK / row["file"]): row["resolved"] for row in rows}
    assert {t.source.path: t.outcome.resolved for t in result.trajectories} == labels
    assert result.report["skipped"] == 0 and result.report["outcomes"]["conflicts"] == 0


def test_exclude_verified_instances(traj_dir, results_dir):
    verified = results_dir / "derived" / "verified_instance_ids.txt"
    result = ingest([traj_dir / DEEPSEEK], exclude_instances=verified)
    # deepseek_chat_test_1-100 holds the 16 Verified-overlap instances; Lite dev holds none
    assert result.report["excluded"] == 16 and result.report["trajectories"] == 44 - 16
    ids = set(verified.read_text().split())
    assert not any(t.instance_id in ids for t in result.trajectories)
    assert result.report["excluded_instances"]["ids_in_file"] == 500
    assert len(result.report["excluded_instances"]["instances"]) == 16


def test_llm_call_logs_become_one_trajectory(tmp_path):
    calls = EXAMPLES / "openhands_run" / "llm_completions" / "toy__calculator-3"
    result = ingest([calls])
    [traj] = result.trajectories
    assert result.report["llm_calls"] | {"not_prefix": None} == {
        "files": 3, "trajectories": 1, "prefixes": 2, "duplicate_calls": 0, "not_prefix": None,
        "timestamp_disorder": []}
    assert traj.source.path.endswith("1700000003.5.json") and len(traj.steps) == 3
    assert traj.metadata.api_calls == 3 and traj.metadata.cost == pytest.approx(0.006)
    # an abandoned attempt (diverges after the task) is reported, never made into another trajectory
    folder = tmp_path / "toy__calculator-3"
    shutil.copytree(calls, folder)
    first = json.loads(next(iter(sorted(folder.glob("*.json")))).read_text())
    first["response"]["choices"][0]["message"]["content"] = "A different first move."
    first["timestamp"] = 1600000000.0
    (folder / "litellm_proxy__toy-teacher-1600000000.0.json").write_text(json.dumps(first))
    result = ingest([folder])
    assert len(result.trajectories) == 1 and result.trajectories[0].source.path.endswith("1700000003.5.json")
    [abandoned] = result.report["llm_calls"]["not_prefix"]
    assert abandoned["path"].endswith("1600000000.0.json") and "abandoned" in abandoned["reason"]
    # timestamps are not trusted blindly: within one attempt the longest conversation wins, even when its
    # timestamp is not the latest (reported as timestamp_disorder)
    (folder / "litellm_proxy__toy-teacher-1600000000.0.json").unlink()
    last = json.loads((folder / "litellm_proxy__toy-teacher-1700000003.5.json").read_text())
    last["timestamp"] = 1500000000.0
    (folder / "litellm_proxy__toy-teacher-1700000003.5.json").write_text(json.dumps(last))
    result = ingest([folder])
    assert result.trajectories[0].source.path.endswith("1700000003.5.json")
    assert len(result.trajectories[0].steps) == 3 and result.report["llm_calls"]["prefixes"] == 2
    assert result.report["llm_calls"]["timestamp_disorder"][0]["path"].endswith("1700000002.5.json")


def _write_summary(path: Path, resolved: list[str], unresolved: list[str]) -> Path:
    ids = resolved + unresolved
    path.write_text(json.dumps({"schema_version": 2, "completed_ids": ids, "submitted_ids": ids,
                                "resolved_ids": resolved, "unresolved_ids": unresolved, "error_ids": [],
                                "empty_patch_ids": []}))
    return path


def test_duplicates_collapse_and_conflicting_duplicates_are_reported(tmp_path):
    src = EXAMPLES / "mini_run" / "toy__calculator-1.traj.json"
    for run in ("run_a", "run_b"):
        (tmp_path / run).mkdir()
        shutil.copy(src, tmp_path / run / src.name)
    shutil.copy(src, tmp_path / "run_a" / "copy.traj.json")  # same content under another name
    _write_summary(tmp_path / "org__m.run_a.json", ["toy__calculator-1"], [])
    _write_summary(tmp_path / "org__m.run_b.json", [], ["toy__calculator-1"])
    result = ingest([tmp_path])
    [traj] = result.trajectories
    assert result.report["duplicates"] == 2 and result.report["trajectories"] == 1
    [dup] = result.report["duplicate_trajectories"]
    assert dup["kept"] == str(tmp_path / "run_a" / "copy.traj.json") and len(dup["dropped"]) == 2
    assert traj.outcome.resolved is None and "conflict between duplicates" in traj.outcome.detail
    assert result.report["outcomes"]["conflicts"] == 1


def test_row_outcomes_conflicts_and_override(tmp_path):
    rows = FIXTURES / "swe_rebench_openhands.jsonl"  # resolved: encode__httpx-2701 = 1, pallets__click-2800 = 0
    report = _write_summary(tmp_path / "org__model.other.json", ["pallets__click-2800"], ["encode__httpx-2701"])
    kept = ingest([rows], outcomes=[report])
    assert {t.instance_id: t.outcome.resolved for t in kept.trajectories} == {
        "encode__httpx-2701": True, "pallets__click-2800": False}  # the row wins over nothing... and by default
    assert kept.report["outcomes"]["conflicts"] == 2
    assert all("conflict" in t.outcome.detail for t in kept.trajectories)
    over = ingest([rows], outcomes=[report], outcomes_override=True)
    assert {t.instance_id: (t.outcome.resolved, t.outcome.source) for t in over.trajectories} == {
        "encode__httpx-2701": (False, str(report)), "pallets__click-2800": (True, str(report))}
    assert over.report["outcomes"]["overridden"] == 2 and over.report["outcomes"]["conflicts"] == 2
    # two reports that disagree: unknown, never a silent pick
    other = _write_summary(tmp_path / "org__model.third.json", ["pallets__click-2800"], [])
    traj = next(t for t in ingest([EXAMPLES / "dataset"], outcomes=[report, other]).trajectories)
    assert traj.outcome.status != "unknown"  # no report names toy instances: the row stays
    mini = EXAMPLES / "mini_run" / "toy__calculator-2.traj.json"
    a = _write_summary(tmp_path / "org__model.x1.json", ["toy__calculator-2"], [])
    b = _write_summary(tmp_path / "org__model.x2.json", [], ["toy__calculator-2"])
    result = ingest([mini], outcomes=[a, b])
    assert result.trajectories[0].outcome.status == "unknown"
    assert result.report["conflicts"][0]["sources"] == {str(a): "resolved", str(b): "unresolved"}


def _broken_corpus(root: Path, traj_dir: Path) -> dict[str, str]:
    """Real files plus one file (or row) per kind of breakage; returns {name: expected reason fragment}."""
    good = root / "good"
    good.mkdir(parents=True)
    real = sorted((traj_dir / GEMINI).glob("*.traj.json"))[:2]
    for path in real:
        shutil.copy(path, good / path.name)
    shutil.copy(sorted((traj_dir / DEEPSEEK / "deepseek_chat_dev").glob("*.traj.json"))[0], good / "v11.traj.json")
    data = real[0].read_bytes()
    (root / "truncated.traj.json").write_bytes(data[:812])
    (root / "empty.json").write_bytes(b"")
    (root / "junk.json").write_bytes(bytes(range(256)) * 4)
    (root / "shape.json").write_text(json.dumps({"alpha": 1, "beta": [2]}))
    (root / "scalar.json").write_text('"just a string"')
    (root / "no_assistant.json").write_text(json.dumps({"messages": [{"role": "user", "content": "hello"}]}))
    (root / "wrong_types.json").write_text(json.dumps({"messages": [{"role": "user", "content": "x"},
                                                                    {"role": "assistant", "content": {"a": 1}}]}))
    (root / "bad_info.traj.json").write_text(json.dumps({"trajectory_format": "mini-swe-agent-1", "info": [1],
                                                         "messages": [{"role": "assistant", "content": "x"}]}))
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "resolved": True}
    (root / "rows.jsonl").write_text("\n".join([json.dumps(chat), '{"messages": [{"role": "user"', json.dumps(chat | {
        "messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}),
        json.dumps({"messages": "not a list"})]) + "\n")
    (root / "array.json").write_text(json.dumps([1, 2]))
    nebius = [json.loads(line) for line in (FIXTURES / "nebius_swe_agent.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "trajectory"} for r in nebius]),
                   root / "missing_column.parquet")
    (root / "junk.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    os.symlink(root / "does-not-exist.json", root / "unreadable.json")
    (root / ".hidden.json").write_text("{")  # hidden files are ignored and counted, not bad
    for name, text in (("preds.json", json.dumps({"a__b-1": {"model_patch": ""}})), ("exit_statuses_1.yaml", "a: 1\n"),
                       ("metadata.json", '{"agent_class": "X"}'), ("run.log", "log"), ("NOTES.md", "# notes")):
        (root / name).write_text(text)
    return {
        "truncated.traj.json": "truncated JSON: the file ends at byte 812",
        "empty.json": "empty file", "junk.json": "not UTF-8 text (invalid byte at 128)",
        "shape.json": "unknown format: keys alpha, beta", "scalar.json": "expected a JSON object, got str",
        "no_assistant.json": "no assistant message",
        "wrong_types.json": "messages[1].content: expected text or a list of text parts, got dict",
        "bad_info.traj.json": "info: expected an object, got list",
        "rows.jsonl:2": "truncated JSON: the line ends at byte", "rows.jsonl:4": "messages: expected a list",
        "array.json:0": "expected an object per row, got int", "array.json:1": "got int",
        "missing_column.parquet": "unknown format: columns eval_logs, exit_status, generated_patch, instance_id",
        "junk.parquet": "not a readable Parquet file", "unreadable.json": "cannot read",
    }


def test_broken_corpus_skips_and_names_every_bad_file(tmp_path, traj_dir):
    expected = _broken_corpus(tmp_path / "corpus", traj_dir)
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["ingest", str(tmp_path / "corpus"), "--out", str(out), "--json"])
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout)
    assert summary["trajectories"] == 5 and summary["skipped"] == len(expected) == 15  # 3 files + 2 good rows
    got = {Path(b["path"]).name + ("" if b["row"] is None else f":{b['row']}"): b["reason"] for b in summary["bad"]}
    assert set(got) == set(expected)
    for name, fragment in expected.items():
        assert fragment in got[name], (name, got[name])
    report = json.loads((out / "ingest_report.json").read_text())
    assert {k: v["count"] for k, v in report["companions"].items()} == {
        "exit_statuses": 1, "markdown": 1, "log": 1, "predictions": 1, "run_metadata": 1}
    assert report["hidden_files_ignored"] == 1
    assert len(read_trajectories(out)) == 5
    res = runner.invoke(app, ["ingest", str(tmp_path / "corpus"), "--out", str(out), "--json", "--skip-bad"])
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped"] == 15


def test_store_is_sorted_deterministic_and_equals_in_memory(tmp_path):
    first = run_ingest([EXAMPLES], tmp_path / "a")
    run_ingest([EXAMPLES], tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "trajectories.parquet").read_bytes() == (b / "trajectories.parquet").read_bytes()
    report_b = (b / "ingest_report.json").read_text().replace(str(b), str(a))  # the report names its store
    assert (a / "ingest_report.json").read_text() == report_b
    stored = read_trajectories(tmp_path / "a")
    assert [t.id for t in stored] == sorted(t.id for t in stored)
    assert stored == ingest([EXAMPLES]).trajectories and first.trajectories == []


def test_sorted_spill_merges_runs_and_keeps_arrival_order(tmp_path):
    trajs = ingest([EXAMPLES]).trajectories
    spill = SortedSpill(directory=tmp_path, chunk=2)
    for traj in list(reversed(trajs)) + trajs[:2]:
        spill.add(traj)
    merged = list(spill.iter_sorted())
    spill.close()
    assert [t.id for t in merged] == sorted([t.id for t in trajs] + [t.id for t in trajs[:2]])
    assert not list(tmp_path.iterdir())  # temp runs removed


def test_bad_options_fail_before_work(tmp_path):
    with pytest.raises(IngestError, match="--exclude-instances .*cannot read"):
        ingest([EXAMPLES], exclude_instances=tmp_path / "nope.txt")
    not_report = tmp_path / "x.json"
    not_report.write_text("{}")
    with pytest.raises(IngestError, match="--outcomes: .*x.json: not a SWE-bench harness output"):
        ingest([EXAMPLES], outcomes=[not_report])
    res = CliRunner().invoke(app, ["ingest", str(EXAMPLES), "--out", str(tmp_path / "o"), "--format", "nope",
                                   "--json"])
    assert res.exit_code == 2 and "known: litellm-log" in json.loads(res.stdout)["error"]


def test_demo_example_is_self_contained(tmp_path):
    """The built-in examples (`srft ingest examples/trajectories`, no ../shared needed): regular files only,
    nothing outside the repo, all resolved or unresolved by the example's own reports, exit 0."""
    files = [p for p in EXAMPLES.rglob("*") if not p.is_dir()]
    assert files and all(p.is_file() and not p.is_symlink() for p in files)
    for path in files:
        if path.suffix != ".md":
            assert "../" not in path.read_text() and "/work/" not in path.read_text()
    res = CliRunner().invoke(app, ["ingest", str(EXAMPLES), "--out", str(tmp_path / "demo"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert {k: summary[k] for k in ("trajectories", "resolved", "unresolved", "unknown", "skipped", "excluded")} == {
        "trajectories": 5, "resolved": 3, "unresolved": 2, "unknown": 0, "skipped": 0, "excluded": 0}
    assert set(summary["by_format"]) == {"mini-swe-agent-1", "litellm-log", "openai-chat"}
