"""The response cache, and resume after a real SIGKILL: nothing finished is lost, no finished call is repeated."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from critic_support import sigkill_after_answers, simple_traj, write_store

from srft.critic.cache import CachedResponse, CacheKey, ResponseCache
from srft.testing.fake_openai import FakeCriticServer
from srft.labels import read_labels

MESSAGES = [{"role": "user", "content": "label these steps"}]


def key(**change) -> CacheKey:
    args = {"trajectory_id": "t1", "prompt_hash": "p1", "backend": "openai", "fingerprint": {"model": "m"},
            "window": 0, "attempt": 0, "messages": MESSAGES, **change}
    return CacheKey.make(**args)


def test_cache_round_trip_persists_and_is_shared_between_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    first, second = ResponseCache(path), ResponseCache(path)
    assert not path.exists()  # opened lazily: a critic that never calls (heuristic) makes no file
    assert first.get(key()) is None
    first.put(key(), CachedResponse('{"steps": []}', 120, 30, "stop"))
    assert second.get(key()) == CachedResponse('{"steps": []}', 120, 30, "stop")  # another connection sees it
    first.close()
    second.close()
    reopened = ResponseCache(path)
    assert reopened.get(key()).raw == '{"steps": []}' and len(reopened) == 1
    assert reopened.trajectory_ids() == {"t1"}
    reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_key_changes_with_every_component():
    base = key().digest
    variants = [key(trajectory_id="t2"), key(prompt_hash="p2"), key(backend="transformers"),
                key(fingerprint={"model": "m", "temperature": 0.7}), key(window=1), key(attempt=1),
                key(messages=[{"role": "user", "content": "label these steps!"}])]
    digests = {v.digest for v in variants}
    assert base not in digests and len(digests) == len(variants)
    assert key(fingerprint={"b": 1, "a": 2}).digest == key(fingerprint={"a": 2, "b": 1}).digest


def _stored(cache: Path) -> set[str]:
    with sqlite3.connect(cache) as db:
        return {row[0] for row in db.execute("SELECT trajectory_id FROM responses")}


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    trajs = [simple_traj(2, instance=f"k{k:02d}") for k in range(12)]
    by_instance = {t.instance_id: t.id for t in trajs}
    store = write_store(tmp_path / "store", trajs)
    out = tmp_path / "out"
    srft = Path(sys.executable).parent / "srft"

    def traj_of(request) -> str:
        return by_instance[request.prompt.split("Task of ")[1].split(":")[0]]

    with FakeCriticServer(delay_s=0.4) as server:
        cmd = [str(srft), "annotate", str(store), "--out", str(out), "--critic", "openai", "-o",
               f"base_url={server.url}", "-o", "model=slow", "--concurrency", "2", "--json"]
        proc = sigkill_after_answers(cmd, server)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.6)  # let server threads that were mid-answer (delay 0.4 s) settle before we look
        finished_before = {traj_of(r) for r in server.requests if r.finished is not None}
        n_before = len(server.requests)
        stored = _stored(out / "critic_cache.sqlite")
        assert not (out / "annotate_report.json").exists()  # the run died before writing its outputs
        # nothing finished is lost: every answer the server completed is stored, except at most the ones the
        # client was still reading when it died (at most `concurrency` = 2)
        assert stored <= finished_before and len(finished_before - stored) <= 2 and len(stored) >= 3

        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = server.requests[n_before:]
    report = json.loads(resumed.stdout)
    assert report["cached"] == len(stored) and report["calls"] == 12 - len(stored) == len(after)
    repeated = {traj_of(r) for r in after} & stored
    assert not repeated, f"finished calls were repeated after the restart: {repeated}"
    labels = read_labels(out / "annotations.parquet", {t.id: t for t in trajs})
    assert len(labels) == 24 and {lab.trajectory_id for lab in labels} == set(by_instance.values())
