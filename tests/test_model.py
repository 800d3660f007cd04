"""The canonical model: construction helpers and lossless Parquet/JSONL round trips."""

from __future__ import annotations

import json

import pytest

from srft.io import read_trajectories, write_trajectories
from srft.labels import LabelFileError, StepLabel, apply_labels, labels_of, read_labels, write_labels
from srft.model import (FunctionCall, Message, Metadata, Outcome, Source, ToolCall, Trajectory,
                        repo_from_instance_id, steps_from_messages, trajectory_id)


def make_trajectory(instance_id: str = "django__django-11099", resolved: bool | None = False) -> Trajectory:
    messages = [
        Message(role="system", content="You are an agent."),
        Message(role="user", content="Fix the bug <b>now</b> — ünïcode"),
        Message(role="assistant", content="Look around.", reasoning_content="hmm",
                tool_calls=[ToolCall(id="c1", function=FunctionCall(name="bash", arguments='{"command": "ls"}'))]),
        Message(role="tool", content="a.py\nb.py", tool_call_id="c1", name="bash"),
        Message(role="assistant", content="Done."),
    ]
    return Trajectory(
        id=trajectory_id(instance_id, messages), instance_id=instance_id, repo=repo_from_instance_id(instance_id),
        source=Source(format="test", path="/x/y.json", row=3, sha256="0" * 64), messages=messages,
        steps=steps_from_messages(messages),
        tools=[{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "x": [1, "a"]}}}],
        outcome=Outcome.from_status("empty_patch" if resolved is False else "resolved", "report.json"),
        metadata=Metadata(model="m", exit_status="Submitted", cost=0.125, api_calls=2, extra={"k": [1, {"z": None}]}),
    )


def test_steps_follow_assistant_turns():
    traj = make_trajectory()
    assert [s.number for s in traj.steps] == [1, 2]
    assert [s.message_index for s in traj.steps] == [2, 4]
    assert traj.steps[0].observation_indices == [3]
    assert traj.steps[0].action == 'bash({"command": "ls"})'
    assert traj.steps[1].final and not traj.steps[0].final
    assert traj.outcome.resolved is False and traj.outcome.status == "empty_patch"


@pytest.mark.parametrize("iid,repo", [
    ("django__django-11099", "django/django"),
    ("pylint-dev__astroid-1333", "pylint-dev/astroid"),
    ("pvlib__pvlib-python-1072", "pvlib/pvlib-python"),
    ("scikit-learn__scikit-learn-25747", "scikit-learn/scikit-learn"),
    ("pandas-dev__pandas.95280573.pr_53652", "pandas-dev/pandas"),
    ("humanevalfix-python-0", None),
    (None, None),
])
def test_repo_from_instance_id(iid, repo):
    assert repo_from_instance_id(iid) == repo


def test_id_is_content_derived():
    a, b = make_trajectory(), make_trajectory()
    assert a.id == b.id
    changed = a.messages[:-1] + [Message(role="assistant", content="Done!")]
    assert trajectory_id(a.instance_id, changed) != a.id


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_round_trip_is_lossless(tmp_path, suffix):
    trajs = [make_trajectory(), make_trajectory("astropy__astropy-12907", resolved=True)]
    trajs[1] = trajs[1].model_copy(update={"tools": None, "steps": [
        s.model_copy(update={"label": "mistake", "label_reason": "r", "label_source": "oracle", "weight": 0.0})
        for s in trajs[1].steps]})
    path = tmp_path / f"t{suffix}"
    assert write_trajectories(path, trajs) == 2
    back = read_trajectories(path)
    assert [t.model_dump() for t in back] == [t.model_dump() for t in trajs]


def test_empty_store_round_trips(tmp_path):
    write_trajectories(tmp_path / "e.parquet", [])
    assert read_trajectories(tmp_path / "e.parquet") == []


def test_label_file_validation_names_rows(tmp_path):
    traj = make_trajectory()
    path = tmp_path / "labels.jsonl"
    rows = [
        {"trajectory_id": traj.id, "step": 1, "label": "good"},
        {"trajectory_id": traj.id, "step": 1, "label": "mistake"},
        {"trajectory_id": traj.id, "step": 9, "label": "good"},
        {"trajectory_id": "nope", "step": 1, "label": "good"},
        {"trajectory_id": traj.id, "step": 2, "label": "bad"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LabelFileError) as err:
        read_labels(path, {traj.id: traj})
    text = str(err.value)
    assert "labels.jsonl:2: duplicate step 1" in text
    assert "labels.jsonl:3: step 9 out of range" in text
    assert "labels.jsonl:4: unknown trajectory 'nope'" in text
    assert "labels.jsonl:5: unknown label 'bad'" in text
    assert len(err.value.problems) == 4


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_labels_round_trip_and_apply(tmp_path, suffix):
    traj = make_trajectory()
    labels = [StepLabel(trajectory_id=traj.id, step=2, label="recover", source="human"),
              StepLabel(trajectory_id=traj.id, step=1, label="mistake", reason="wrong", source="human")]
    write_labels(tmp_path / f"l{suffix}", labels)
    back = read_labels(tmp_path / f"l{suffix}", {traj.id: traj})
    assert [b.step for b in back] == [1, 2]
    labelled = apply_labels([traj], back)[0]
    assert [s.label for s in labelled.steps] == ["mistake", "recover"]
    assert traj.steps[0].label is None  # apply_labels copies
    assert labels_of([labelled]) == back
