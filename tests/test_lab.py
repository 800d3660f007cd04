"""The lab's parts: tasks, environment, teacher (its labels are the truth), label files, template, rollout parsing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from srft.lab.config import LabConfig, apply_sets, arms, preset_config
from srft.lab.data import flip_labels, oracle_labels, read_outcome_table, teacher_record, write_outcome_table
from srft.lab.env import TOOLS, LabEnv
from srft.lab.rollout import NO_CALL, apply_reply, parse_reply, start
from srft.lab.tasks import DIFFICULTIES, make_task, make_tasks
from srft.lab.teacher import TeacherConfig, teach
from srft.labels import StepLabel

MIX = {"easy": 1, "medium": 1, "hard": 2}
CLEAN = TeacherConfig(follow_hint=0, act_on_hint=0, wrong_line=0, wrong_value=0, waste=0, skip_test=0)


def fix_all(env: LabEnv) -> None:
    for name in env.task.bugs:
        path, line = env.task.location(name)
        env.step("edit", {"path": path, "line": line, "value": env.task.expected[name]})


# -- tasks -------------------------------------------------------------------------------------------------

def test_tasks_are_deterministic_and_splits_disjoint():
    assert make_task(7, "hard") == make_task(7, "hard")
    train = make_tasks("train", 60, MIX)
    again = make_tasks("train", 60, MIX)
    held_out = make_tasks("eval", 60, MIX)
    assert train == again
    assert not {t.instance_id for t in train} & {t.instance_id for t in held_out}
    assert not {json.dumps(t.files, sort_keys=True) for t in train} & {json.dumps(t.files, sort_keys=True)
                                                                        for t in held_out}
    assert Counter(t.difficulty for t in train) == {"easy": 15, "medium": 15, "hard": 30}


def test_task_shape_follows_its_difficulty():
    for task in make_tasks("train", 90, {"easy": 1, "medium": 1, "hard": 1}):
        spec = DIFFICULTIES[task.difficulty]
        assert spec.files[0] <= len(task.files) <= spec.files[1]
        assert spec.bugs[0] <= len(task.bugs) <= spec.bugs[1]
        env = LabEnv(task)
        assert [n for n, _ in env.failures()] == [n for n in task.expected if n in task.bugs]
        for name in task.bugs:
            line = json.dumps({"test": f"test_{name}", "var": name, "got": task.buggy_value(name),
                               "value": task.expected[name]})
            assert line in task.statement.splitlines()
        if task.hint:
            assert task.statement.endswith(json.dumps({"path": task.hint}))
            holds_bug = any(task.location(b)[0] == task.hint for b in task.bugs)
            assert holds_bug != task.hint_misleading


def test_unknown_difficulty_is_an_error():
    with pytest.raises(ValueError, match="unknown difficulty"):
        make_tasks("train", 3, {"impossible": 1})


# -- environment -------------------------------------------------------------------------------------------

def test_fixing_every_bug_then_submitting_resolves():
    task = make_tasks("eval", 3, {"hard": 1})[0]
    env = LabEnv(task)
    fix_all(env)
    assert env.step("test", {}).observation == f"all {len(task.expected)} tests passed"
    assert env.step("submit", {}).done and env.resolved


def test_submit_with_a_bug_left_is_unresolved():
    env = LabEnv(make_tasks("eval", 1, {"easy": 1})[0])
    assert env.step("submit", {}).done
    assert env.submitted and not env.resolved


def test_tools_show_what_they_should():
    task = make_tasks("eval", 1, {"medium": 1})[0]
    env = LabEnv(task)
    name = task.bugs[0]
    path, line = task.location(name)
    assert env.step("ls", {}).observation == "\n".join(task.files)
    assert f"{line}: {task.files[path][line - 1]}" in env.step("read", {"path": path}).observation
    assert env.step("search", {"var": name}).observation == json.dumps({"path": path, "line": line})
    assert env.step("search", {"var": name[:-1]}).observation == f"no matches for {name[:-1]}"  # whole names
    neighbour = 2 if line == 1 else line - 1
    victim = task.files[path][neighbour - 1].split(" = ")[0]
    wrong = task.expected[victim] + 1
    assert env.step("edit", {"path": path, "line": neighbour, "value": wrong}).observation == json.dumps(
        {"path": path, "line": neighbour, "text": f"{victim} = {wrong}"})
    report = env.step("test", {}).observation.splitlines()
    assert report[0] == "Failing tests:" and report[-1].endswith(f"{len(task.bugs) + 1} failed")
    assert json.dumps({"test": f"test_{victim}", "var": victim, "got": wrong, "value": task.expected[victim]}) in report
    restored = {"path": path, "line": neighbour, "text": task.files[path][neighbour - 1]}
    assert env.step("undo", {"path": path}).observation == json.dumps(restored)
    assert env.files == task.files


@pytest.mark.parametrize("name,args,message", [
    ("rm", {}, "unknown tool 'rm'"),
    ("read", None, "arguments of read are not a JSON object"),
    ("read", {}, "missing ['path']"),
    ("test", {"verbose": True}, "got ['verbose']"),
    ("edit", {"path": "core.py", "line": "2", "value": 1}, "line must be an integer"),
    ("edit", {"path": "core.py", "line": 2, "value": "1"}, "value must be an integer"),
    ("read", {"path": "nope.py"}, "no such file: nope.py"),
    ("edit", {"path": "@", "line": 99, "value": 1}, "has lines 1-"),
    ("undo", {"path": "@"}, "no edit of"),
    ("search", {"var": " "}, "empty search"),
])
def test_invalid_actions_are_reported_back_and_cost_a_step(name, args, message):
    task = make_tasks("eval", 1, {"easy": 1})[0]
    env = LabEnv(task, max_steps=4)
    if args and args.get("path") == "@":
        args = {**args, "path": next(iter(task.files))}
    result = env.step(name, args)
    assert result.error and result.observation.startswith("Error: ") and message in result.observation
    assert env.steps == 1 and env.invalid == 1 and env.files == task.files


def test_step_limit_ends_the_episode():
    env = LabEnv(make_tasks("eval", 1, {"easy": 1})[0], max_steps=3)
    for _ in range(3):
        env.step("ls", {})
    assert env.done and not env.submitted and not env.resolved
    assert env.step("ls", {}).error == "episode over" and env.steps == 3


# -- teacher: the labels are the truth ---------------------------------------------------------------------

def failing(env: LabEnv) -> set[str]:
    return {n for n, _ in env.failures()}


def test_every_teacher_label_matches_what_the_step_did():
    """Replay each teacher step in a fresh environment and check its label against its effect."""
    checked = Counter()
    for task in make_tasks("train", 200, MIX):
        ep = teach(task, TeacherConfig())
        env = LabEnv(task, max_steps=99)
        for step in ep.steps:
            before = failing(env)
            result = env.step(step.name, step.arguments)
            after = failing(env)
            assert result.observation == step.observation and result.error is None
            if step.name == "edit" and step.label == "good":
                assert after < before, (task.instance_id, step)  # fixes a failing test, breaks nothing
            elif step.name == "edit" and step.label == "mistake":
                assert not after < before, (task.instance_id, step)  # breaks a line or leaves the bug
            elif step.label == "recover":
                assert after < before, (task.instance_id, step)
            elif step.name == "submit":
                assert (step.label == "good") == (not before)
            elif step.name in ("ls", "test", "read", "search"):
                assert after == before
            checked[(step.name, step.label)] += 1
        assert ep.resolved == env.resolved
    # every kind of step occurred, so the loop above really checked each rule
    for kind in [("edit", "good"), ("edit", "mistake"), ("undo", "recover"), ("edit", "recover"),
                 ("submit", "good"), ("submit", "mistake"), ("read", "mistake"), ("read", "good"),
                 ("ls", "unnecessary"), ("test", "unnecessary")]:
        assert checked[kind] > 0, kind


def test_a_clean_teacher_always_resolves_and_every_step_is_good():
    for task in make_tasks("train", 60, MIX):
        ep = teach(task, CLEAN)
        assert ep.resolved and {s.label for s in ep.steps} == {"good"}


def test_noise_rates_act_as_documented():
    tasks = make_tasks("train", 120, {"easy": 1, "medium": 1})  # short enough to recover within the step limit
    never_notices = CLEAN.model_copy(update={"wrong_line": 1.0, "notice": 0.0})
    always_notices = never_notices.model_copy(update={"notice": 1.0})
    blind = [teach(t, never_notices) for t in tasks]
    careful = [teach(t, always_notices) for t in tasks]
    assert sum(ep.resolved for ep in blind) < 0.1 * len(tasks)
    assert all(ep.steps[-1].label == "mistake" for ep in blind if not ep.resolved and ep.steps[-1].name == "submit")
    assert sum(ep.resolved for ep in careful) > 0.8 * len(tasks)
    assert all(any(s.label == "recover" for s in ep.steps) for ep in careful if ep.resolved)


def test_the_teachers_mistakes_are_harmful():
    """The mistakes are harmful in the environment: a teacher making them more often resolves fewer tasks."""
    tasks = make_tasks("train", 200, MIX)
    rates = [sum(teach(t, TeacherConfig(wrong_line=w, wrong_value=w, act_on_hint=w)).resolved for t in tasks)
             for w in (0.0, 0.15, 0.5)]
    assert rates[0] > rates[1] > rates[2]


def test_default_teacher_matches_its_documented_calibration():
    """docs/lab.md: about half the trajectories resolved (SWE-smith discards 61%), far fewer on hard tasks, and
    at most about a quarter of failed trajectories' steps are mistakes (the paper: up to 24%)."""
    episodes = [teach(t, TeacherConfig()) for t in make_tasks("train", 400, MIX)]
    rate = {d: sum(e.resolved for e in episodes if e.task.difficulty == d) /
            sum(e.task.difficulty == d for e in episodes) for d in ("easy", "hard")}
    overall = sum(e.resolved for e in episodes) / len(episodes)
    failed = Counter(s.label for e in episodes if not e.resolved for s in e.steps)
    assert 0.4 <= overall <= 0.7 and rate["hard"] < rate["easy"] - 0.25
    assert failed["mistake"] / sum(failed.values()) <= 0.27


