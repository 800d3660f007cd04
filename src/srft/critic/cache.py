"""The response cache: raw critic answers in SQLite (WAL), so re-runs and restarts repeat no finished call.

Key = sha256 over (prompt hash, trajectory id, backend fingerprint = backend + model + sampling params, window,
attempt, sample (when several answers are drawn per window: each is a finished unit of its own) and the sha256 of
the exact request messages). The request digest makes the key safe against anything else that changes what the
critic saw (rendering options, a trajectory re-ingested with other content). Token log-probabilities, when asked
for, are stored with the answer.
Each answer is committed on arrival (autocommit, WAL, synchronous=NORMAL): a SIGKILL loses at most the calls in
flight, never a stored one. Several processes may share one cache file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    trajectory_id TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    backend TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    window INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    request_sha TEXT NOT NULL,
    raw TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason TEXT,
    created REAL NOT NULL,
    logprobs TEXT
);
CREATE INDEX IF NOT EXISTS responses_traj ON responses (trajectory_id);
"""


@dataclass(frozen=True)
class CacheKey:
    trajectory_id: str
    prompt_hash: str
    backend: str
    fingerprint: str  # canonical JSON of the backend's fingerprint
    window: int
    attempt: int
    request_sha: str
    sample: int = 0

    @classmethod
    def make(cls, *, trajectory_id: str, prompt_hash: str, backend: str, fingerprint: dict[str, Any],
             window: int, attempt: int, messages: list[dict[str, Any]], sample: int = 0) -> CacheKey:
        request = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        return cls(trajectory_id, prompt_hash, backend, json.dumps(fingerprint, sort_keys=True), window, attempt,
                   hashlib.sha256(request.encode()).hexdigest(), sample)

    @property
    def digest(self) -> str:
        parts = (self.prompt_hash, self.trajectory_id, self.backend, self.fingerprint, str(self.window),
                 str(self.attempt), self.request_sha)
        if self.sample:  # sample 0 keeps the key it had before samples existed: old caches stay valid
            parts += (f"sample={self.sample}",)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    raw: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    logprobs: list[dict[str, Any]] | None = None  # the answer's tokens with their top log-probabilities


class ResponseCache:
    """A SQLite file of raw responses. Use from one thread (the annotate event loop)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None  # opened on first use: critics that never call make no file

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # durable against process death (not power loss)
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(responses)")}
            if "logprobs" not in columns:  # a cache file made before log-probabilities were stored
                self._conn.execute("ALTER TABLE responses ADD COLUMN logprobs TEXT")
        return self._conn

    def get(self, key: CacheKey) -> CachedResponse | None:
        row = self._db.execute("SELECT raw, prompt_tokens, completion_tokens, finish_reason, logprobs FROM "
                               "responses WHERE key = ?", (key.digest,)).fetchone()
        return None if row is None else CachedResponse(*row[:4], None if row[4] is None else json.loads(row[4]))

    def put(self, key: CacheKey, response: CachedResponse) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, trajectory_id, prompt_hash, backend, fingerprint, window, "
            "attempt, request_sha, raw, prompt_tokens, completion_tokens, finish_reason, created, logprobs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.digest, key.trajectory_id, key.prompt_hash, key.backend, key.fingerprint, key.window,
             key.attempt, key.request_sha, response.raw, response.prompt_tokens, response.completion_tokens,
             response.finish_reason, time.time(),
             None if response.logprobs is None else json.dumps(response.logprobs, ensure_ascii=False)))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def trajectory_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT DISTINCT trajectory_id FROM responses")}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
