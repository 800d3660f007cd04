"""The engine every LLM backend shares: windows -> cached calls -> strict parse -> one re-ask -> labels.

Per window: render the prompt, look the request up in the cache, call the backend on a miss (under the run's
concurrency limit) and store the raw answer at once, parse it. An unusable answer gets exactly one re-ask that
quotes the parse error (also cached). If that fails too, or the backend gives up, the whole trajectory is
`critic_failed` with every raw answer kept: a trajectory is either fully labelled by the critic or not at all.

Confidence (`CriticContext.samples`, `.confidence`; see srft.critic.confidence):
- samples K > 1: each window is asked K times (temperature > 0), each sample cached on its own, so a killed run
  repeats no finished sample. Per step the majority label wins with its `votes` and `confidence`. A sample whose
  answer stays invalid after its re-ask abstains (counted); a window with no valid sample fails the trajectory.
- logprobs: one answer per window, asked with token log-probabilities; each label gets `probs` and `confidence`.
  A probe request before any labelling checks that the server returns them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from srft.critic import BackendError, ChatBackend, Completion, Critic, CriticContext, TrajectoryResult
from srft.critic.cache import CachedResponse, CacheKey
from srft.critic.confidence import label_probs, tally
from srft.critic.parse import AnswerError, ParsedStep, answer_schema, parse_answer
from srft.critic.prompt import Window
from srft.labels import StepLabel
from srft.model import Trajectory
from srft.registry import resolve


@dataclass
class _Answer:
    """One sample of one window: the parsed labels, or why there are none."""

    parsed: list[ParsedStep] | None = None
    completion: Completion | None = None
    repaired: bool = False
    failure: str | None = None
    error: str | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)


def _accepts(method: Any, name: str) -> bool:
    params = inspect.signature(method).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class LLMCritic:
    """A `Critic` made from a `ChatBackend` (see module doc)."""

    def __init__(self, backend: ChatBackend, ctx: CriticContext):
        self.backend, self.ctx = backend, ctx
        self.id = backend.id
        self.prompt_hash: str | None = ctx.prompt.prompt_hash
        self.samples, self.logprobs = ctx.samples, ctx.top_logprobs if ctx.confidence == "logprobs" else 0
        self._fingerprint = backend.fingerprint()
        self._backend_name = str(self._fingerprint.get("backend", type(backend).__name__))
        self._check_confidence()
        if self.logprobs:  # answers with log-probabilities are other cache entries than answers without
            self._fingerprint = {**self._fingerprint, "logprobs": self.logprobs}
        self._pass_sample = self.samples > 1 and _accepts(backend.complete, "sample")
        self._sem = asyncio.Semaphore(max(1, ctx.concurrency))

    def _check_confidence(self) -> None:
        """Bad sampling settings are errors before any call."""
        temperature = self._fingerprint.get("temperature")
        if self.samples > 1 and isinstance(temperature, int | float) and temperature <= 0:
            raise ValueError(f"--samples {self.samples} needs sampling, but critic {self.id} has temperature "
                             f"{temperature}: set its temperature above 0 (e.g. -o temperature=0.7), or use "
                             "--samples 1")
        if self.samples > 1 and self._fingerprint.get("decoding") == "guided":
            raise ValueError(f"--samples {self.samples}: critic {self.id} decodes guided, which is greedy whatever "
                             "the temperature (every sample would be the same answer); use -o decoding=free")
        if self.logprobs and self.samples > 1:
            raise ValueError(f"--confidence logprobs reads one answer's token probabilities; it does not combine "
                             f"with --samples {self.samples} (use --confidence votes to vote over samples)")
        if self.logprobs and not _accepts(self.backend.complete, "logprobs"):
            raise ValueError(f"--confidence logprobs: critic {self.id}'s backend does not return token "
                             "log-probabilities; use the openai backend against a server that does (llama.cpp, "
                             "vLLM, OpenAI), or --samples K with a temperature above 0 (-o temperature=0.7)")

    async def prepare(self) -> None:
        """Before any labelling: check that the server really returns log-probabilities when they are needed."""
        if not self.logprobs or getattr(self.backend, "unreachable", None):
            return  # an unreachable server: a fully cached run needs no probe; an uncached call stops the run
        probe = [{"role": "user", "content": "Reply with the single word: yes"}]
        try:
            completion = await self.backend.complete(probe, schema=None, max_tokens=1, logprobs=self.logprobs)
        except BackendError as exc:
            raise ValueError(f"--confidence logprobs: the probe request to critic {self.id} failed: {exc}") from None
        if not completion.logprobs:
            raise ValueError(f"--confidence logprobs: critic {self.id}'s server returned no token log-probabilities "
                             "for a probe request; use a server that returns them (llama.cpp, vLLM, OpenAI), or "
                             "--samples K with a temperature above 0 (-o temperature=0.7)")

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def label(self, traj: Trajectory) -> TrajectoryResult:
        res = TrajectoryResult(trajectory_id=traj.id, status="ok")
        windows = self.ctx.prompt.windows(traj)
        res.windows = len(windows)
        for w in windows:
            for section in w.evidence:
                res.evidence[section.name] = res.evidence.get(section.name, 0) + section.tokens
                res.evidence_cut[section.name] = res.evidence_cut.get(section.name, 0) + section.cut
        jobs = [(w, k) for w in windows for k in range(self.samples)]
        answers = await asyncio.gather(*(self._answer(traj, w, k, res) for w, k in jobs))
        per_window = [answers[i * self.samples:(i + 1) * self.samples] for i in range(len(windows))]
        errors = [(w, self._window_error(outs)) for w, outs in zip(windows, per_window, strict=True)]
        if any(failure for _, (failure, _) in errors):
            res.status = "critic_failed"
            res.failure = "backend_error" if any(f == "backend_error" for _, (f, _) in errors) else "invalid_answer"
            res.error = "; ".join(f"window {w.index} (steps {w.numbers[0]}-{w.numbers[-1]}): {error}"
                                  for w, (failure, error) in errors if failure)
            res.raw = [r for a in answers for r in a.raw]
            return res
        if any(a.repaired for a in answers):
            res.status = "repaired"
        res.abstained = sum(a.parsed is None for a in answers)
        res.raw = [r for a in answers if a.parsed is None for r in a.raw]  # abstained samples stay visible
        for outs in per_window:
            res.labels += self._labels(traj, [a for a in outs if a.parsed is not None], res)
        return res

    @staticmethod
    def _window_error(outs: list[_Answer]) -> tuple[str | None, str | None]:
        """A window fails when the backend gave up on any sample, or when no sample gave a valid answer."""
        broken = next((a for a in outs if a.failure == "backend_error"), None)
        if broken is not None:
            return "backend_error", broken.error
        if all(a.parsed is None for a in outs):
            return "invalid_answer", outs[0].error
        return None, None

    def _labels(self, traj: Trajectory, valid: list[_Answer], res: TrajectoryResult) -> list[StepLabel]:
        """One label per step of a window: the one answer, its log-probabilities, or the vote of the samples."""
        make = {"trajectory_id": traj.id, "source": self.id, "prompt_hash": self.prompt_hash}
        if self.samples == 1:
            [answer] = valid
            probs = label_probs(answer.completion.text, answer.completion.logprobs or []) if self.logprobs else {}
            out = []
            for p in answer.parsed or []:
                scored = probs.get(p.step)
                res.unscored_steps += bool(self.logprobs and scored is None)
                out.append(StepLabel(**make, step=p.step, label=p.label, reason=p.reason or None, probs=scored,
                                     confidence=None if scored is None else scored.get(p.label, 0.0)))
            return out
        by_step: dict[int, list[ParsedStep]] = {}
        for answer in valid:
            for p in answer.parsed or []:
                by_step.setdefault(p.step, []).append(p)
        out = []
        for step, ballots in sorted(by_step.items()):
            label, votes, share = tally([b.label for b in ballots])
            reason = next(b.reason for b in ballots if b.label == label)
            out.append(StepLabel(**make, step=step, label=label, reason=reason or None, votes=votes,
                                 confidence=round(share, 6)))
        return out

    async def _answer(self, traj: Trajectory, window: Window, sample: int, res: TrajectoryResult) -> _Answer:
        out = _Answer()
        messages = window.messages
        for attempt in (0, 1):
            try:
                completion = await self._call(traj, window, attempt, sample, messages, res)
            except BackendError as exc:
                out.failure, out.error = "backend_error", str(exc)
                return out
            try:
                out.parsed = parse_answer(completion.text, window.numbers)
                out.completion, out.repaired = completion, attempt == 1
                return out
            except AnswerError as exc:
                error = str(exc)
                if completion.finish_reason == "length":
                    error += f" (the answer was cut off at max_tokens={window.max_tokens})"
                out.raw.append({"window": window.index, "sample": sample, "attempt": attempt,
                                "steps": window.numbers, "error": error, "raw": completion.text})
                out.failure, out.error = "invalid_answer", error
                messages = self.ctx.prompt.reask(window, completion.text, error)
        return out

    async def _call(self, traj: Trajectory, window: Window, attempt: int, sample: int,
                    messages: list[dict[str, Any]], res: TrajectoryResult) -> Completion:
        cache = self.ctx.cache
        key = CacheKey.make(trajectory_id=traj.id, prompt_hash=self.ctx.prompt.prompt_hash,
                            backend=self._backend_name, fingerprint=self._fingerprint, window=window.index,
                            attempt=attempt, messages=messages, sample=sample)
        if cache is not None and (hit := cache.get(key)) is not None:
            res.cached += 1
            res.prompt_tokens_cached += hit.prompt_tokens or 0
            return Completion(hit.raw, hit.prompt_tokens, hit.completion_tokens, hit.finish_reason, hit.logprobs)
        cfg = self.ctx.prompt.config
        schema = answer_schema(window.numbers, cfg.reason_max_chars, cfg.schema_style)
        extra: dict[str, Any] = {"sample": sample} if self._pass_sample else {}
        if self.logprobs:
            extra["logprobs"] = self.logprobs
        async with self._sem:
            completion = await self.backend.complete(messages, schema=schema, max_tokens=window.max_tokens, **extra)
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
                                          completion.finish_reason, completion.logprobs))
        return completion


def confidence_summary(results: list[TrajectoryResult]) -> dict[str, Any]:
    """Across labelled trajectories: how confident the labels are (mean, share unanimous/certain), the samples
    that abstained and the steps logprobs could not score."""
    confidences = [lab.confidence for r in results if r.status != "critic_failed" for lab in r.labels
                   if lab.confidence is not None]
    histogram = Counter(min(int(c * 10), 9) / 10 for c in confidences)
    return {"steps": len(confidences),
            "mean": round(sum(confidences) / len(confidences), 6) if confidences else None,
            "certain": sum(c >= 1.0 for c in confidences),
            "histogram": {f"{k:.1f}": histogram[k] for k in sorted(histogram)},
            "abstained_samples": sum(r.abstained for r in results),
            "unscored_steps": sum(r.unscored_steps for r in results)}


def build_critic(name: str, options: dict[str, Any], ctx: CriticContext) -> Critic:
    """Resolve `name` (registered or dotted path), build it with `options`, wrap a chat backend in the LLM engine."""
    from pydantic import ValidationError

    factory = resolve(ctx.registry, name, "critic")
    try:
        made = factory(dict(options), ctx)
    except ValidationError as exc:  # name the critic (an ensemble holds several) and, for a typo, its options
        from srft.config import validation_problems

        model = getattr(inspect.getmodule(factory), exc.title, None)
        problems = "; ".join(validation_problems(exc, model if isinstance(model, type) else None))
        raise ValueError(f"critic {name!r} options: {problems}") from None
    if isinstance(made, ChatBackend) and not isinstance(made, Critic):
        return LLMCritic(made, ctx)
    if not isinstance(made, Critic):
        raise TypeError(f"critic {name!r}: build() returned {type(made).__name__}, which is neither a Critic "
                        "(id, prompt_hash, label, aclose) nor a ChatBackend (id, fingerprint, complete, aclose)")
    return made
