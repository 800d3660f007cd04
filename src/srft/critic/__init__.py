"""The critic: label every step of a trajectory good / unnecessary / mistake / recover.

Two kinds of plug-in, both found through `CRITICS` (name -> dotted path of a `build(options, ctx)` function,
imported lazily; a user's own 'pkg.module:build' works the same way):

* a `ChatBackend` completes chat messages (an OpenAI-compatible server, a local transformers model). The shared
  engine in `srft.critic.llm` wraps it: one prompt per trajectory window, cache, strict parsing, one re-ask.
* a `Critic` labels a whole trajectory itself (the rule-based `heuristic`, the `ensemble` vote).

`build` returns either; `srft.critic.llm.build_critic` wraps a backend into a critic. Adding a backend is one
file with a pydantic config and a `build` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from srft.critic.cache import ResponseCache
    from srft.critic.prompt import PromptBuilder
    from srft.labels import StepLabel
    from srft.model import Trajectory

CRITICS: dict[str, str] = {
    "heuristic": "srft.critic.heuristic:build",
    "openai": "srft.critic.openai_compat:build",
    "transformers": "srft.critic.transformers_backend:build",
    "ensemble": "srft.critic.ensemble:build",
}


@dataclass
class Completion:
    """One chat completion. Token counts are None when the backend did not report them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # [{token, logprob, top_logprobs: [{token, logprob}]}] if asked


class BackendError(RuntimeError):
    """A backend could not produce a completion (after its own retries). Nothing is cached for it, so a later
    run tries again."""


class Unreachable(ValueError):
    """The critic's endpoint cannot be reached at all. Raised at the first request the response cache cannot
    answer, so the run stops in seconds with the fix (a fully cached run still completes without the server)."""


@runtime_checkable
class ChatBackend(Protocol):
    """Completes chat messages. `id` becomes the label `source` (e.g. 'openai:qwen2.5-coder-32b')."""

    id: str

    def fingerprint(self) -> dict[str, Any]:
        """What determines its answers besides the messages (model, sampling params): part of the cache key."""
        ...

    async def complete(self, messages: list[dict[str, Any]], *, schema: dict[str, Any] | None,
                       max_tokens: int) -> Completion:
        """Answer the messages; `schema` is the JSON schema the answer must follow (for structured output).
        Optional keywords a backend may accept (the engine passes them only to backends whose `complete` names
        them): `sample` (the index of one of several answers drawn for the same prompt: vary the seed) and
        `logprobs` (return that many top token log-probabilities per answer token in `Completion.logprobs`)."""
        ...

    async def aclose(self) -> None:
        """Release connections / models."""
        ...


@dataclass
class TrajectoryResult:
    """What a critic produced for one trajectory. `labels` is empty when status is 'critic_failed'."""

    trajectory_id: str
    status: str  # "ok" | "repaired" | "critic_failed"
    labels: list[StepLabel] = field(default_factory=list)
    failure: str | None = None  # "invalid_answer" | "backend_error" | "member_failed"
    error: str | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)  # kept answers of a failed trajectory
    windows: int = 0
    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_cached: int = 0
    agreement: list[float] | None = None  # ensemble: share of members voting the chosen label, per step
    member_labels: dict[str, list[str | None]] | None = None  # ensemble: each member's label per step
    abstained: int = 0  # sampled answers that stayed invalid after the re-ask (the other samples voted)
    unscored_steps: int = 0  # logprobs: steps whose label token had no usable log-probabilities
    evidence: dict[str, int] = field(default_factory=dict)  # prompt tokens per hindsight section (all windows)
    evidence_cut: dict[str, int] = field(default_factory=dict)  # what the budgets left out, per section


@runtime_checkable
class Critic(Protocol):
    """Labels whole trajectories. `id` is the label `source`; `prompt_hash` is recorded with every label."""

    id: str
    prompt_hash: str | None

    async def label(self, traj: Trajectory) -> TrajectoryResult:
        """Label every non-demo step of `traj` exactly once, or return a 'critic_failed' result."""
        ...

    async def aclose(self) -> None:
        ...


@dataclass
class CriticContext:
    """Run-wide things a critic needs: the prompt, the response cache and the concurrency limit."""

    prompt: PromptBuilder
    cache: ResponseCache | None
    concurrency: int = 8
    registry: dict[str, str] = field(default_factory=lambda: dict(CRITICS))
    samples: int = 1  # answers drawn per window (LLM critics); > 1 votes per step
    confidence: str = "votes"  # votes | logprobs (see srft.critic.confidence)
    top_logprobs: int = 10  # alternatives per token asked for under confidence=logprobs


def labelled_steps(traj: Trajectory) -> list[int]:
    """The step numbers a critic labels: every step except scaffold demonstrations (never trained, not the
    agent's own work)."""
    return [s.number for s in traj.steps if not s.is_demo]
