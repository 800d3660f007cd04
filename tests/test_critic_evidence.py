"""Hindsight evidence in the critic prompt: per-test results kept from real harness reports, the final patch, a
reference fix from the user's file; budgets, the prompt hash, and bad reference files caught before any call."""

from __future__ import annotations

import json

import pytest
from critic_support import simple_traj, write_store

from srft.critic.annotate import annotate_trajectories, run_annotate
from srft.critic.evidence import ReferenceError, load_reference
from srft.critic.prompt import PromptBuilder, PromptConfig
from srft.io import iter_trajectories
from srft.model import Metadata, Outcome, TestResult
from srft.testing.fake_openai import FakeCriticServer

GEMINI = "mini-swe-agent_gemini-3-pro-preview_verified"
FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.1, "timeout_s": 5.0}


def openai_cfg(url: str, **extra) -> dict:
    return {"critic": {"name": "openai", "options": {"base_url": url, "model": "m", **FAST}}, **extra}


def with_hindsight(traj, tests=None, patch=None):
    outcome = traj.outcome.model_copy(update={"tests": tests})
    return traj.model_copy(update={"outcome": outcome, "metadata": Metadata(submission=patch)})


def prompt_of(builder: PromptBuilder, traj) -> str:
    [window] = builder.windows(traj)
    return window.messages[0]["content"]


@pytest.fixture(scope="module")
def real_unresolved(traj_dir, tmp_path_factory):
    """The gemini trajectories ingested from their folder, as a user would: per-instance report.json beside them."""
    from srft.formats.ingest import run_ingest

    out = tmp_path_factory.mktemp("gemini")
    run_ingest([traj_dir / GEMINI], out)
    return out, [t for t in iter_trajectories(out) if t.resolved is False]


def test_ingest_keeps_the_per_test_results_of_real_harness_reports(real_unresolved, traj_dir):
    _, trajs = real_unresolved
    assert len(trajs) == 21 and all(t.outcome.tests for t in trajs)
    traj = next(t for t in trajs if t.instance_id == "django__django-10999")
    report = json.loads((traj_dir / GEMINI / "reports" / traj.instance_id / "report.json").read_text())
    for group, lists in report["tests_status"].items():
        for key, passed in (("success", True), ("failure", False)):
            assert sorted(lists[key]) == sorted(t.name for t in traj.outcome.tests
                                                if t.group == group and t.passed is passed)
    assert any(t.group == "FAIL_TO_PASS" and not t.passed for t in traj.outcome.tests)  # why it is unresolved


def test_real_evidence_in_the_prompt_with_budgets(real_unresolved):
    _, trajs = real_unresolved
    traj = next(t for t in trajs if t.instance_id == "django__django-10999")
    failing = [t.name for t in traj.outcome.tests if not t.passed]
    builder = PromptBuilder(PromptConfig(diff_tokens=64))
    windows = builder.windows(traj)
    text = windows[0].messages[0]["content"]
    assert "### Evaluation tests run on the final patch" in text and "A target test that still FAILs" in text
    assert all(f"  FAIL {name}" in text for name in failing)
    assert "### The final patch the agent submitted" in text and "tokens cut ...]" in text  # 64-token budget
    assert traj.metadata.submission.strip()[:40] in text
    assert [s.name for s in windows[0].evidence] == ["tests", "diff"]
    diff = windows[0].evidence[1]
    assert diff.cut > 0 and diff.tokens <= 64 + 16
    bare = PromptBuilder(PromptConfig(evidence=[], diff_tokens=64))
    assert "Hindsight evidence" not in prompt_of(bare, traj.model_copy(update={"steps": traj.steps[:1]}))
    assert len({builder.prompt_hash, bare.prompt_hash, PromptBuilder(PromptConfig(evidence=["tests"])).prompt_hash,
                PromptBuilder(PromptConfig(diff_tokens=65)).prompt_hash}) == 4


def test_tests_section_lists_failures_first_and_fits_its_budget():
    tests = ([TestResult(name=f"test_target_{i}", group="FAIL_TO_PASS", passed=i == 0) for i in range(2)]
             + [TestResult(name=f"test_old_{i}", group="PASS_TO_PASS", passed=i > 0) for i in range(400)])
    traj = with_hindsight(simple_traj(2, instance="t"), tests=tests)
    builder = PromptBuilder(PromptConfig(tests_tokens=64))
    text = prompt_of(builder, traj)
    assert "FAIL_TO_PASS: 1 of 2 pass\n  FAIL test_target_1\n  pass test_target_0" in text
    assert "PASS_TO_PASS: 399 of 400 pass\n  FAIL test_old_0" in text
    assert "test_old_5" not in text  # passing PASS_TO_PASS tests are counted, not listed
    many = with_hindsight(traj, tests=[TestResult(name=f"t{i}", group="FAIL_TO_PASS", passed=False)
                                       for i in range(300)])
    [section] = builder.plan(many).evidence
    assert section.tokens <= 64 and section.cut > 250 and "more not shown)" in section.text


