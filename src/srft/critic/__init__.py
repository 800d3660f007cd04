"""The critic: label every step of a trajectory good / unnecessary / mistake / recover.

Two kinds of plug-in, both found through `CRITICS` (name -> dotted path of a `build(options, ctx)` function,
imported lazily; a user's own 'pkg.module:build' works the same way):

* a `ChatBackend` completes chat messages (an OpenAI-compatible server, a local transformers model). The shared
  engine in `srft.critic.llm` wraps it: one prompt per trajectory window, cache, strict parsing, one re-ask.
* a `Critic` labels a whole trajectory itself (the rule-based `heuristic`, the `ensemble` vote).

`build` returns either; `build_critic` wraps a backend into a critic. Adding a backend is one file with a pydantic
config and a `build` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from srft.registry import resolve

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


class BackendError(RuntimeError):
    """A backend could not produce a completion (after its own retries). Nothing is cached for it, so a later
    run tries again."""


@runtime_checkable
class ChatBackend(Protocol):
    """Completes chat messages. `id` becomes the label `source` (e.g. 'openai:qwen2.5-coder-32b')."""

    id: str

    def fingerprint(self) -> dict[str, Any]:
        """What determines its answers besides the messages (model, sampling params): part of the cache key."""
        ...

    async def complete(self, messages: list[dict[str, Any]], *, schema: dict[str, Any] | None,
                       max_tokens: int) -> Completion:
        """Answer the messages; `schema` is the JSON schema the answer must follow (for structured output)."""
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


def build_critic(name: str, options: dict[str, Any], ctx: CriticContext) -> Critic:
    """Resolve `name` (registered or dotted path), build it with `options`, wrap a chat backend in the LLM engine."""
    from pydantic import ValidationError

    factory = resolve(ctx.registry, name, "critic")
    try:
        made = factory(dict(options), ctx)
    except ValidationError as exc:  # name the critic: an ensemble holds several
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"critic {name!r} options: {problems}") from None
    if isinstance(made, ChatBackend) and not isinstance(made, Critic):
        from srft.critic.llm import LLMCritic

        return LLMCritic(made, ctx)
    if not isinstance(made, Critic):
        raise TypeError(f"critic {name!r}: build() returned {type(made).__name__}, which is neither a Critic "
                        "(id, prompt_hash, label, aclose) nor a ChatBackend (id, fingerprint, complete, aclose)")
    return made


def labelled_steps(traj: Trajectory) -> list[int]:
    """The step numbers a critic labels: every step except scaffold demonstrations (never trained, not the
    agent's own work)."""
    return [s.number for s in traj.steps if not s.is_demo]
