"""The annotate stage: trajectories -> one label per step -> `annotations.parquet/.jsonl` + a report.

  run_annotate(data_dir, out_dir, config) -> report dict      (reads the store, writes every output)
  annotate_trajectories(trajectories, config) -> AnnotateResult  (in-process, e.g. the lab on its own data)

Selection: `only=unresolved` (default, as in the paper) labels trajectories whose outcome is resolved=False;
`all` labels every trajectory. Skips are counted by reason (resolved, outcome_unknown, no_steps, duplicate_id).
Trajectories are labelled concurrently; outputs are sorted by id, so the same inputs and answers give the same
bytes whatever order the calls finished in. A trajectory the critic fails on gets the configured `fallback` label
on every step (default: none, so `srft build`'s unlabelled-step policy applies) and its raw answers go to
`critic_failures.jsonl`. Outputs in DIR:
  annotations.parquet, annotations.jsonl   one row per labelled step (srft.labels format)
  annotate_report.json                     totals, config, input fingerprint, accounting
  annotate_trajectories.jsonl              per trajectory: status, windows, calls, cached, tokens, cost
  critic_failures.jsonl                    failed trajectories with the error and every raw answer
  critic_cache.sqlite                      raw responses (unless `cache` points elsewhere or is off)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import srft
from srft.critic import CriticContext, TrajectoryResult, Unreachable, labelled_steps
from srft.critic.cache import ResponseCache
from srft.critic.llm import build_critic
from srft.critic.prompt import PromptBuilder, PromptConfig
from srft.labels import StepLabel, sort_labels
from srft.model import LABELS, Trajectory

Fallback = Literal["none", "good", "unnecessary", "mistake", "recover"]


class CriticSpec(BaseModel):
    """Which critic labels the steps."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("heuristic", description="registered critic (heuristic/openai/transformers/ensemble) or path")
    options: dict[str, Any] = Field(default_factory=dict, description="the critic's own options")


class AnnotateConfig(BaseModel):
    """Options of `srft annotate`."""

    model_config = ConfigDict(extra="forbid")

    critic: CriticSpec = Field(default_factory=CriticSpec, description="the critic and its options")
    only: Literal["unresolved", "all"] = Field("unresolved", description="which trajectories to label")
    concurrency: int = Field(8, ge=1, description="critic calls in flight at once")
    fallback: Fallback = Field("none", description="label given to every step of a critic_failed trajectory")
    samples: int = Field(1, ge=1, description="answers per window from LLM critics (> 1 needs a temperature above "
                         "0): the majority label wins, with its votes and confidence")
    confidence: Literal["votes", "logprobs"] = Field(
        "votes", description="votes: over --samples; logprobs: label probabilities from the server's token "
        "log-probabilities (one answer per window)")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="how LLM critics see trajectories")
    cache: str | None = Field(None, description="SQLite response cache; None = OUT/critic_cache.sqlite")
    use_cache: bool = Field(True, description="store and reuse raw responses")
    price_in: float | None = Field(None, ge=0, description="USD per 1M prompt tokens (for the cost report)")
    price_out: float | None = Field(None, ge=0, description="USD per 1M completion tokens")


@dataclass
class AnnotateResult:
    labels: list[StepLabel]  # sorted by (trajectory_id, step), fallback labels included
    results: list[TrajectoryResult]  # sorted by trajectory id
    skipped: Counter = field(default_factory=Counter)
    summary: dict[str, Any] = field(default_factory=dict)


def skip_reason(traj: Trajectory, only: str) -> str | None:
    if not labelled_steps(traj):
        return "no_steps"
    if only == "all":
        return None
    if traj.outcome.resolved is None:
        return "outcome_unknown"
    return "resolved" if traj.outcome.resolved else None


def _fallback(traj: Trajectory, res: TrajectoryResult, label: str) -> None:
    reason = f"critic_failed ({res.failure}): {res.error or ''}"[:300]
    res.labels = [StepLabel(trajectory_id=traj.id, step=n, label=label, reason=reason, source="fallback")
                  for n in labelled_steps(traj)]


