"""The critic prompt (windows, clipping, digest, outcome, template hash) and the strict answer parser."""

from __future__ import annotations

import json

import pytest
from critic_support import call, simple_traj, tool_traj

from srft.critic.parse import AnswerError, answer_schema, parse_answer, schema_steps
from srft.critic.prompt import PromptBuilder, PromptConfig, TokenCounter

# -- parse ------------------------------------------------------------------------------------------------------


def answer(*items) -> str:
    return json.dumps({"steps": [{"step": s, "label": lab, "reason": f"r{s}"} for s, lab in items]})


def test_parse_accepts_exact_answers_and_formatting_wrappers():
    text = answer((2, "good"), (1, "mistake"), (3, "recover"))
    parsed = parse_answer(text, [1, 2, 3])
    assert [(p.step, p.label, p.reason) for p in parsed] == [(1, "mistake", "r1"), (2, "good", "r2"),
                                                             (3, "recover", "r3")]
    assert parse_answer(f"```json\n{text}\n```", [1, 2, 3]) == parsed
    assert parse_answer(f"<think>hmm, step 2...</think>\n{text}", [1, 2, 3]) == parsed


@pytest.mark.parametrize("text,expected,message", [
    ("", [1], "the answer is empty"),
    ("The steps are fine.", [1], "not valid JSON"),
    ('{"steps": [{"step": 1, "label": "good", "reason": "x"}', [1], "not valid JSON"),
    ('[{"step": 1}]', [1], 'expected an object with a "steps" list, got list'),
    ('{"labels": []}', [1], "got keys ['labels']"),
    (answer((1, "good")), [1, 2, 3], "1 entries for 3 steps; missing steps 2-3"),
    (answer((1, "good"), (1, "good"), (2, "good")), [1, 2, 3], "duplicate steps 1"),
    (answer((1, "good"), (7, "good")), [1, 2], "steps 7 do not exist (expected 1-2)"),
    (answer((1, "bad")), [1], "steps[0].label is 'bad', expected one of good, unnecessary, mistake, recover"),
    ('{"steps": [{"step": true, "label": "good", "reason": ""}]}', [1], "steps[0].step is True"),
    ('{"steps": [{"step": 1, "label": "good"}]}', [1], "steps[0].reason is missing"),
    ('{"steps": [3]}', [1], "steps[0] is int, expected an object"),
])
def test_parse_rejects_with_a_message_naming_the_problem(text, expected, message):
    with pytest.raises(AnswerError) as err:
        parse_answer(text, expected)
    assert message in str(err.value)


def test_parse_reports_every_problem_at_once():
    text = json.dumps({"steps": [{"step": 1, "label": "Good", "reason": "x"}, {"step": 1, "label": "good"},
                                 {"step": 9, "label": "good", "reason": "y"}]})
    with pytest.raises(AnswerError) as err:
        parse_answer(text, [1, 2])
    msg = str(err.value)
    for part in ("steps[0].label is 'Good'", "steps[1].reason is missing", "3 entries for 2 steps",
                 "missing steps 2", "steps 9 do not exist"):
        assert part in msg


def test_schema_pins_step_numbers_count_and_order():
    schema = answer_schema([4, 5, 6], reason_max_chars=120)
    steps = schema["properties"]["steps"]
    assert steps["minItems"] == steps["maxItems"] == 3 and steps["items"] is False
    assert [e["properties"]["step"] for e in steps["prefixItems"]] == [{"const": 4}, {"const": 5}, {"const": 6}]
    assert steps["prefixItems"][0]["properties"]["label"]["enum"] == ["good", "unnecessary", "mistake", "recover"]
    assert steps["prefixItems"][0]["properties"]["reason"]["maxLength"] == 120
    assert schema_steps(schema) == [4, 5, 6]
    flat = answer_schema([4, 5, 6], style="enum")
    assert flat["properties"]["steps"]["items"]["properties"]["step"]["enum"] == [4, 5, 6]
    assert "maxLength" not in flat["properties"]["steps"]["items"]["properties"]["reason"]
    assert schema_steps(flat) == [4, 5, 6]


def test_positional_schema_compiles_to_a_llama_cpp_grammar():
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(answer_schema([7, 8], reason_max_chars=40)))
    assert '"7"' in gbnf and '"8"' in gbnf and "mistake" in gbnf


# -- prompt and windows -----------------------------------------------------------------------------------------
def test_one_window_holds_task_outcome_and_every_step_in_full():
    traj = tool_traj([("I will read calc.py first", call("read_file", path="calc.py"), "def add(a, b): return a - b"),
                      ("Fix it", call("edit_line", path="calc.py", line=1, text="return a + b"), "ok")])
    [window] = PromptBuilder().windows(traj)
    text = window.messages[0]["content"]
    assert window.numbers == [1, 2] and len(window.messages) == 1
    for part in ("Fix the bug: add() subtracts.", "unresolved: the final patch did not pass", "### Step 1",
                 "I will read calc.py first", 'read_file({"path": "calc.py"})', "[read_file] def add(a, b)",
                 "### Step 2", "exactly one entry for each step 1 to 2"):
        assert part in text
    hidden = PromptBuilder(PromptConfig(show_outcome=False)).windows(traj)[0].messages[0]["content"]
    assert "## Outcome" not in hidden and "unresolved" not in hidden


