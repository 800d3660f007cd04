"""The OpenAI-compatible critic against a local HTTP server that misbehaves on purpose (real sockets)."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from critic_support import simple_traj, write_store
from typer.testing import CliRunner

from srft.cli import app
from srft.critic.annotate import annotate_trajectories, run_annotate
from srft.testing.fake_openai import FakeCriticServer, Reply
from srft.critic.openai_compat import retry_after_seconds
from srft.labels import read_labels

FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.1, "timeout_s": 5.0}


def openai_cfg(url: str, **extra) -> dict:
    options = {"base_url": url, "model": "fake-critic", **FAST, **extra.pop("options", {})}
    return {"critic": {"name": "openai", "options": options}, **extra}


def first_n(n: int, reply_fn):
    """A plan that injects `reply_fn()` into the first n requests of every distinct prompt+attempt."""
    seen: Counter = Counter()
    lock = threading.Lock()

    def plan(req):
        with lock:
            key = (req.prompt, req.attempt)
            seen[key] += 1
            hit = seen[key] <= n
        return reply_fn(req) if hit else None
    return plan


def test_every_step_labelled_once_and_rerun_is_all_cache_hits(tmp_path):
    trajs = [simple_traj(3, instance=f"i-{k}", hint={2: "mistake"}) for k in range(4)]
    trajs.append(simple_traj(2, instance="done", resolved=True))  # resolved: not sent to the critic
    store = write_store(tmp_path / "store", trajs)
    with FakeCriticServer() as server:
        first = run_annotate(store, tmp_path / "a", openai_cfg(server.url))
        assert len(server.requests) == 4 and first["calls"] == 4 and first["cached"] == 0
        written = (tmp_path / "a" / "annotations.parquet").read_bytes()
        again = run_annotate(store, tmp_path / "a", openai_cfg(server.url))
        assert len(server.requests) == 4, "a re-run must not call the server for finished trajectories"
    assert again["calls"] == 0 and again["cached"] == 4
    assert first["labels"] == {"good": 8, "unnecessary": 0, "mistake": 4, "recover": 0}
    labels = read_labels(tmp_path / "a" / "annotations.parquet", {t.id: t for t in trajs})
    assert sorted((lab.trajectory_id, lab.step) for lab in labels) == sorted(
        (t.id, n) for t in trajs[:4] for n in (1, 2, 3))
    assert {lab.source for lab in labels} == {"openai:fake-critic"}
    assert {lab.prompt_hash for lab in labels} == {first["prompt_hash"]} and first["prompt_hash"]
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert (tmp_path / "a" / "annotations.parquet").read_bytes() == written  # same answers, same bytes
    rows = [json.loads(x) for x in (tmp_path / "a" / "annotate_trajectories.jsonl").read_text().splitlines()]
    assert [r["trajectory_id"] for r in rows] == sorted(t.id for t in trajs[:4])
    assert all(r["cached"] == 1 and r["calls"] == 0 for r in rows)


def test_429_with_retry_after_is_honoured():
    def limited(req):
        return Reply(status=429, headers={"Retry-After": "1"}, body=b'{"error": "rate limited"}')

    with FakeCriticServer(plan=first_n(1, limited)) as server:
        result = annotate_trajectories([simple_traj(2, instance="r")], openai_cfg(server.url))
    assert result.summary["failed"] == 0 and result.summary["retries"] == 1
    first, second = server.requests
    assert second.started - first.started >= 0.95, "the client must wait the server's Retry-After"
    assert retry_after_seconds("2.5") == 2.5 and retry_after_seconds("garbage") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: no wait


def test_server_errors_slow_truncated_and_non_json_bodies_are_retried():
    faults = iter([Reply(status=500, body=b"internal error"), Reply(status=503, body=b"overloaded"),
                   Reply(delay_s=1.5), Reply(truncate=True), Reply(body=b"<html>gateway</html>"),
                   Reply(body=b'{"choices": []}')])
    lock = threading.Lock()

    def plan(req):
        with lock:
            return next(faults, None)

    with FakeCriticServer(plan=plan) as server:
        cfg = openai_cfg(server.url, options={"timeout_s": 0.5})
        result = annotate_trajectories([simple_traj(3, instance="f")], cfg)
    assert result.summary["failed"] == 0 and result.summary["calls"] == 1
    assert result.summary["retries"] == 6 and len(server.requests) == 7
    assert [lab.label for lab in result.labels] == ["good", "good", "good"]


def test_wrong_step_count_gets_one_reask_quoting_the_error():
    def short(req):  # attempt 0 answers one step too few
        return Reply(content=json.dumps({"steps": [{"step": n, "label": "good", "reason": "ok"}
                                                   for n in req.steps[:-1]]})) if req.attempt == 0 else None

    with FakeCriticServer(plan=short) as server:
        result = annotate_trajectories([simple_traj(3, instance="w")], openai_cfg(server.url))
    assert result.summary["repaired"] == 1 and result.summary["failed"] == 0 and result.summary["calls"] == 2
    assert len(result.labels) == 3
    reask = server.requests[1].body["messages"]
    assert [m["role"] for m in reask] == ["user", "assistant", "user"]
    assert "2 entries for 3 steps; missing steps 3" in reask[2]["content"]


def test_answers_bad_twice_fail_the_trajectory_with_raw_kept(tmp_path):
    trajs = [simple_traj(2, instance="bad"), simple_traj(2, instance="good")]
    store = write_store(tmp_path / "s", trajs)

    def babble(req):
        return Reply(content="Step 1 looks fine to me!") if "Task of bad" in req.prompt else None

    with FakeCriticServer(plan=babble) as server:
        report = run_annotate(store, tmp_path / "o", openai_cfg(server.url))
        bad_requests = [r for r in server.requests if "Task of bad" in r.prompt]
        assert [r.attempt for r in bad_requests] == [0, 1], "exactly one re-ask"
        fell_back = run_annotate(store, tmp_path / "f", openai_cfg(server.url, fallback="mistake"))
        assert len(server.requests) == 6  # a new output folder has its own (empty) cache
    assert report["failed"] == 1 and report["failed_by_reason"] == {"invalid_answer": 1}
    assert report["labelled_trajectories"] == 1 and report["steps"] == 2 and report["fallback_steps"] == 0
    [failure] = [json.loads(x) for x in (tmp_path / "o" / "critic_failures.jsonl").read_text().splitlines()]
    bad_id = next(t.id for t in trajs if t.instance_id == "bad")
    assert failure["trajectory_id"] == bad_id and failure["failure"] == "invalid_answer"
    assert [r["raw"] for r in failure["raw"]] == ["Step 1 looks fine to me!"] * 2
    assert "not valid JSON" in failure["raw"][0]["error"]
    labels = read_labels(tmp_path / "f" / "annotations.jsonl")
    assert {(lab.step, lab.label, lab.source) for lab in labels if lab.trajectory_id == bad_id} == {
        (1, "mistake", "fallback"), (2, "mistake", "fallback")}
    assert fell_back["fallback_steps"] == 2 and fell_back["steps"] == 2


def test_server_gone_a_cached_rerun_completes_and_a_new_call_stops_the_run_at_once(tmp_path):
    import time

    from srft.critic import Unreachable

    trajs = [simple_traj(3, instance=f"i-{k}", hint={2: "mistake"}) for k in range(3)]
    store = write_store(tmp_path / "store", trajs)
    with FakeCriticServer() as server:
        first = run_annotate(store, tmp_path / "a", openai_cfg(server.url))
        written = (tmp_path / "a" / "annotations.parquet").read_bytes()
    again = run_annotate(store, tmp_path / "a", openai_cfg(server.url))  # nothing listens there now
    assert again["calls"] == 0 and again["cached"] == 3 and again["failed"] == 0
    assert (tmp_path / "a" / "annotations.parquet").read_bytes() == written and first["failed"] == 0
    more = write_store(tmp_path / "more", [*trajs, simple_traj(2, instance="new")])
    started = time.monotonic()
    with pytest.raises(Unreachable, match="cannot connect to 127.0.0.1"):
        run_annotate(more, tmp_path / "a", openai_cfg(server.url, options={"max_retries": 5}))
    assert time.monotonic() - started < 10, "an unreachable endpoint must not be retried call by call"


def test_backend_that_gives_up_is_retried_on_the_next_run(tmp_path):
    store = write_store(tmp_path / "s", [simple_traj(2, instance="x")])
    with FakeCriticServer(plan=lambda req: Reply(status=503, body=b"down")) as down:
        report = run_annotate(store, tmp_path / "o", openai_cfg(down.url, options={"max_retries": 2}))
        assert len(down.requests) == 3
    assert report["failed_by_reason"] == {"backend_error": 1} and report["calls"] == 0
    with FakeCriticServer() as up:
        again = run_annotate(store, tmp_path / "o", openai_cfg(up.url))
    assert again["failed"] == 0 and again["calls"] == 1 and again["cached"] == 0


def test_client_errors_are_not_retried():
    with FakeCriticServer(plan=lambda req: Reply(status=404, body=b'{"error": "model not found"}')) as server:
        result = annotate_trajectories([simple_traj(1, instance="x")], openai_cfg(server.url))
    assert len(server.requests) == 1 and result.summary["failed_by_reason"] == {"backend_error": 1}
    assert "model not found" in result.results[0].error


def test_structured_output_falls_back_to_the_llama_cpp_form():
    def llama_like(req):  # llama-cpp-python 0.3.36's server, verbatim: a 500 for an unknown response_format type
        if req.body["response_format"]["type"] == "json_schema":
            return Reply(status=500, body=b'{"error":{"message":"1 validation error:\\n  {\'type\': \'literal_error\', '
                                          b'\'loc\': (\'body\', \'response_format\', \'type\'), \'msg\': \\"Input '
                                          b'should be \'text\' or \'json_object\'\\", \'input\': \'json_schema\'}",'
                                          b'"type":"internal_server_error"}}')
        return None

    with FakeCriticServer(plan=llama_like) as server:
        result = annotate_trajectories([simple_traj(2, instance=f"s{k}") for k in range(3)],
                                       openai_cfg(server.url, concurrency=1))
    types = [r.body["response_format"]["type"] for r in server.requests]
    assert types == ["json_schema", "json_object", "json_object", "json_object"]
    assert server.requests[1].body["response_format"]["schema"]["properties"]["steps"]["maxItems"] == 2
    assert server.requests[0].body["response_format"]["json_schema"]["strict"] is True
    mode = result.summary["structured_output"]["openai:fake-critic"]
    assert mode["mode"] == "json_object" and "HTTP 500" in mode["changes"][0]
    assert result.summary["retries"] == 0  # a refused format is not a transient error
    assert result.summary["failed"] == 0
    with FakeCriticServer(plan=llama_like) as server:  # an explicit mode the server refuses: no pointless retries
        pinned = annotate_trajectories([simple_traj(1, instance="p")],
                                       openai_cfg(server.url, options={"structured": "json_schema"}))
    assert len(server.requests) == 1 and "set structured to auto" in pinned.results[0].error
    with FakeCriticServer(plan=llama_like, delay_s=0.2) as server:  # regression: 3 refusals in flight at once
        racing = annotate_trajectories([simple_traj(2, instance=f"s{k}") for k in range(3)],
                                       openai_cfg(server.url, concurrency=3))
    assert Counter(r.body["response_format"]["type"] for r in server.requests) == {"json_schema": 3,
                                                                                  "json_object": 3}
    assert racing.summary["structured_output"]["openai:fake-critic"]["mode"] == "json_object"


def test_api_key_is_sent_but_never_written(tmp_path, monkeypatch):
    secret = "sk-test-4f1d9a77c0ffee"
    monkeypatch.setenv("SRFT_TEST_KEY", secret)
    store = write_store(tmp_path / "s", [simple_traj(2, instance="k")])
    with FakeCriticServer(plan=lambda req: Reply(status=400, body=b"bad") if req.attempt else None) as server:
        run_annotate(store, tmp_path / "o", openai_cfg(server.url, options={"api_key_env": "SRFT_TEST_KEY"}))
    assert server.requests[0].headers["Authorization"] == f"Bearer {secret}"
    for path in (tmp_path / "o").iterdir():
        assert secret.encode() not in path.read_bytes(), path.name
    report = json.loads((tmp_path / "o" / "annotate_report.json").read_text())
    assert report["config"]["critic"]["options"]["api_key_env"] == "SRFT_TEST_KEY"


def test_concurrency_limit_holds_and_is_used():
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def track(req):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        import time
        time.sleep(0.5)
        with lock:
            in_flight[0] -= 1
        return None

    with FakeCriticServer(plan=track) as server:
        trajs = [simple_traj(2, instance=f"c{k}") for k in range(8)]
        result = annotate_trajectories(trajs, openai_cfg(server.url, concurrency=3))
    assert result.summary["calls"] == 8 and peak[0] == 3


def test_cli_json_output_and_exit_codes(tmp_path):
    store = write_store(tmp_path / "s", [simple_traj(3, instance="c", hint={3: "recover"})])
    runner = CliRunner()
    with FakeCriticServer() as server:
        ok = runner.invoke(app, ["annotate", str(store), "--out", str(tmp_path / "o"), "--critic", "openai",
                                 "-o", f"base_url={server.url}", "-o", "model=m", "--concurrency", "2", "--json"])
        assert ok.exit_code == 0, ok.output
        data = json.loads(ok.stdout)
        for key in ("trajectories", "steps", "labels", "calls", "cached", "repaired", "failed", "prompt_tokens",
                    "completion_tokens"):
            assert key in data
        assert data["labels"]["recover"] == 1 and data["calls"] == 1
    with FakeCriticServer(plan=lambda req: Reply(content="no idea")) as server:
        bad = runner.invoke(app, ["annotate", str(store), "--out", str(tmp_path / "b"), "--critic", "openai",
                                  "-o", f"base_url={server.url}", "-o", "model=m", "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["failed"] == 1
    stray = runner.invoke(app, ["annotate", str(store), "--out", str(tmp_path / "x"), "-o", "base_url=http://x",
                                "--json"])  # the heuristic critic's config has no base_url: an error, not ignored
    assert stray.exit_code == 2 and "critic 'heuristic' options: base_url: unknown key" in json.loads(
        stray.stdout)["error"]
    typo = runner.invoke(app, ["annotate", str(store), "--out", str(tmp_path / "x"), "--critic", "openai",
                               "-o", "model=m", "--option", "temprature=0.5"])
    assert typo.exit_code == 2 and "temprature: unknown key; did you mean 'temperature'?" in typo.output


@pytest.mark.parametrize("only,expected", [("unresolved", 1), ("all", 2)])
def test_only_selects_trajectories(tmp_path, only, expected):
    trajs = [simple_traj(1, instance="u"), simple_traj(1, instance="r", resolved=True)]
    with FakeCriticServer() as server:
        result = annotate_trajectories(trajs, openai_cfg(server.url, only=only))
    assert result.summary["trajectories"] == expected == len(server.requests)


def test_runs_from_inside_a_running_event_loop(tmp_path):
    """Regression: notebooks and async apps already run a loop; the stage then runs in a helper thread, and the
    SQLite cache must be opened and closed in that thread."""
    import asyncio

    async def app_code():
        with FakeCriticServer() as server:
            return annotate_trajectories([simple_traj(2, instance="nb")], openai_cfg(server.url),
                                         cache_path=tmp_path / "cache.sqlite")

    result = asyncio.run(app_code())
    assert result.summary["calls"] == 1 and len(result.labels) == 2


def test_fake_server_reads_the_steps_from_the_answer_schema_only():
    import httpx

    from srft.critic.parse import answer_schema

    prompt = "It must hold exactly one entry for each step 1 to 3.\n### Step 1 label@1:mistake"
    with FakeCriticServer() as server:
        def ask(**body):
            reply = httpx.post(f"{server.url}/chat/completions", timeout=5,
                               json={"model": "m", "messages": [{"role": "user", "content": prompt}], **body})
            return json.loads(reply.json()["choices"][0]["message"]["content"])

        schema = answer_schema([5, 6])
        assert ask(response_format={"type": "json_object", "schema": schema}) == {"steps": [
            {"step": 5, "label": "good", "reason": "step 5 judged"},
            {"step": 6, "label": "good", "reason": "step 6 judged"}]}
        named = answer_schema([1, 2], style="enum")
        answer = ask(response_format={"type": "json_schema", "json_schema": {"schema": named}}, seed=0)
        assert [(s["step"], s["label"]) for s in answer["steps"]] == [(1, "mistake"), (2, "good")]
    with FakeCriticServer() as server:
        reply = httpx.post(f"{server.url}/chat/completions", timeout=5,
                           json={"model": "m", "messages": [{"role": "user", "content": prompt}]})
        assert reply.json()["choices"][0]["message"]["content"] == "yes"  # no schema: no steps to answer
