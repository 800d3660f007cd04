"""The build stage: trajectory store (+ step labels) -> policy weights -> token samples -> `DIR/dataset/`.

    run_build(data_dir, out_dir, config, annotations=None) -> report dict (also `DIR/build_report.json`)

Read top to bottom: load the store, apply the step labels, weigh every step with the policy, write the weighted
trajectories to a scratch Parquet file, tokenize them with `datasets.map(num_proc=...)` (each worker loads the
tokenizer once and calls `srft.dataset.masks.build_samples`), count every drop by reason, save the samples with
`save_to_disk` into a temp dir that is renamed into place, then run the requested exporters.
Same inputs -> byte-identical `dataset/` (rows in trajectory-id order; fingerprints derived from the inputs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import srft
from srft.io import atomic_path, atomic_write_json, read_trajectories, sha256_file, write_trajectories
from srft.labels import apply_labels, read_labels
from srft.dataset.exports import longest
from srft.dataset.masks import MaskConfig, build_samples
from srft.dataset.vocab import max_token_id, tokenizer_facts
from srft.policy import PolicyConfig, apply_policy, get_policy
from srft.registry import RegistryError
from srft.dataset.render import Renderer, TemplateError, load_tokenizer

COLUMNS = ("input_ids", "labels", "loss_weights", "trajectory_id", "instance_id", "resolved", "policy",
           "step_spans", "step_labels")
_INTERNAL = ("_meta",)  # per-row drop reason / counts; not saved


class BuildConfig(BaseModel):
    """Everything `srft build` needs besides the input paths."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field(description="student tokenizer: a directory with a chat template, or a .gguf file")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="labels -> step weights")
    masks: MaskConfig = Field(default_factory=MaskConfig, description="render mode, max length, truncation")
    exports: list[str] = Field(default_factory=list, description="trainer formats to write (see srft.dataset.exports)")
    num_proc: int = Field(1, ge=1, description="tokenizer worker processes (datasets.map num_proc)")
    batch_size: int = Field(8, ge=1, description="trajectories per map batch")


class BuildError(ValueError):
    """Invalid inputs found before any heavy work; lists every problem."""


def features():
    import datasets as ds

    span = {"step": ds.Value("int64"), "start": ds.Value("int64"), "end": ds.Value("int64"),
            "weight": ds.Value("float64")}
    return ds.Features({
        "input_ids": ds.List(ds.Value("int64")), "labels": ds.List(ds.Value("int64")),
        "loss_weights": ds.List(ds.Value("float32")), "trajectory_id": ds.Value("string"),
        "instance_id": ds.Value("string"), "resolved": ds.Value("bool"), "policy": ds.Value("string"),
        "step_spans": ds.List(span), "step_labels": ds.List(ds.Value("string")),
        "_meta": ds.Value("string"),
    })


# -- the stage ------------------------------------------------------------------------------------------------