def test_teacher_is_deterministic():
    task = make_tasks("train", 1, {"hard": 1})[0]
    assert teach(task, TeacherConfig(), seed=3).steps == teach(task, TeacherConfig(), seed=3).steps


# -- label files and outcome tables -------------------------------------------------------------------------

def test_oracle_labels_follow_ingested_ids_and_name_mismatches(tmp_path):
    from srft.formats.ingest import ingest

    episodes = [teach(t, TeacherConfig()) for t in make_tasks("train", 12, MIX)]
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(teacher_record(ep)) + "\n" for ep in episodes))
    trajectories = ingest([path]).trajectories
    labels = oracle_labels(trajectories, episodes)
    by_instance = {t.instance_id: t for t in trajectories}
    assert len(labels) == sum(len(ep.steps) for ep in episodes)
    for ep in episodes:
        traj = by_instance[ep.task.instance_id]
        assert traj.resolved == ep.resolved and len(traj.steps) == len(ep.steps)
        mine = [lab.label for lab in labels if lab.trajectory_id == traj.id]
        assert mine == [s.label for s in ep.steps]
    with pytest.raises(ValueError, match="not found after ingest"):
        oracle_labels(trajectories[1:], episodes)


def test_flipped_labels_flip_the_mask_decision_at_rate_q():
    labels = [StepLabel(trajectory_id=f"t{i // 10}", step=i % 10 + 1, label=("mistake", "good", "recover")[i % 3],
                        source="oracle") for i in range(6000)]
    assert [lab.label for lab in flip_labels(labels, 0.0)] == [lab.label for lab in labels]
    inverted = flip_labels(labels, 1.0)
    assert all((a.label == "mistake") != (b.label == "mistake") for a, b in zip(labels, inverted))
    flipped = flip_labels(labels, 0.25, seed=1)
    rate = sum((a.label == "mistake") != (b.label == "mistake") for a, b in zip(labels, flipped)) / len(labels)
    assert 0.22 < rate < 0.28
    assert flip_labels(labels, 0.25, seed=1) == flipped and flip_labels(labels, 0.25, seed=2) != flipped


