"""Readers: each format maps exactly onto the canonical model (messages, steps, thought/action, flags, metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srft.formats import FORMATS, Bad, detect, read_file, reader, scan_file
from srft.io import read_trajectories, write_trajectories
from srft.registry import RegistryError

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
GEMINI = "mini-swe-agent_gemini-3-pro-preview_verified"
DEEPSEEK = "mini-swe-agent_deepseek-chat/deepseek_chat_dev"
OPENHANDS = "openhands_codeact_claude-3-5-sonnet_verified50/llm_completions"
SWE_AGENT = "swe-agent_traj"


def _one(path, **kw):
    result = read_file(path, **kw)
    assert result.bad == [] and len(result.trajectories) == 1, result.bad
    return result.trajectories[0]


# -- real files ------------------------------------------------------------------------------------------

def test_mini_swe_agent_v1_thought_action_and_format_errors(traj_dir):
    path = traj_dir / GEMINI / "astropy__astropy-13033.traj.json"
    raw = json.loads(path.read_text())
    traj = _one(path)
    assert traj.source.format == "mini-swe-agent-1" and traj.instance_id == "astropy__astropy-13033"
    assert traj.repo == "astropy/astropy"
    assert len(traj.steps) == sum(m["role"] == "assistant" for m in raw["messages"])
    first = traj.steps[0]
    content = raw["messages"][first.message_index]["content"]
    assert content.startswith("THOUGHT: ") and f"```bash\n{first.action}\n```" in content
    assert first.thought == content[len("THOUGHT: "):content.index("```bash")].strip()  # the label is removed
    # message 54 has two fenced blocks: the scaffold rejected it, so that step has no action
    rejected = next(s for s in traj.steps if s.message_index == 54)
    assert rejected.action == "" and "```" in rejected.thought
    assert traj.messages[rejected.observation_indices[0]].content.startswith("Please always provide EXACTLY ONE")
    assert traj.metadata.model == "google/gemini-3-pro-preview" and traj.metadata.exit_status == "Submitted"
    assert traj.metadata.api_calls == raw["info"]["model_stats"]["api_calls"]
    assert traj.metadata.submission == raw["info"]["submission"]
    assert traj.steps[-1].final and not any(s.final for s in traj.steps[:-1])


def test_mini_swe_agent_v11_tool_calls_and_exit_message(traj_dir):
    path = traj_dir / DEEPSEEK / "pydicom__pydicom-901.traj.json"
    raw = json.loads(path.read_text())
    traj = _one(path)
    assert traj.source.format == "mini-swe-agent-1.1"
    assert all(m.role != "exit" for m in traj.messages)  # the exit record is metadata, not chat
    assert len(traj.messages) == len(raw["messages"]) - 1
    assert traj.metadata.exit_status == raw["messages"][-1]["extra"]["exit_status"] == "Submitted"
    assert traj.metadata.submission == raw["info"]["submission"]
    step = traj.steps[0]
    call = traj.messages[step.message_index].tool_calls[0]
    assert call.id == raw["messages"][2]["tool_calls"][0]["id"]
    assert call.function.arguments == raw["messages"][2]["tool_calls"][0]["function"]["arguments"]  # JSON string kept
    assert step.action == json.loads(call.function.arguments)["command"]
    tool = traj.messages[step.observation_indices[0]]
    assert tool.role == "tool" and tool.tool_call_id == call.id
    assert traj.steps[-1].action.startswith("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
    assert traj.steps[-1].observation_indices == []


def test_litellm_log_appends_the_response(traj_dir):
    path = next((traj_dir / OPENHANDS / "astropy__astropy-12907").glob("*.json"))
    raw = json.loads(path.read_text())
    traj = _one(path)
    assert traj.source.format == "litellm-log" and traj.instance_id == "astropy__astropy-12907"  # from the folder
    assert len(traj.messages) == len(raw["messages"]) + 1
    assert traj.messages[0].content == raw["messages"][0]["content"][0]["text"]  # list of parts -> text
    last = traj.messages[-1]
    response = raw["response"]["choices"][0]["message"]
    assert last.role == "assistant" and last.content == response["content"]
    assert last.tool_calls[0].function.name == "finish"
    assert [t["function"]["name"] for t in traj.tools] == ["execute_bash", "finish", "str_replace_editor"]
    assert len(traj.steps) == sum(m["role"] == "assistant" for m in raw["messages"]) + 1
    null_content = [i for i, m in enumerate(raw["messages"]) if m["role"] == "assistant" and m.get("content") is None]
    assert all(traj.messages[i].content == "" for i in null_content)


def test_swe_agent_traj_variants(traj_dir):
    v1 = _one(next((traj_dir / SWE_AGENT).glob("gpt4__swe-agent-test-repo__*/*.traj")))
    assert v1.source.format == "swe-agent-traj" and v1.metadata.extra["variant"] == "v1"
    assert v1.metadata.model == "gpt-4o" and v1.metadata.exit_status == "submitted"
    assert [s.action for s in v1.steps][:2] == ["find_file missing_colon.py",
                                                'open "/SWE-agent__test-repo/tests/missing_colon.py"']
    tool = v1.messages[v1.steps[0].observation_indices[0]]
    assert tool.role == "tool" and tool.tool_call_id == v1.messages[v1.steps[0].message_index].tool_calls[0].id
    # `trajectory` has the final submit step that `history` lacks: recorded, not invented
    assert len(v1.steps) == 4 and v1.metadata.extra["steps_not_in_history"] == 1
    old = _one(next((traj_dir / SWE_AGENT).glob("gpt4__swe-bench-dev-easy_first_only*/*.traj")))
    assert old.metadata.extra == {"variant": "old"} and old.instance_id == "pydicom__pydicom-1458"
    raw = json.loads(Path(old.source.path).read_text())
    demo = [i for i, h in enumerate(raw["history"]) if h.get("is_demo")]
    assert demo and all(old.messages[i].role == "user" for i in demo)  # the demonstration stays in context
    assert len(old.steps) == sum(h["role"] == "assistant" for h in raw["history"]) == 12
    assert [s.thought for s in old.steps] == [h["thought"] for h in raw["history"] if h["role"] == "assistant"]


def test_swe_agent_demo_turns_and_autosubmit_are_flagged(tmp_path):
    history = [{"role": "system", "content": "SETTING"},
               {"role": "user", "content": "demo task", "is_demo": True},
               {"role": "assistant", "content": "demo\n```\nls\n```", "thought": "demo", "action": "ls",
                "is_demo": True},
               {"role": "user", "content": "real task"},
               {"role": "assistant", "content": [{"type": "text", "text": "look\n```\ncat a.py\n```"}],
                "thought": "look", "action": "cat a.py"},
               {"role": "user", "content": "print(1)"},
               {"role": "assistant", "content": "Exit due to cost limit", "thought": "Exit due to cost limit",
                "action": ""}]
    path = tmp_path / "x__y-1" / "x__y-1.traj"
    path.parent.mkdir()
    path.write_text(json.dumps({"history": history, "trajectory": [{}, {}],
                                "info": {"exit_status": "submitted (exit_cost)", "model_stats": {"api_calls": 2}}}))
    traj = _one(path)
    assert [(s.is_demo, s.synthetic, s.action) for s in traj.steps] == [
        (True, False, "ls"), (False, False, "cat a.py"), (False, True, "")]
    assert traj.metadata.exit_status == "submitted (exit_cost)" and "steps_not_in_history" not in traj.metadata.extra


# -- data-set rows (fixtures written from the published schemas) -----------------------------------------

def test_swe_smith_rows():
    trajs = {t.instance_id: t for t in read_file(FIXTURES / "swe_smith.jsonl").trajectories}
    tool = trajs["pandas-dev__pandas.95280573.pr_53855"]
    assert tool.source.format == "swe-smith" and tool.source.row == 1 and tool.repo == "pandas-dev/pandas"
    assert tool.outcome.resolved is True and tool.outcome.source == "row:resolved"
    assert tool.steps[0].action == "grep -rn 'def parse_date' /testbed"
    assert tool.messages[3].tool_call_id == "call_a1" and tool.messages[3].content.startswith("/testbed/src")
    xml = trajs["python-slugify__slugify.1a2b3c4d.lm_modify__x9"]
    assert xml.steps[0].action.startswith("<function=bash>") and xml.steps[0].thought == "Look at slugify."
    assert xml.steps[1].synthetic and not xml.steps[0].synthetic  # the converter's rewritten cost-limit submit
    ticks = trajs["pyutils__window.5e6f7a8b.func_pm__q1"]
    assert ticks.steps[0].action == "open src/window.py" and ticks.steps[0].thought == "Open the file first."
    assert ticks.steps[1].synthetic and ticks.outcome.resolved is False


def test_nebius_rows():
    rows = read_file(FIXTURES / "nebius_swe_agent.jsonl").trajectories
    failed, passed = sorted(rows, key=lambda t: t.outcome.resolved)
    assert failed.source.format == "nebius-swe-agent" and failed.outcome.source == "row:target"
    assert failed.messages[0].role == "system" and failed.messages[0].content.startswith("SETTING:")
    assert [m.role for m in failed.messages] == ["system", "user"] + ["assistant", "user"] * 2 + ["assistant"]
    assert [s.action for s in failed.steps] == ['search_dir "paths" src', "ls -F", "submit"]
    assert failed.steps[2].thought == "Give up and submit."
    assert failed.metadata.extra == {"unmasked_steps": [3]} and failed.metadata.model == "swe-agent-llama-70b"
    assert passed.outcome.resolved is True and passed.metadata.submission.startswith("diff --git")
    assert passed.steps[1].action == "edit 40:40\n        newdir = str(newdir)\nend_of_edit"


def test_swe_rebench_rows():
    rows = {t.instance_id: t for t in read_file(FIXTURES / "swe_rebench_openhands.jsonl").trajectories}
    done = rows["encode__httpx-2701"]
    assert done.source.format == "swe-rebench-openhands" and done.repo == "encode/httpx"
    assert done.outcome.resolved is True
    assert [t["function"]["name"] for t in done.tools] == ["execute_bash", "think", "finish"]
    assert done.messages[2].content == "" and done.messages[2].tool_calls[0].function.arguments == \
        '{"thought": "The join drops the base path."}'
    assert done.messages[3].name == "think" and done.messages[3].tool_call_id == "t1"
    assert done.messages[0].tool_calls is None and done.messages[3].tool_calls is None
    assert done.steps[1].action == "cd /workspace && pytest -q tests/test_urls.py"
    assert done.metadata.extra["trajectory_id"] == "reb-0001"
    assert rows["pallets__click-2800"].outcome.resolved is False


def test_parquet_rows_equal_jsonl_rows(tmp_path):
    for name in ("swe_smith", "nebius_swe_agent", "swe_rebench_openhands"):
        rows = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{name}.parquet")
        from_parquet = read_file(tmp_path / f"{name}.parquet").trajectories
        from_jsonl = read_file(FIXTURES / f"{name}.jsonl").trajectories
        assert [t.id for t in from_parquet] == [t.id for t in from_jsonl] and len(from_jsonl) >= 2
        assert [t.source.row for t in from_parquet] == list(range(len(rows)))  # Parquet rows count from 0


def test_openai_chat_rows(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "THOUGHT: x\n\n```bash\nls\n```"}], "resolved": 1,
             "instance_id": "a__b-1", "metadata": {"cost": 0.5, "seed": 3}},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
             "status": "error"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    first, second = read_file(path).trajectories
    assert first.source.format == "openai-chat" and first.steps[0].action == "ls" and first.steps[0].thought == "x"
    assert first.outcome.resolved is True and first.metadata.cost == 0.5 and first.metadata.extra == {"seed": 3}
    assert second.outcome.status == "error" and second.outcome.resolved is False and second.instance_id is None


# -- detection, registry, errors, round trip -------------------------------------------------------------

def test_detect_and_registry():
    assert detect({"trajectory_format": "mini-swe-agent-1.1", "messages": []}) == "mini-swe-agent-1.1"
    assert detect({"messages": "[]"}) == "swe-smith"
    assert detect({"trajectory": [{"role": "ai", "text": "x"}]}) == "nebius-swe-agent"
    assert detect({"trajectory": [{"role": "assistant", "content": "x"}]}) == "swe-rebench-openhands"
    assert detect({"messages": [], "response": {}}) == "litellm-log"
    assert detect({"history": [], "info": {}}) == "swe-agent-traj"
    assert detect({"alpha": 1}) is None and detect([1]) is None
    assert all(callable(reader(name)) for name in FORMATS)
    with pytest.raises(RegistryError, match="unknown trajectory format 'nope'; known: litellm-log, mini-swe-agent-1"):
        reader("nope")


def test_wrong_types_name_the_place(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "x"},
                                             {"role": "assistant", "content": 42}]}))
    [bad] = list(scan_file(path))
    assert isinstance(bad, Bad) and bad.reason == "messages[1].content: expected text or a list of text parts, got int"
    path.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}))
    assert "messages[0].role: unknown role 'robot'" in next(scan_file(path)).reason
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}))
    assert next(scan_file(path)).reason == "no assistant message (1 messages)"


def test_forced_format(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}))
    assert read_file(path, fmt="openai-chat").format == "openai-chat"
    bad = read_file(path, fmt="swe-agent-traj").bad[0]
    assert bad.reason == "history: expected a list of messages, got NoneType"


def test_round_trip_of_every_real_format(traj_dir, tmp_path):
    paths = [next((traj_dir / GEMINI).glob("*.traj.json")), next((traj_dir / DEEPSEEK).glob("*.traj.json")),
             next((traj_dir / OPENHANDS).glob("*/*.json")), next((traj_dir / SWE_AGENT).glob("*/*.traj")),
             FIXTURES / "swe_rebench_openhands.jsonl", FIXTURES / "nebius_swe_agent.jsonl"]
    trajs = [t for p in paths for t in read_file(p).trajectories]
    for suffix in (".parquet", ".jsonl"):
        write_trajectories(tmp_path / f"store{suffix}", trajs)
        assert read_trajectories(tmp_path / f"store{suffix}") == trajs