async def _label_all(trajectories: Iterable[Trajectory], critic: Any, cfg: AnnotateConfig,
                     on_item: Callable[[TrajectoryResult | None], None]) -> tuple[list[TrajectoryResult], Counter]:
    """Feed trajectories to `concurrency` workers; one bad trajectory never stops the others (an unreachable
    endpoint stops them all: every trajectory would fail the same way)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * cfg.concurrency)  # bounded: the store is streamed
    results: list[TrajectoryResult] = []
    skipped: Counter = Counter()
    fatal: list[Unreachable] = []

    async def worker() -> None:
        while (traj := await queue.get()) is not None:
            if fatal:  # keep taking, so the feeder never blocks on a full queue
                continue
            try:
                res = await critic.label(traj)
            except Unreachable as exc:
                fatal.append(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - item boundary: record, count, carry on
                res = TrajectoryResult(trajectory_id=traj.id, status="critic_failed", failure="critic_error",
                                       error=f"{type(exc).__name__}: {exc}")
            if res.status == "critic_failed" and cfg.fallback != "none":
                _fallback(traj, res, cfg.fallback)
            results.append(res)
            on_item(res)

    workers = [asyncio.create_task(worker()) for _ in range(cfg.concurrency)]
    seen: set[str] = set()
    try:
        for traj in trajectories:
            if fatal:
                break
            reason = "duplicate_id" if traj.id in seen else skip_reason(traj, cfg.only)
            seen.add(traj.id)
            if reason:
                skipped[reason] += 1
                on_item(None)
                continue
            await queue.put(traj)
    finally:
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    if fatal:
        raise fatal[0]
    return sorted(results, key=lambda r: r.trajectory_id), skipped


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from code that already runs an event loop (notebooks): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=asyncio.run(coro)))
    thread.start()
    thread.join()
    return box["value"]


def _backend_notes(critic: Any) -> dict[str, Any]:
    """Retries and structured-output switches of HTTP backends (members of an ensemble included)."""
    notes: dict[str, Any] = {"retries": 0, "structured_output": {}}
    for c in getattr(critic, "members", [critic]):
        backend = getattr(c, "backend", None)
        if backend is not None and hasattr(backend, "retries"):
            notes["retries"] += backend.retries
            notes["structured_output"][c.id] = {"mode": backend.mode, "changes": backend.mode_changes}
        if backend is not None and getattr(backend, "batch_sizes", None):
            sizes = backend.batch_sizes
            notes.setdefault("batches", {})[c.id] = {"count": len(sizes), "mean_size": sum(sizes) / len(sizes)}
    return notes


def summarize(results: list[TrajectoryResult], skipped: Counter, cfg: AnnotateConfig) -> dict[str, Any]:
    labels = Counter(lab.label for r in results if r.status != "critic_failed" for lab in r.labels)
    failed = [r for r in results if r.status == "critic_failed"]
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    priced = cfg.price_in is not None or cfg.price_out is not None
    cost = ((prompt_tokens * (cfg.price_in or 0) + completion_tokens * (cfg.price_out or 0)) / 1e6
            if priced else None)
    return {
        "trajectories": len(results),
        "labelled_trajectories": len(results) - len(failed),
        "skipped": dict(sorted(skipped.items())),
        "steps": sum(labels.values()),
        "labels": {lab: labels.get(lab, 0) for lab in LABELS},
        "fallback_steps": sum(len(r.labels) for r in failed),
        "windows": sum(r.windows for r in results),
        "calls": sum(r.calls for r in results),
        "cached": sum(r.cached for r in results),
        "repaired": sum(r.status == "repaired" for r in results),
        "failed": len(failed),
        "failed_by_reason": dict(sorted(Counter(r.failure for r in failed).items())),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_cached": sum(r.prompt_tokens_cached for r in results),
        "cost_usd": cost,
    }


def _llm_critics(critic: Any) -> list[Any]:
    from srft.critic.llm import LLMCritic

    return [c for c in getattr(critic, "members", [critic]) if isinstance(c, LLMCritic)]


def annotate_trajectories(trajectories: Iterable[Trajectory], config: AnnotateConfig | dict[str, Any] | None = None,
                          *, cache_path: str | Path | None = None,
                          on_item: Callable[[TrajectoryResult | None], None] | None = None,
                          instances: set[str] | None = None) -> AnnotateResult:
    """Label `trajectories` in-process. The cache is used only when `cache_path` is given (or config.cache).
    `instances`: the instance ids of the whole input (checked against a reference file before any call)."""
    from srft.critic.evidence import check_instances, evidence_summary

    cfg = config if isinstance(config, AnnotateConfig) else AnnotateConfig.model_validate(config or {})
    prompt = PromptBuilder(cfg.prompt)
    if prompt.reference is not None and cfg.prompt.reference_unknown == "error":
        if instances is None:
            trajectories = list(trajectories)
            instances = {t.instance_id for t in trajectories if t.instance_id}
        check_instances(prompt.reference, instances)
    path = cache_path or cfg.cache
    cache = ResponseCache(path) if path and cfg.use_cache else None
    ctx = CriticContext(prompt=prompt, cache=cache, concurrency=cfg.concurrency, samples=cfg.samples,
                        confidence=cfg.confidence)
    critic = build_critic(cfg.critic.name, cfg.critic.options, ctx)
    if (cfg.samples > 1 or cfg.confidence == "logprobs") and not _llm_critics(critic):
        raise ValueError(f"--samples/--confidence logprobs apply to LLM critics (openai, transformers, a chat "
                         f"backend); critic {critic.id} answers deterministically")

    async def go() -> tuple[list[TrajectoryResult], Counter]:
        try:
            if hasattr(critic, "prepare"):
                await critic.prepare()
            return await _label_all(trajectories, critic, cfg, on_item or (lambda _: None))
        finally:
            await critic.aclose()
            if cache is not None:  # in the loop's thread: SQLite connections stay in the thread that made them
                cache.close()

    started = time.monotonic()
    results, skipped = _run_coroutine(go())
    summary = summarize(results, skipped, cfg)
    summary.update(critic=critic.id, prompt_hash=critic.prompt_hash,
                   prompt_template=ctx.prompt.template_name if critic.prompt_hash else None,
                   elapsed_s=round(time.monotonic() - started, 3), **_backend_notes(critic))
    if any(r.agreement for r in results):
        from srft.critic.ensemble import agreement_summary

        summary["agreement"] = agreement_summary(results)
    if cfg.samples > 1 or cfg.confidence == "logprobs" or any(r.agreement for r in results):
        from srft.critic.llm import confidence_summary

        summary["confidence"] = {"mode": cfg.confidence, "samples": cfg.samples, **confidence_summary(results)}
    if critic.prompt_hash:
        summary["evidence"] = evidence_summary(results, prompt)
    return AnnotateResult(sort_labels(lab for r in results for lab in r.labels), results, skipped, summary)


def trajectory_rows(results: list[TrajectoryResult], cfg: AnnotateConfig) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        cost = None
        if cfg.price_in is not None or cfg.price_out is not None:
            cost = (r.prompt_tokens * (cfg.price_in or 0) + r.completion_tokens * (cfg.price_out or 0)) / 1e6
        rows.append({"trajectory_id": r.trajectory_id, "status": r.status, "failure": r.failure, "error": r.error,
                     "steps": len(r.labels), "windows": r.windows, "calls": r.calls, "cached": r.cached,
                     "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                     "prompt_tokens_cached": r.prompt_tokens_cached, "cost_usd": cost,
                     "mean_agreement": sum(r.agreement) / len(r.agreement) if r.agreement else None,
                     "mean_confidence": _mean([lab.confidence for lab in r.labels if lab.confidence is not None]),
                     "abstained_samples": r.abstained, "evidence_tokens": r.evidence})
    return rows



def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def store_instances(path: Path) -> set[str]:
    """The instance ids in a store (one light column of the Parquet file)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {i for i in pq.ParquetFile(path).read(columns=["instance_id"]).column(0).to_pylist() if i}
    from srft.io import iter_trajectories

    return {t.instance_id for t in iter_trajectories(path) if t.instance_id}