def test_outcome_table_is_what_srft_compare_reads(tmp_path):
    from srft.compare.harness import run_compare

    cols = {"rft.s0": {"a": True, "b": False, "c": False}, "rft.s1": {"a": True, "b": True, "c": False},
            "sft.s0": {"a": False, "b": False, "c": False}}
    path = tmp_path / "outcomes.csv"
    write_outcome_table(path, cols)
    assert read_outcome_table(path) == cols
    result = run_compare({"rft": [f"{path}:rft.s*"], "sft": [f"{path}:sft.s*"]}, baseline="rft", n_boot=200)
    rates = {s["name"]: (s["rate"], s["n_runs"]) for s in result["systems"]}
    assert rates == {"rft": (pytest.approx(0.5), 2), "sft": (0.0, 1)}


# -- template and rollout parsing ---------------------------------------------------------------------------

def test_template_renders_tool_calls_and_prompts_agree_with_training(tmp_path):
    from srft.lab.tokenizer import render_texts
    from srft.lab.tokenizer import CHAT_TEMPLATE, train_tokenizer

    episodes = [teach(t, TeacherConfig()) for t in make_tasks("train", 30, MIX)]
    texts = render_texts([ep.messages for ep in episodes], CHAT_TEMPLATE)
    tok = train_tokenizer(texts, tmp_path / "tok", vocab_size=400)
    msgs = [m.to_openai() for m in episodes[0].messages]
    full = tok.apply_chat_template(msgs, tools=TOOLS, tokenize=False)
    assert full == texts[0]
    first_call = episodes[0].steps[0]
    call = f'<tool_call>{{"name": "{first_call.name}", "arguments": {json.dumps(first_call.arguments)}}}</tool_call>'
    assert f"<|im_start|>assistant\n{call}<|im_end|>\n" in full
    for i, m in enumerate(msgs):  # prefix-preserving: the inference prompt is a prefix of the training render
        if m["role"] == "assistant":
            prompt = tok.apply_chat_template(msgs[:i], tools=TOOLS, tokenize=False, add_generation_prompt=True)
            assert full.startswith(prompt)
    enc = tok.apply_chat_template(msgs, tools=TOOLS, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = tok.decode([t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    assert trained == "".join(f"{c}<|im_end|>" for c in (
        f'<tool_call>{{"name": "{s.name}", "arguments": {json.dumps(s.arguments)}}}</tool_call>'
        for s in episodes[0].steps))
    # a name has the same tokens wherever it appears (report, observation, inside the JSON of a call)
    name = episodes[0].task.bugs[0]
    alone = tok(name, add_special_tokens=False)["input_ids"]
    for context in (f"expected {name} = 3", f'{{"var": "{name}"}}', f'"test_{name}", ', f"\n{name}\n"):
        ids = tok(context, add_special_tokens=False)["input_ids"]
        assert any(ids[i:i + len(alone)] == alone for i in range(len(ids))), context


def test_parse_reply_keeps_what_the_student_wrote():
    msg, name, args, problem = parse_reply('<tool_call>{"name": "read", "arguments": {"path":  "a.py"}}</tool_call>')
    assert (name, args, problem) == ("read", {"path": "a.py"}, None)
    assert msg.tool_calls[0].function.arguments == '{"path":  "a.py"}'
    assert parse_reply("let me think")[3] == NO_CALL
    assert "not valid JSON" in parse_reply("<tool_call>{nope</tool_call>")[3]
    assert parse_reply('<tool_call>{"name": "ls", "arguments": [1]}</tool_call>')[2] is None


def test_student_replies_drive_the_environment():
    task = make_tasks("eval", 1, {"easy": 1})[0]
    ep = start(task, max_steps=5)
    name = task.bugs[0]
    path, line = task.location(name)
    for reply in ["garbage", '<tool_call>{"name": "edit", "arguments": {"path": "x.py", "line": 1, "value": 2}}'
                  '</tool_call>',
                  f'<tool_call>{{"name": "edit", "arguments": {{"path": "{path}", "line": {line}, '
                  f'"value": {task.expected[name]}}}}}</tool_call>',
                  '<tool_call>{"name": "submit", "arguments": {}}</tool_call>']:
        apply_reply(ep, reply)
    assert ep.actions == ["invalid", "invalid", "edit", "submit"]
    assert ep.resolved and ep.exit_status == "Submitted" and ep.env.invalid == 2
    assert ep.messages[3].role == "user" and ep.messages[3].content.startswith("Error: no tool call")
    assert ep.messages[5].role == "tool" and "no such file: x.py" in ep.messages[5].content


# -- config ------------------------------------------------------------------------------------------------

def test_config_presets_arms_and_overrides():
    small = preset_config("small")
    names = [a.name for a in arms(small)]
    assert names[:2] == ["sft", "rft"] and "srft-q0.25" in names and names[-1] == "mistakes-only"
    assert small.teacher.max_steps == small.max_steps
    tweaked = apply_sets(small, ["finetune.max_steps=7", "seeds=[3]", "tasks.mix={easy: 1}"])
    assert (tweaked.finetune.max_steps, tweaked.seeds, tweaked.tasks.mix) == (7, [3], {"easy": 1})
    with pytest.raises(ValueError, match="finetune.max_step"):
        apply_sets(small, ["finetune.max_step=7"])
    with pytest.raises(ValueError, match="must include rft"):
        LabConfig(arms=["sft"])
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
