"""Votes with confidence: K samples per window (each cached on its own, resumable after kill -9), label
probabilities from token log-probabilities, ensemble votes, the step-label file's optional columns, and the
settings that must fail before any call."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from critic_support import sigkill_after_answers, simple_traj, write_store

from srft.critic.annotate import annotate_trajectories, run_annotate
from srft.critic.cache import CacheKey
from srft.critic.confidence import label_probs, tally
from srft.labels import LabelFileError, StepLabel, read_labels, write_labels
from srft.testing.fake_openai import FakeCriticServer

FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.1, "timeout_s": 5.0}


def openai_cfg(url: str, *, options: dict | None = None, **extra) -> dict:
    return {"critic": {"name": "openai", "options": {"base_url": url, "model": "m", **FAST, **(options or {})}},
            **extra}


def test_samples_vote_per_step_and_the_file_keeps_votes_and_confidence(tmp_path):
    trajs = [simple_traj(3, instance="v", hint={2: "mistake,good,mistake", 3: "good,unnecessary,recover"})]
    store = write_store(tmp_path / "s", trajs)
    with FakeCriticServer() as server:
        cfg = openai_cfg(server.url, options={"temperature": 0.7, "seed": 10}, samples=3)
        report = run_annotate(store, tmp_path / "o", cfg)
        assert sorted(r.body["seed"] for r in server.requests) == [10, 11, 12]  # one seed per sample
        again = run_annotate(store, tmp_path / "o", cfg)
        assert len(server.requests) == 3 and again["cached"] == 3 and again["calls"] == 0
    # seeds 10, 11, 12 pick hints 10 % 3 = 1, 2, 0: step 2 -> good, mistake, mistake; step 3 -> unnecessary,
    # recover, good (a three-way tie: the earliest sample's label wins)
    labels = {lab.step: lab for lab in read_labels(tmp_path / "o" / "annotations.parquet")}
    assert (labels[1].label, labels[1].votes, labels[1].confidence) == ("good", {"good": 3}, 1.0)
    assert (labels[2].label, labels[2].votes) == ("mistake", {"good": 1, "mistake": 2})
    assert labels[2].confidence == pytest.approx(2 / 3, abs=1e-6)
    assert (labels[3].label, labels[3].votes) == ("unnecessary", {"good": 1, "unnecessary": 1, "recover": 1})
    assert read_labels(tmp_path / "o" / "annotations.jsonl") == list(labels.values())
    conf = report["confidence"]
    assert conf["mode"] == "votes" and conf["samples"] == 3 and conf["steps"] == 3 and conf["certain"] == 1
    assert conf["mean"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3, abs=1e-5)


def test_a_sample_that_stays_invalid_abstains_and_is_reported():
    from srft.testing.fake_openai import Reply

    def babble_on_seed_1(req):
        return Reply(content="no idea") if req.body.get("seed") == 1 else None

    with FakeCriticServer(plan=babble_on_seed_1) as server:
        result = annotate_trajectories([simple_traj(2, instance="a", hint={1: "mistake,mistake,good"})],
                                       openai_cfg(server.url, options={"temperature": 0.5}, samples=3))
    [res] = result.results
    assert res.status == "ok" and res.abstained == 1 and len(res.raw) == 2  # its answer and its re-ask
    assert result.summary["confidence"]["abstained_samples"] == 1
    first = result.labels[0]
    assert (first.label, first.votes, first.confidence) == ("mistake", {"mistake": 1, "good": 1}, 0.5)


def test_bad_sampling_settings_fail_before_any_call(tmp_path):
    store = write_store(tmp_path / "s", [simple_traj(2, instance="x")])
    with FakeCriticServer(logprobs=False) as server:
        cases = [(openai_cfg(server.url, samples=3), "--samples 3 needs sampling, but critic openai:m has "
                                                     "temperature 0.0"),
                 (openai_cfg(server.url, samples=0), "samples"),
                 ({"samples": 2}, "apply to LLM critics"),
                 (openai_cfg(server.url, options={"temperature": 1.0}, samples=2, confidence="logprobs"),
                  "does not combine with --samples 2")]
        for cfg, message in cases:
            with pytest.raises(ValueError, match=message):
                run_annotate(store, tmp_path / "o", cfg)
        assert server.requests == []
        with pytest.raises(ValueError, match="returned no token log-probabilities for a probe request"):
            run_annotate(store, tmp_path / "o", openai_cfg(server.url, confidence="logprobs"))
        assert [r.body.get("response_format") for r in server.requests] == [None]  # the probe, no labelling


def test_logprobs_give_label_probabilities_and_survive_the_cache(tmp_path):
    store = write_store(tmp_path / "s", [simple_traj(3, instance="p", hint={2: "mistake,mistake,good,recover"})])
    with FakeCriticServer() as server:
        cfg = openai_cfg(server.url, confidence="logprobs", cache=str(tmp_path / "c.sqlite"))
        first = run_annotate(store, tmp_path / "a", cfg)
        second = run_annotate(store, tmp_path / "b", cfg)  # every answer from the shared cache
        asked = [r for r in server.requests if r.body.get("response_format")]
        assert len(asked) == 1 and asked[0].body["logprobs"] is True and asked[0].body["top_logprobs"] == 10
    assert first["confidence"]["steps"] == 3 and second["cached"] == 1 and second["calls"] == 0
    gone = run_annotate(store, tmp_path / "c", cfg)  # the server is down: no probe needed, every answer cached
    assert gone["cached"] == 1 and gone["failed"] == 0 and gone["confidence"]["steps"] == 3
    labels = {lab.step: lab for lab in read_labels(tmp_path / "b" / "annotations.parquet")}
    assert labels[1].probs == {"good": 1.0} and labels[1].confidence == 1.0 and labels[1].votes is None
    assert labels[2].label == "mistake"
    assert labels[2].probs == pytest.approx({"mistake": 0.5, "good": 0.25, "recover": 0.25})
    assert labels[2].confidence == pytest.approx(0.5)
    assert read_labels(tmp_path / "a" / "annotations.jsonl") == list(labels.values())


def test_label_probabilities_from_llama_cpp_shaped_tokens():
    """Token shapes as llama-cpp-python 0.3.36 returned them for SmolLM2 (the label value split mid-word, the
    opening quote glued to the colon): alternatives that start another label count for it, others are dropped."""
    text = ('{"steps":[{ "step" : 1, "label":"recover", "reason":"x"} , '
            '{"step" : 2, "label":"unnecessary","reason":"y"}]}')
    pieces = ['{"', 'step', 's', '":', '[', '{', ' "', 'step', '"', ' :', ' ', '1', ',', ' "', 'label', '":"', 're',
              'co', 'ver', '",', ' "', 'reason', '":"', 'x', '"}', ' ', ',', ' ', '{"', 'step', '"', ' :', ' ', '2',
              ',', ' "', 'label', '":"', 'un', 'necessary', '","', 'reason', '":"', 'y', '"}', ']}']
    assert "".join(pieces) == text
    top = {16: [("re", -1.0), ("good", -2.0), ("step", -0.5), ("mi", -3.0)],
           38: [("re", -2.22), ("un", -4.6), ("delete", -2.71)]}
    tokens = [{"token": p, "logprob": dict(top.get(i, [(p, 0.0)])).get(p, -9.0),
               "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.get(i, [(p, 0.0)])]}
              for i, p in enumerate(pieces)]
    probs = label_probs(text, tokens)
    z1 = math.exp(-1) + math.exp(-2) + math.exp(-3)
    assert probs[1] == pytest.approx({"recover": math.exp(-1) / z1, "good": math.exp(-2) / z1,
                                      "mistake": math.exp(-3) / z1}, abs=1e-6)
    z2 = math.exp(-2.22) + math.exp(-4.6)
    assert probs[2] == pytest.approx({"unnecessary": math.exp(-4.6) / z2, "recover": math.exp(-2.22) / z2},
                                     abs=1e-6)
    assert label_probs(text, tokens[:30]) == {}  # tokens that do not cover the answer: nothing is guessed


def test_ensemble_labels_keep_the_members_votes():
    traj = simple_traj(2, instance="e")
    members = [{"name": "critic_support:build_constant", "options": {"label": "good"}},
               {"name": "critic_support:build_echo", "options": {"label": "mistake"}},
               {"name": "critic_support:build_echo", "options": {"label": "mistake"}}]
    result = annotate_trajectories([traj], {"critic": {"name": "ensemble", "options": {"members": members}}})
    assert [(lab.label, lab.votes, lab.confidence) for lab in result.labels] == [
        ("mistake", {"good": 1, "mistake": 2}, 0.666667)] * 2
    assert result.summary["confidence"]["steps"] == 2


def test_an_ensemble_sums_its_members_unscored_steps():
    import asyncio

    from srft.critic import TrajectoryResult, labelled_steps
    from srft.critic.ensemble import EnsembleConfig, EnsembleCritic

    class Member:  # a logprobs member that could not score some steps
        prompt_hash = None

        def __init__(self, name, unscored):
            self.id, self.unscored = name, unscored

        async def label(self, traj):
            labels = [StepLabel(trajectory_id=traj.id, step=n, label="good", source=self.id)
                      for n in labelled_steps(traj)]
            return TrajectoryResult(trajectory_id=traj.id, status="ok", labels=labels, unscored_steps=self.unscored)

    config = EnsembleConfig(members=[{"name": "a"}, {"name": "b"}])
    ensemble = EnsembleCritic(config, [Member("a", 2), Member("b", 1)])
    assert asyncio.run(ensemble.label(simple_traj(2, instance="u"))).unscored_steps == 3


def test_votes_tally_and_the_label_file_schema(tmp_path):
    assert tally(["good", "mistake", "mistake"]) == ("mistake", {"good": 1, "mistake": 2}, 2 / 3)
    assert tally(["recover", "good"], "severity") == ("recover", {"good": 1, "recover": 1}, 0.5)
    plain = StepLabel(trajectory_id="t", step=1, label="good", source="heuristic")
    write_labels(tmp_path / "old.jsonl", [plain])
    write_labels(tmp_path / "old.parquet", [plain])
    assert set(json.loads((tmp_path / "old.jsonl").read_text())) == {"trajectory_id", "step", "label", "reason",
                                                                    "source", "prompt_hash"}  # old files stay
    import pyarrow.parquet as pq

    assert "votes" not in pq.read_schema(tmp_path / "old.parquet").names
    assert read_labels(tmp_path / "old.parquet") == [plain]
    bad = [{"trajectory_id": "t", "step": 1, "label": "good", "votes": {"mistake": 2}},
           {"trajectory_id": "t", "step": 2, "label": "good", "probs": {"good": 0.5}},
           {"trajectory_id": "t", "step": 3, "label": "good", "confidence": 1.5}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(LabelFileError) as err:
        read_labels(tmp_path / "bad.jsonl")
    assert len(err.value.problems) == 3 and "needs a vote" in err.value.problems[0]
    assert "sum to 1" in err.value.problems[1] and "confidence" in err.value.problems[2]


def test_sample_zero_keeps_the_old_cache_key_and_other_samples_get_their_own():
    args = {"trajectory_id": "t", "prompt_hash": "p", "backend": "openai", "fingerprint": {"model": "m"},
            "window": 0, "attempt": 0, "messages": [{"role": "user", "content": "x"}]}
    assert CacheKey.make(**args).digest == CacheKey.make(**args, sample=0).digest
    assert len({CacheKey.make(**args, sample=k).digest for k in range(3)}) == 3


def test_sigkill_with_samples_then_resume_repeats_no_finished_sample(tmp_path):
    trajs = [simple_traj(2, instance=f"k{k:02d}", hint={1: "good,mistake,mistake"}) for k in range(6)]
    store, out = write_store(tmp_path / "store", trajs), tmp_path / "out"
    srft = Path(sys.executable).parent / "srft"

    def unit(request) -> tuple[str, int]:
        return request.prompt.split("Task of ")[1].split(":")[0], request.body["seed"]

    with FakeCriticServer(delay_s=0.3) as server:
        cmd = [str(srft), "annotate", str(store), "--out", str(out), "--critic", "openai", "-o",
               f"base_url={server.url}", "-o", "model=slow", "-o", "temperature=0.9", "--samples", "3",
               "--concurrency", "2", "--json"]
        sigkill_after_answers(cmd, server)
        time.sleep(0.5)  # let answers that were mid-flight settle
        finished = {unit(r) for r in server.requests if r.finished is not None}
        n_before = len(server.requests)
        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = [unit(r) for r in server.requests[n_before:]]
    report = json.loads(resumed.stdout)
    assert report["calls"] == len(after) == 18 - report["cached"] and report["cached"] >= 3
    assert len(finished - set(after)) >= len(finished) - 2  # at most the 2 in flight when it died are asked again
    assert len(set(after)) == len(after)  # and nothing twice
    labels = read_labels(out / "annotations.parquet")
    assert len(labels) == 12 and {lab.votes["mistake"] for lab in labels if lab.step == 1} == {2}


@pytest.mark.parametrize("extra,message", [
    (["--samples", "0"], "samples"),
    (["--samples", "3"], "--samples 3 needs sampling"),
    (["--confidence", "logprobs"], "returned no token log-probabilities"),
    (["--confidence", "sure"], "confidence"),
    (["--evidence", "tests,hunch"], "evidence"),
    (["--reference", "REF"], "not in the store (other-1)"),
    (["--reference", "REF", "--evidence", "tests"], "add reference to the evidence"),
])
def test_cli_bad_confidence_and_evidence_input_is_one_error_before_any_call(tmp_path, extra, message):
    from typer.testing import CliRunner

    from srft.cli import app

    store = write_store(tmp_path / "s", [simple_traj(2, instance="x")])
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"instance_id": "other-1", "patch": "+x"}) + "\n")
    with FakeCriticServer(logprobs=False) as server:
        result = CliRunner().invoke(app, ["annotate", str(store), "--out", str(tmp_path / "o"), "--critic", "openai",
                                          "-o", f"base_url={server.url}", "-o", "model=m", "--json",
                                          *[str(ref) if a == "REF" else a for a in extra]])
        labelling = [r for r in server.requests if r.body.get("response_format")]
    assert result.exit_code == 2, result.output
    assert message in json.loads(result.stdout)["error"] and labelling == []