def test_reference_section_from_swe_bench_style_rows_and_the_hash(tmp_path):
    traj = with_hindsight(simple_traj(2, instance="astropy__astropy-1"), patch="--- a/x.py\n+++ b/x.py\n+bad")
    rows = [{"instance_id": "astropy__astropy-1", "patch": "--- a/core.py\n+++ b/core.py\n+good fix",
             "FAIL_TO_PASS": json.dumps(["test_fixed"]), "PASS_TO_PASS": "[]"}]
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ref.parquet")
    assert load_reference(tmp_path / "ref.parquet").fixes == load_reference(ref).fixes
    builder = PromptBuilder(PromptConfig(reference=str(ref)))
    assert builder.sections == ("tests", "diff", "reference")
    text = prompt_of(builder, traj)
    assert text.index("### The final patch") < text.index("### A reference fix")
    assert "+good fix" in text and "Tests this fix makes pass (FAIL_TO_PASS): test_fixed" in text
    assert "+bad" in text and "Do not call a step a mistake only because" in text
    assert "A reference fix" not in prompt_of(PromptBuilder(), traj)
    ref.write_text(ref.read_text().replace("good fix", "other fix"))
    assert PromptBuilder(PromptConfig(reference=str(ref))).prompt_hash != builder.prompt_hash  # its sha256
    with pytest.raises(ValueError, match="add reference to the evidence"):
        PromptConfig(reference=str(ref), evidence=["tests"])
    with pytest.raises(ValueError, match="needs a reference file"):
        PromptConfig(evidence=["reference"])


@pytest.mark.parametrize("rows,message", [
    ([{"instance_id": "i-0", "diff": "x"}], "no 'patch' column (columns: diff, instance_id)"),
    ([{"instance_id": "i-0", "patch": "a"}, {"instance_id": "i-0", "patch": "b"}],
     "ref.jsonl:2: duplicate instance 'i-0' (first at row 1)"),
    ([{"instance_id": "i-0", "patch": ""}, {"patch": "x"}], "ref.jsonl:1: instance 'i-0' has no patch; "
                                                          "ref.jsonl:2: no instance_id"),
    ([{"instance_id": "i-0", "patch": "a"}, {"instance_id": "elsewhere-9", "patch": "b"}],
     "1 of 2 instance(s) are not in the store (elsewhere-9); keep only the store's instances"),
])
def test_bad_reference_files_fail_before_any_call(tmp_path, rows, message):
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = write_store(tmp_path / "s", [simple_traj(2, instance="i-0")])
    with FakeCriticServer() as server:
        with pytest.raises(ReferenceError) as err:
            run_annotate(store, tmp_path / "o", openai_cfg(server.url, prompt={"reference": str(ref)}))
        assert server.requests == []
    assert message in str(err.value)


def test_annotate_reports_the_evidence_and_its_budget(tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"instance_id": "i-0", "patch": "+fix\n" * 400}) + "\n"
                   + json.dumps({"instance_id": "absent-1", "patch": "+x"}) + "\n")
    trajs = [with_hindsight(simple_traj(2, instance="i-0"), patch="+mine"),
             with_hindsight(simple_traj(2, instance="i-1"), tests=[
                 TestResult(name="t", group="FAIL_TO_PASS", passed=False)])]
    cfg = openai_cfg("", prompt={"reference": str(ref), "reference_unknown": "ignore", "reference_tokens": 100})
    with FakeCriticServer() as server:
        cfg["critic"]["options"]["base_url"] = server.url
        result = annotate_trajectories(trajs, cfg)
        prompts = {r.prompt.split("Task of ")[1].split(":")[0]: r.prompt for r in server.requests}
    evidence = result.summary["evidence"]
    assert evidence["sections"] == ["tests", "diff", "reference"]
    assert evidence["budget_tokens"] == {"tests": 384, "diff": 1024, "reference": 100}
    assert evidence["trajectories"] == {"tests": 1, "diff": 1, "reference": 1}
    assert evidence["tokens_cut"]["reference"] > 0 and 0 < evidence["prompt_tokens"]["reference"] <= 100
    assert evidence["reference"]["instances"] == 2
    assert "+mine" in prompts["i-0"] and "+fix" in prompts["i-0"] and "FAIL t" in prompts["i-1"]
    assert "+fix" not in prompts["i-1"] and "+mine" not in prompts["i-1"]
    assert result.summary["failed"] == 0 and len(result.labels) == 4


def test_outcome_tests_survive_the_store(tmp_path):
    tests = [TestResult(name="test_a", group="FAIL_TO_PASS", passed=False)]
    traj = simple_traj(1, instance="s").model_copy(update={"outcome": Outcome.from_status("unresolved", "x")
                                                           .model_copy(update={"tests": tests})})
    [back] = iter_trajectories(write_store(tmp_path, [traj]))
    assert back.outcome.tests == tests and back == traj


@pytest.mark.parametrize("budget", [64, 128, 256])
def test_reference_section_keeps_to_its_budget_with_many_long_test_names(budget):
    from srft.critic.evidence import ReferenceFix, reference_text
    from srft.critic.prompt import TokenCounter

    counter = TokenCounter()
    names = [f"tests/test_module_{k}.py::TestSomething::test_a_rather_long_parametrised_name[case-{k}]"
             for k in range(30)]
    fix = ReferenceFix(patch="+    return a / b\n" * 50, fail_to_pass=names)
    text, cut = reference_text(fix, budget, counter)
    assert counter.count(text) <= budget and cut > 0
    assert "FAIL_TO_PASS" in text and "return a / b" in text  # both parts survive the cut