def store_file(data_dir: str | Path) -> Path:
    """The trajectory store file behind DATA_DIR (a folder with trajectories.parquet, or the file itself)."""
    path = Path(data_dir)
    path = path / "trajectories.parquet" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory store at {data_dir} (expected a folder written by `srft ingest` "
                                "holding trajectories.parquet, or a .parquet/.jsonl store file)")
    return path


def count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def run_annotate(data_dir: str | Path, out_dir: str | Path, config: AnnotateConfig | dict[str, Any] | None = None,
                 *, console: Any = None) -> dict[str, Any]:
    """Label the store at `data_dir`, write every output into `out_dir`, return the report."""
    from srft.io import iter_trajectories, sha256_file

    cfg = config if isinstance(config, AnnotateConfig) else AnnotateConfig.model_validate(config or {})
    store, out = store_file(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = (cfg.cache or out / "critic_cache.sqlite") if cfg.use_cache else None
    progress = None
    if console is not None:
        from srft.console import progress_bar

        progress = progress_bar(console)
    with progress if progress is not None else contextlib.nullcontext():
        task = progress.add_task("annotate", total=count_rows(store)) if progress is not None else None
        tally = Counter()

        def on_item(res: TrajectoryResult | None) -> None:
            if progress is None:
                return
            if res is not None:
                tally.update(calls=res.calls, cached=res.cached, failed=res.status == "critic_failed")
            progress.update(task, advance=1, description=f"annotate: {tally['calls']} calls, {tally['cached']} "
                                                         f"cached, {tally['failed']} failed")

        instances = store_instances(store) if cfg.prompt.reference else None
        result = annotate_trajectories(iter_trajectories(store), cfg, cache_path=cache_path, on_item=on_item,
                                       instances=instances)
    report = {"srft_version": srft.__version__, "config": cfg.model_dump(mode="json"),
              "inputs": {"store": str(store), "sha256": sha256_file(store)}, **result.summary}
    write_outputs(out, result, report, trajectory_rows(result.results, cfg))
    return report


def write_outputs(out: Path, result: AnnotateResult, report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Every output, each atomically; the report last, so a report on disk means the run completed."""
    from srft.io import atomic_write_json, write_jsonl
    from srft.labels import write_labels

    write_labels(out / "annotations.parquet", result.labels)
    write_labels(out / "annotations.jsonl", result.labels)
    write_jsonl(out / "annotate_trajectories.jsonl", rows)
    write_jsonl(out / "critic_failures.jsonl",
                ({"trajectory_id": r.trajectory_id, "failure": r.failure, "error": r.error, "raw": r.raw}
                 for r in result.results if r.status == "critic_failed" or r.raw))
    report["outputs"] = {name: str(out / name) for name in (
        "annotations.parquet", "annotations.jsonl", "annotate_trajectories.jsonl", "critic_failures.jsonl")}
    atomic_write_json(out / "annotate_report.json", report)


# -- the command line: options -> AnnotateConfig (kept here so the CLI stays a thin wrapper) -------------------

def config_from_cli(base: dict[str, Any] | None, *, critic: str | None, members: list[str], options: list[str],
                    settings: dict[str, Any], prompt: dict[str, Any]) -> AnnotateConfig:
    """Merge a --config file with the options given (None = not given).

    `options` are `KEY=VALUE` strings for the critic's own pydantic config (its fields are the only backend
    options there are; a key it does not declare is an error naming the known ones). With `--critic ensemble`,
    `MEMBER.KEY=VALUE` sets KEY on every member named MEMBER, and a plain KEY sets an ensemble option (tie,
    min_votes)."""
    from srft.config import apply_overrides, parse_overrides, validate

    data = dict(base or {})
    spec = dict(data.get("critic") or {})
    name = critic or spec.get("name", "heuristic")
    opts = dict(spec.get("options") or {}) if name == spec.get("name", "heuristic") else {}
    if members:
        if name != "ensemble":
            raise ValueError(f"--member applies only to --critic ensemble (the critic is {name!r})")
        opts["members"] = [{"name": m, "options": {}} for m in members]
    pairs = parse_overrides(options, "--option")
    if name == "ensemble":
        pairs = _route_to_members(pairs, [m.get("name") for m in opts.get("members") or []])
    apply_overrides(opts, pairs, option="--option")
    data["critic"] = {"name": name, "options": opts}
    data.update({k: v for k, v in settings.items() if v is not None})
    data["prompt"] = {**(data.get("prompt") or {}), **{k: v for k, v in prompt.items() if v is not None}}
    return validate(AnnotateConfig, data)


def _route_to_members(pairs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """'openai.model' -> 'members.<i>.options.model' for every member i named openai."""
    out = {}
    for key, value in pairs.items():
        head, dot, rest = key.partition(".")
        hits = [i for i, n in enumerate(names) if n == head] if dot else []
        out.update({f"members.{i}.options.{rest}": value for i in hits} if hits else {key: value})
    return out