def test_long_observation_keeps_head_and_tail_with_a_marked_cut():
    observation = "HEAD-LINE\n" + "filler line\n" * 2000 + "TAIL-LINE"
    traj = tool_traj([("run", call("run_tests"), observation)])
    builder = PromptBuilder(PromptConfig(observation_tokens=100))
    text = builder.windows(traj)[0].messages[0]["content"]
    assert "HEAD-LINE" in text and "TAIL-LINE" in text and "tokens cut ...]" in text
    assert len(text) < len(observation) / 5


def test_windows_cover_every_step_once_in_order_and_fit_the_context():
    traj = simple_traj(40, instance="w-1", obs_chars=400)
    cfg = PromptConfig(context_tokens=1500, observation_tokens=64, task_tokens=64, digest_tokens=200)
    builder = PromptBuilder(cfg)
    windows = builder.windows(traj)
    assert len(windows) > 3
    assert [n for w in windows for n in w.numbers] == list(range(1, 41))
    for w in windows:
        assert w.numbers == list(range(w.numbers[0], w.numbers[-1] + 1))
        assert w.prompt_tokens + w.max_tokens <= cfg.context_tokens
        text = w.messages[0]["content"]
        assert f"each step {w.numbers[0]} to {w.numbers[-1]}" in text
        assert "Task of w-1" in text  # every window repeats the task
    later = windows[2].messages[0]["content"]
    first_of_window = windows[2].numbers[0]
    assert "## Earlier steps" in later and f"step {first_of_window - 1}: read_file" in later
    assert "## Earlier steps" not in windows[0].messages[0]["content"]


def test_window_step_cap_and_oversized_single_step():
    traj = simple_traj(7, instance="w-2")
    assert [w.numbers for w in PromptBuilder(PromptConfig(max_window_steps=3)).windows(traj)] == [
        [1, 2, 3], [4, 5, 6], [7]]
    huge = tool_traj([("think " * 3000, call("read_file", path="a.py"), "x")])
    cfg = PromptConfig(context_tokens=1024, task_tokens=64)
    [window] = PromptBuilder(cfg).windows(huge)
    assert window.clipped_steps == 1 and window.prompt_tokens + window.max_tokens <= cfg.context_tokens + 16


def test_prompt_hash_tracks_template_and_options(tmp_path):
    base = PromptBuilder()
    assert base.prompt_hash == PromptBuilder().prompt_hash and base.template_name == "builtin:v2.jinja"
    assert PromptBuilder(PromptConfig(show_outcome=False)).prompt_hash != base.prompt_hash
    assert PromptBuilder(PromptConfig(observation_tokens=100)).prompt_hash != base.prompt_hash
    mine = tmp_path / "mine.jinja"
    mine.write_text("Task: {{ task }}\n{% for s in steps %}{{ s.number }}: {{ s.action }}\n{% endfor %}")
    custom = PromptBuilder(PromptConfig(template=str(mine)))
    assert custom.prompt_hash != base.prompt_hash
    text = custom.windows(simple_traj(2, instance="t"))[0].messages[0]["content"]
    assert text.startswith("Task: Task of t: fix it.\n1: read_file(")


def test_bad_user_templates_fail_clearly(tmp_path):
    typo = tmp_path / "typo.jinja"
    typo.write_text("{{ taks }}")
    with pytest.raises(Exception, match="taks"):
        PromptBuilder(PromptConfig(template=str(typo))).windows(simple_traj(1, instance="t"))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for s in steps %}")
    with pytest.raises(ValueError, match="broken.jinja"):
        PromptBuilder(PromptConfig(template=str(broken)))
    with pytest.raises(FileNotFoundError, match="nope.jinja"):
        PromptBuilder(PromptConfig(template=str(tmp_path / "nope.jinja")))


def test_reask_quotes_the_error_after_the_bad_answer():
    builder = PromptBuilder()
    window = builder.windows(simple_traj(3, instance="t"))[0]
    msgs = builder.reask(window, "not json", "the answer is not valid JSON")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "not json" and "the answer is not valid JSON" in msgs[2]["content"]
    assert "step 1 to 3 (3 entries)" in msgs[2]["content"]


def test_exact_token_budgets_with_a_real_tokenizer(tokenizer_dir):
    counter = TokenCounter(str(tokenizer_dir / "qwen2.5-coder-instruct"))
    text = "def add(a, b):\n    return a - b\n" * 300
    clipped, cut = counter.clip(text, 120)
    assert cut > 0 and counter.count(clipped) <= 120 + 16  # the marker itself costs a few tokens
    assert clipped.startswith("def add(a, b):") and clipped.endswith("return a - b\n")
    assert counter.clip("short", 120) == ("short", 0)
