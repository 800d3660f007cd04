"""The engine every LLM backend shares: windows -> cached calls -> strict parse -> one re-ask -> labels.

Per window: render the prompt, look the request up in the cache, call the backend on a miss (under the run's
concurrency limit) and store the raw answer at once, parse it. An unusable answer gets exactly one re-ask that
quotes the parse error (also cached). If that fails too, or the backend gives up, the whole trajectory is
`critic_failed` with every raw answer kept: a trajectory is either fully labelled by the critic or not at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from srft.critic import BackendError, ChatBackend, Completion, CriticContext, TrajectoryResult
from srft.critic.cache import CachedResponse, CacheKey
from srft.critic.parse import AnswerError, ParsedStep, answer_schema, parse_answer
from srft.critic.prompt import Window
from srft.labels import StepLabel
from srft.model import Trajectory


@dataclass
class _WindowOutcome:
    parsed: list[ParsedStep] | None = None
    repaired: bool = False
    failure: str | None = None
    error: str | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)


class LLMCritic:
    """A `Critic` made from a `ChatBackend` (see module doc)."""

    def __init__(self, backend: ChatBackend, ctx: CriticContext):
        self.backend, self.ctx = backend, ctx
        self.id = backend.id
        self.prompt_hash: str | None = ctx.prompt.prompt_hash
        self._fingerprint = backend.fingerprint()
        self._backend_name = str(self._fingerprint.get("backend", type(backend).__name__))
        self._sem = asyncio.Semaphore(max(1, ctx.concurrency))

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def label(self, traj: Trajectory) -> TrajectoryResult:
        res = TrajectoryResult(trajectory_id=traj.id, status="ok")
        windows = self.ctx.prompt.windows(traj)
        res.windows = len(windows)
        outcomes = await asyncio.gather(*(self._window(traj, w, res) for w in windows))
        failed = [o for o in outcomes if o.parsed is None]
        if failed:
            res.status = "critic_failed"
            res.failure = "backend_error" if any(o.failure == "backend_error" for o in failed) else "invalid_answer"
            res.error = "; ".join(f"window {w.index} (steps {w.numbers[0]}-{w.numbers[-1]}): {o.error}"
                                  for w, o in zip(windows, outcomes) if o.parsed is None)
            res.raw = [r for o in outcomes for r in o.raw]
            return res
        if any(o.repaired for o in outcomes):
            res.status = "repaired"
        res.labels = [StepLabel(trajectory_id=traj.id, step=p.step, label=p.label, reason=p.reason or None,
                                source=self.id, prompt_hash=self.prompt_hash)
                      for o in outcomes for p in o.parsed or []]
        return res

    async def _window(self, traj: Trajectory, window: Window, res: TrajectoryResult) -> _WindowOutcome:
        out = _WindowOutcome()
        messages = window.messages
        for attempt in (0, 1):
            try:
                completion = await self._call(traj, window, attempt, messages, res)
            except BackendError as exc:
                out.failure, out.error = "backend_error", str(exc)
                return out
            try:
                out.parsed = parse_answer(completion.text, window.numbers)
                out.repaired = attempt == 1
                return out
            except AnswerError as exc:
                error = str(exc)
                if completion.finish_reason == "length":
                    error += f" (the answer was cut off at max_tokens={window.max_tokens})"
                out.raw.append({"window": window.index, "attempt": attempt, "steps": window.numbers,
                                "error": error, "raw": completion.text})
                out.failure, out.error = "invalid_answer", error
                messages = self.ctx.prompt.reask(window, completion.text, error)
        return out

    async def _call(self, traj: Trajectory, window: Window, attempt: int, messages: list[dict[str, Any]],
                    res: TrajectoryResult) -> Completion:
        cache = self.ctx.cache
        key = CacheKey.make(trajectory_id=traj.id, prompt_hash=self.ctx.prompt.prompt_hash,
                            backend=self._backend_name, fingerprint=self._fingerprint, window=window.index,
                            attempt=attempt, messages=messages)
        if cache is not None and (hit := cache.get(key)) is not None:
            res.cached += 1
            res.prompt_tokens_cached += hit.prompt_tokens or 0
            return Completion(hit.raw, hit.prompt_tokens, hit.completion_tokens, hit.finish_reason)
        cfg = self.ctx.prompt.config
        schema = answer_schema(window.numbers, cfg.reason_max_chars, cfg.schema_style)
        async with self._sem:
            completion = await self.backend.complete(messages, schema=schema, max_tokens=window.max_tokens)
        counter = self.ctx.prompt.counter
        if completion.prompt_tokens is None:  # the backend did not say: our estimate stands in
            completion.prompt_tokens = counter.count("\n".join(m["content"] for m in messages))
        if completion.completion_tokens is None:
            completion.completion_tokens = counter.count(completion.text)
        res.calls += 1
        res.prompt_tokens += completion.prompt_tokens
        res.completion_tokens += completion.completion_tokens
        if cache is not None:
            cache.put(key, CachedResponse(completion.text, completion.prompt_tokens, completion.completion_tokens,
                                          completion.finish_reason))
        return completion
