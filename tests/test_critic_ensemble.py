"""Majority vote over critics (tie rules, agreement, member failures), the registry and user plug-ins."""

from __future__ import annotations

import json

import pytest
from critic_support import bash_traj, call, rc, simple_traj, tool_traj, write_store
from typer.testing import CliRunner

from srft.cli import app
from srft.critic import CRITICS
from srft.critic.annotate import annotate_trajectories
from srft.critic.ensemble import vote
from srft.testing.fake_openai import FakeCriticServer, Reply
from srft.registry import RegistryError


def test_vote_majority_and_both_tie_rules():
    assert vote(["good", "mistake", "mistake"], "first_member") == "mistake"
    assert vote(["good", "mistake"], "first_member") == "good"
    assert vote(["recover", "good", "good", "recover"], "first_member") == "recover"
    assert vote(["good", "mistake"], "severity") == "mistake"
    assert vote(["good", "recover", "unnecessary"], "severity") == "unnecessary"


def member(name: str, **options) -> dict:
    return {"name": name, "options": options}


def test_ensemble_votes_per_step_and_records_agreement():
    # heuristic: step 2 is a repeat (unnecessary); echo: every step unnecessary; constant: every step good
    traj = tool_traj([("read", call("read_file", path="a.py"), "x"), ("again", call("read_file", path="a.py"), "x"),
                      ("edit", call("edit_line", path="a.py", line=1, text="y"), "ok")])
    cfg = {"critic": {"name": "ensemble", "options": {"members": [
        member("heuristic"), member("critic_support:build_echo"), member("critic_support:build_constant")]}}}
    result = annotate_trajectories([traj], cfg)
    got = {lab.step: lab for lab in result.labels}
    assert {n: lab.label for n, lab in got.items()} == {1: "good", 2: "unnecessary", 3: "good"}
    assert got[2].reason.startswith("2/3 votes (heuristic, echo)")
    assert got[1].source == "ensemble(heuristic,echo,constant:good)"
    agreement = result.summary["agreement"]
    assert agreement["steps"] == 3 and agreement["unanimous"] == 0
    assert agreement["mean_winner_share"] == pytest.approx(2 / 3)
    pair = agreement["pairwise"]["echo | heuristic"]
    assert pair["steps"] == 3 and pair["agreement"] == pytest.approx(1 / 3)
    assert agreement["pairwise"]["constant:good | heuristic"]["agreement"] == pytest.approx(2 / 3)


def test_ensemble_tie_rule_and_member_failure(tmp_path):
    traj = simple_traj(2, instance="t")
    two = {"members": [member("critic_support:build_constant", label="good"), member("critic_support:build_echo",
                                                                                      label="mistake")]}
    first = annotate_trajectories([traj], {"critic": {"name": "ensemble", "options": two}})
    severe = annotate_trajectories([traj], {"critic": {"name": "ensemble", "options": {**two, "tie": "severity"}}})
    assert {lab.label for lab in first.labels} == {"good"} and {lab.label for lab in severe.labels} == {"mistake"}

    with FakeCriticServer(plan=lambda req: Reply(content="I cannot judge this.")) as server:
        babbler = member("openai", base_url=server.url, model="m", backoff_base_s=0.01)
        three = {"members": [babbler, member("heuristic"), member("critic_support:build_constant", label="good")]}
        kept = annotate_trajectories([traj], {"critic": {"name": "ensemble", "options": three}})
        strict = annotate_trajectories([traj], {"critic": {"name": "ensemble",
                                                           "options": {**three, "min_votes": 3}}})
    [res] = kept.results
    assert res.status == "ok" and "members failed: openai:m" in res.error and len(kept.labels) == 2
    assert kept.labels[0].reason.startswith("2/2 votes")
    assert strict.summary["failed_by_reason"] == {"member_failed": 1} and not strict.labels
    assert [r["member"] for r in strict.results[0].raw] == ["openai:m", "openai:m"]


def test_registry_names_user_paths_and_chat_backend_plugins():
    assert set(CRITICS) == {"heuristic", "openai", "transformers", "ensemble"}
    with pytest.raises(RegistryError, match="unknown critic 'heuristc'; known: ensemble, heuristic"):
        annotate_trajectories([simple_traj(1, instance="x")], {"critic": {"name": "heuristc"}})
    with pytest.raises(RegistryError, match="cannot load critic"):
        annotate_trajectories([simple_traj(1, instance="x")], {"critic": {"name": "no_such_module:build"}})
    # a user ChatBackend gets the whole LLM engine: windows, parsing, cache
    traj = simple_traj(5, instance="e")
    cfg = {"critic": {"name": "critic_support:build_echo"}, "prompt": {"max_window_steps": 2}}
    result = annotate_trajectories([traj], cfg)
    assert result.summary["windows"] == 3 and result.summary["calls"] == 3
    assert {lab.label for lab in result.labels} == {"unnecessary"} and result.labels[0].source == "echo"
    assert result.labels[0].prompt_hash == result.summary["prompt_hash"]


def test_cli_ensemble_routes_member_options(tmp_path):
    traj = bash_traj([("peek", "cat nope.py", rc(1, "cat: nope.py: No such file or directory")),
                      ("find", "find . -name '*.py'", rc(0, "./a.py label@2:good"))])
    store = write_store(tmp_path / "s", [traj])
    with FakeCriticServer() as server:
        out = CliRunner().invoke(app, ["annotate", str(store), "--out", str(tmp_path / "o"), "--critic", "ensemble",
                                       "--member", "openai", "--member", "heuristic", "-o", "tie=severity",
                                       "-o", f"openai.base_url={server.url}", "-o", "openai.model=m",
                                       "-o", "heuristic.rules=[failed]", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["critic"] == "ensemble(openai:m,heuristic)" and data["calls"] == 1
    assert data["labels"] == {"good": 1, "unnecessary": 1, "mistake": 0, "recover": 0}  # tie -> severity
    report = json.loads((tmp_path / "o" / "annotate_report.json").read_text())
    members = report["config"]["critic"]["options"]["members"]
    assert members[0]["options"] == {"base_url": server.url, "model": "m"}
    assert members[1]["options"] == {"rules": ["failed"]}
    assert report["agreement"]["pairwise"]["heuristic | openai:m"]["agreement"] == 0.5