def run_build(data_dir: str | Path, out_dir: str | Path, config: BuildConfig | None = None,
              annotations: str | Path | None = None, *, on_progress: Callable[[int, int, str], None] | None = None,
              **parts: Any) -> dict[str, Any]:
    """Build `out_dir/dataset/` (+ build_report.json, + exports) from the store at `data_dir`.

    `config` is a BuildConfig; the pipeline may pass its parts instead (tokenizer=, policy=, mask=, exports=,
    num_proc=). `on_progress(done, total, stage)` is called as stages finish. Raises BuildError (every problem
    found before heavy work) or LabelFileError (bad label rows)."""
    if config is None:
        config = BuildConfig(**{("masks" if k == "mask" else k): v for k, v in parts.items() if v is not None})
    elif parts:
        raise TypeError(f"run_build: pass a BuildConfig or its parts, not both ({sorted(parts)})")
    progress = on_progress or (lambda done, total, stage: None)
    out_dir = Path(out_dir)
    renderer = _validate(data_dir, annotations, config)
    trajectories = read_trajectories(data_dir)
    if annotations is not None:
        labels = read_labels(annotations, {t.id: t for t in trajectories})
        trajectories = apply_labels(trajectories, labels)
    used, policy_report = apply_policy(trajectories, config.policy)
    progress(0, len(used), "tokenizing")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        mapped = _tokenize(used, work, config)
        progress(len(used), len(used), "saving")
        metas = mapped["_meta"]
        report = _report(metas, policy_report, renderer, config, data_dir, annotations, len(trajectories))
        if config.policy.confidence_weights and not policy_report.counts["confidence_weighted_steps"]:
            report["warnings"].append("confidence weights: no label carries votes or probabilities (annotate with "
                                      "--samples K, --confidence logprobs or an ensemble); every weight is hard")
        keep = [i for i, m in enumerate(metas) if "drop" not in json.loads(m)]
        final = _save(mapped, keep, out_dir / "dataset", config, _fingerprint(report))
        report["longest_sample"] = longest(final)
        report["vocab"] = {"tokenizer": tokenizer_facts(renderer.tok), "max_token_id": max_token_id(final)}
        report["exports"] = _export(final, renderer, config, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["warnings"] += [w for e in report["exports"].values() for w in e.get("warnings", [])]
    atomic_write_json(out_dir / "build_report.json", report)
    return report


def build_ok(report: dict[str, Any]) -> bool:
    """Full success: samples were made, every trained step was located, and no trajectory hit a chat-template
    or end-of-turn error (those mean the masks cannot be trusted for this tokenizer)."""
    broken = report["other_counts"].get("unlocated_trained_steps", 0) or any(
        r.startswith(("template_error", "end_of_turn")) for r in report["drop_reasons"])
    return report["samples"] > 0 and not broken


SUMMARY_KEYS = ("samples", "trajectories", "trajectories_used", "trajectories_dropped", "drop_reasons", "tokens",
                "trained_tokens", "masked_step_tokens", "truncated_tokens", "trained_tokens_lost", "longest_sample",
                "trained_tokens_by_label", "samples_dropped", "steps_located")


def print_summary(report: dict[str, Any], console) -> None:
    """One `key: value` line per count, then the warnings."""
    from srft.console import say

    for key in SUMMARY_KEYS:
        say(console, f"{key}: {report[key]}")
    for warning in report["warnings"]:
        say(console, f"warning: {warning}", "yellow")


def json_summary(report: dict[str, Any], out: str) -> dict[str, Any]:
    """The `--json` object: the counts, the warnings and where each file is."""
    return {**{k: report[k] for k in (*SUMMARY_KEYS, "warnings")}, "out": out, "report": f"{out}/build_report.json",
            "exports": {k: v["files"] for k, v in report["exports"].items()}}


def _validate(data_dir, annotations, config: BuildConfig) -> Renderer:
    """Check every input before heavy work; report all problems at once, saying what to set."""
    from srft.dataset.exports import EXPORTERS

    problems = []
    store = Path(data_dir)
    if not (store / "trajectories.parquet").is_file() and not (store.is_file() and store.suffix in
                                                                (".parquet", ".jsonl")):
        problems.append(f"{data_dir}: no trajectory store (expected {store / 'trajectories.parquet'} from `srft "
                        f"ingest`)")
    if annotations is not None and not Path(annotations).is_file():
        problems.append(f"--annotations {annotations}: file not found")
    unknown = [e for e in config.exports if e not in EXPORTERS]
    if unknown:
        problems.append(f"unknown export(s) {unknown}; known: {', '.join(sorted(EXPORTERS))}")
    try:
        get_policy(config.policy.name)
    except RegistryError as exc:
        problems.append(f"--policy {config.policy.name}: {exc}")
    renderer = None
    try:
        renderer = Renderer(load_tokenizer(config.tokenizer), config.masks.chat_template_kwargs)
    except (TemplateError, OSError, ValueError) as exc:
        problems.append(f"--tokenizer {config.tokenizer}: {exc}")
    if problems:
        raise BuildError("cannot build:\n  " + "\n  ".join(problems))
    return renderer


def _tokenize(used, work: Path, config: BuildConfig):
    """datasets.map over the weighted trajectories: one output row per sample (plus one per dropped trajectory,
    carrying its reason and counts in `_meta`)."""
    import datasets

    if not used:  # every trajectory dropped by the policy: an empty dataset with the same columns
        return datasets.Dataset.from_dict({name: [] for name in features()}, features=features())
    store = work / "weighted.parquet"
    write_trajectories(store, used)
    source = datasets.Dataset.from_parquet(str(store), cache_dir=str(work / "cache"))
    kwargs = {"tokenizer": config.tokenizer, "masks": config.masks.model_dump_json(), "policy": config.policy.name}
    return source.map(map_batch, batched=True, batch_size=config.batch_size,
                      num_proc=config.num_proc if config.num_proc > 1 and len(used) > 1 else None,
                      remove_columns=source.column_names, features=features(), fn_kwargs=kwargs,
                      cache_file_name=str(work / "mapped.arrow"), load_from_cache_file=False, desc="tokenizing")


_RENDERERS: dict[tuple[str, str], Renderer] = {}  # per worker process: the tokenizer is loaded once


def map_batch(batch: dict[str, list], tokenizer: str, masks: str, policy: str) -> dict[str, list]:
    """A batch of trajectory records -> sample rows (runs inside datasets.map workers)."""
    from srft.model import Trajectory

    config = MaskConfig.model_validate_json(masks)
    key = (tokenizer, masks)
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(load_tokenizer(tokenizer), config.chat_template_kwargs)
    renderer = _RENDERERS[key]
    out: dict[str, list] = {name: [] for name in (*COLUMNS, *_INTERNAL)}
    for i in range(len(batch["id"])):
        traj = Trajectory.from_record({k: v[i] for k, v in batch.items()})
        built = build_samples(traj, renderer, None, config)
        meta = {"counts": dict(built.counts)}
        if built.drop_reason or not built.samples:
            meta["drop"] = built.drop_reason or "all_samples_dropped"
            _row(out, traj, policy, [], [], [], [], [], meta)
            continue
        for j, s in enumerate(built.samples):
            _row(out, traj, policy, s.input_ids, s.labels, s.loss_weights, s.step_spans, s.step_labels,
                 meta if j == 0 else {})
    return out


def _row(out, traj, policy, ids, labels, weights, spans, step_labels, meta) -> None:
    for name, value in (("input_ids", ids), ("labels", labels), ("loss_weights", weights),
                        ("trajectory_id", traj.id), ("instance_id", traj.instance_id),
                        ("resolved", traj.outcome.resolved), ("policy", policy), ("step_spans", spans),
                        ("step_labels", step_labels), ("_meta", json.dumps(meta, sort_keys=True))):
        out[name].append(value)


def _save(mapped, keep: list[int], target: Path, config: BuildConfig, fingerprint: str):
    """Keep the sample rows, drop internal (and unused soft-weight) columns, save atomically. The saved dataset
    is rebuilt with a fixed info, split and fingerprint so its files depend only on the inputs (a scratch
    Parquet builder's paths, or the number of map workers, would otherwise leak into them)."""
    import datasets

    drop_cols = list(_INTERNAL) + ([] if config.policy.soft else ["loss_weights"])
    final = mapped.select(keep, new_fingerprint=fingerprint + "-select")
    final = final.remove_columns(drop_cols, new_fingerprint=fingerprint + "-columns")
    final = final.flatten_indices(new_fingerprint=fingerprint + "-flat")
    info = datasets.DatasetInfo(description=f"srft {srft.__version__} build dataset (see ../build_report.json)",
                                features=final.features)
    final = datasets.Dataset(final.data, info=info, split=datasets.Split.TRAIN, fingerprint=fingerprint)
    with atomic_path(target, directory=True) as tmp:
        # an empty dataset would get 0 shards (no data file) and could not be loaded again
        final.save_to_disk(str(tmp), num_shards=None if len(final) else 1)
    return final


def _export(final, renderer, config: BuildConfig, out_dir: Path) -> dict[str, Any]:
    from srft.dataset.exports import ExportContext, get_exporter

    ctx = ExportContext(dataset=final, renderer=renderer, config=config)
    results = {}
    for name in sorted(set(config.exports)):
        with atomic_path(out_dir / "exports" / name, directory=True) as tmp:
            results[name] = get_exporter(name)(ctx, tmp)
    return results


# -- the report -----------------------------------------------------------------------------------------------

SUMMED = ("samples", "tokens", "trained_tokens", "masked_step_tokens", "truncated_tokens", "trained_tokens_lost")


def _report(metas: list[str], policy_report, renderer: Renderer, config: BuildConfig, data_dir, annotations,
            n_trajectories: int) -> dict[str, Any]:
    counts: Counter = Counter()
    drops: Counter = Counter(policy_report.dropped)
    for raw in metas:
        meta = json.loads(raw)
        counts.update(meta.get("counts", {}))
        if "drop" in meta:
            drops[meta["drop"]] += 1
    used_n = n_trajectories - sum(drops.values())
    by_label = {k.removeprefix("trained_tokens_label_"): v for k, v in sorted(counts.items())
                if k.startswith("trained_tokens_label_")}
    report = {
        "srft_version": srft.__version__,
        "config": config.model_dump(mode="json"),
        "inputs": _fingerprints(data_dir, annotations, config.tokenizer),
        "template": renderer.profile.to_dict(),
        "policy": policy_report.to_dict(),
        "trajectories": n_trajectories,
        "trajectories_used": used_n,
        "trajectories_dropped": n_trajectories - used_n,
        "drop_reasons": dict(sorted(drops.items())),
        **{k: counts[k] for k in SUMMED},
        "trained_tokens_by_label": by_label,
        "samples_dropped": {k.removeprefix("samples_dropped_"): v for k, v in sorted(counts.items())
                            if k.startswith("samples_dropped_")},
        "steps_located": {k.removeprefix("steps_"): counts[k] for k in ("steps_exact", "steps_local",
                                                                        "steps_mismatch")},
        "other_counts": {k: v for k, v in sorted(counts.items()) if k not in SUMMED and not k.startswith(
            ("samples_dropped_", "trained_tokens_label_", "steps_exact", "steps_local", "steps_mismatch"))},
        "warnings": _warnings(renderer.profile, config, counts, drops),
    }
    return report


def _warnings(profile, config: BuildConfig, counts: Counter, drops: Counter) -> list[str]:
    """What the user should know about this build: template facts that bite, and what the data hit."""
    out = []
    if config.masks.render == "full" and not profile.prefix_preserving:
        out.append(profile.warnings()[0])
    facts = [("steps_mismatch", "trained step(s) rendered by the template in a context that differs from their "
                                "inference prompt (see template.prefix_failures)"),
             ("boundary_straddles", "step boundary token(s) merge text across the boundary; left untrained"),
             ("steps_reasoning_not_rendered", "step(s) have reasoning_content the chat template does not render: "
                                              "it is neither seen nor trained"),
             ("steps_tool_calls_not_rendered", "step(s) have tool calls the chat template does not render: only "
                                               "their text is trained"),
             ("unlocated_trained_steps", "trained step(s) could not be located and are not trained")]
    out += [f"{counts[key]} {text}" for key, text in facts if counts[key]]
    errors = sum(n for reason, n in drops.items() if reason.startswith("template_error"))
    if errors:
        out.append(f"{errors} trajectory(ies) the chat template refused to render (see drop_reasons)")
    return out


def _fingerprints(data_dir, annotations, tokenizer: str) -> dict[str, Any]:
    store = Path(data_dir)
    store = store / "trajectories.parquet" if store.is_dir() else store
    tok = Path(tokenizer)
    tok_files = [tok] if tok.is_file() else sorted(p for p in tok.iterdir() if p.is_file() and p.suffix in (
        ".json", ".jinja", ".model", ".txt"))
    return {"store": {"path": str(store.resolve()), "sha256": sha256_file(store)},
            "annotations": None if annotations is None else {"path": str(Path(annotations).resolve()),
                                                             "sha256": sha256_file(Path(annotations))},
            "tokenizer": {"path": str(tok.resolve()), "files": {p.name: sha256_file(p) for p in tok_files}}}



def _fingerprint(report: dict[str, Any]) -> str:
    """A datasets fingerprint from the build's inputs and config (paths excluded): same inputs, same bytes."""
    inputs = json.loads(json.dumps(report["inputs"]))
    for item in inputs.values():
        if isinstance(item, dict):
            item.pop("path", None)
    config = {k: v for k, v in report["config"].items() if k not in ("tokenizer", "num_proc", "batch_size")}
    payload = json.dumps({"inputs": inputs, "config": config, "version": srft.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
