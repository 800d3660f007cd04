"""A small, cached DAG runner for `srft run`: each node writes one folder with a manifest.

A node's fingerprint hashes its stage, options, the srft version, the content hashes of its external inputs and
the output hashes of the nodes it depends on. A node is skipped when its folder holds a manifest with the same
fingerprint; otherwise it runs into a temp folder that is renamed into place only after the work and the manifest
are complete, so a crash never leaves output that a later run trusts (a leftover temp folder is never read).

Shapes: a node key is "stage" or "stage/variant" (e.g. "build/srft", "train/srft/seed1"); its folder is
run_dir/<key>. Nodes are listed in topological order by the caller (`srft.run.graph`).

Failure policy (one bad item never sinks a batch): a node that raises is recorded as failed with its error, its
dependents are recorded as blocked, and every node that does not depend on it still runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import srft
from srft.io import atomic_path, atomic_write_json

log = logging.getLogger("srft.run")
MANIFEST = "manifest.json"
RESUME = ".resume"  # run_dir/.resume/<key>/<fingerprint>/: checkpoints of unfinished attempts
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HASH_CACHE = ".srft-hash-cache.json"  # in the run dir: (path, size, mtime) -> sha256, so big inputs hash once

Progress = Callable[[float | None, float | None, str | None], None]  # (completed, total, note)


@dataclass
class Node:
    key: str
    stage: str
    options: dict[str, Any]
    fn: Callable[[NodeContext], dict[str, Any] | None]
    deps: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)  # external files/dirs whose content is part of the key


@dataclass
class NodeContext:
    node: Node
    out_dir: Path                 # where the node writes (a temp folder, renamed on success)
    run_dir: Path
    dep_dirs: dict[str, Path]     # dependency key -> its final folder
    progress: Progress = lambda completed, total, note: None
    console: Any = None           # the run's rich console, for stages that draw their own (nested) progress
    fingerprint: str = ""         # this node's fingerprint (names resumable work kept across attempts)

    def dep(self, key: str) -> Path:
        return self.dep_dirs[key]

    def resume_dir(self) -> Path:
        """A folder that survives a failed attempt of this node with these exact inputs (for checkpoints): a
        crash loses the temp folder, not hours of training. Removed by the node once it succeeds."""
        return self.run_dir / RESUME / self.node.key / self.fingerprint[:16]


@dataclass
class PlanItem:
    node: Node
    action: Literal["run", "skip"]
    reason: str


@dataclass
class NodeResult:
    key: str
    stage: str
    status: Literal["ran", "skipped", "failed", "blocked"]
    reason: str
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "stage": self.stage, "status": self.status, "reason": self.reason,
                "seconds": round(self.seconds, 3), "summary": self.summary, "error": self.error}


class Hooks:
    """What a front end (the rich display of `srft run`) hears from `Runner.run`; every method is optional."""

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: Any) -> None: ...

    def start(self, node: Node, reason: str) -> None: ...

    def finish(self, result: NodeResult) -> None: ...

    def progress(self, node: Node, completed: float | None, total: float | None, note: str | None) -> None: ...


class HashCache:
    """sha256 of files, remembered by (absolute path, size, mtime_ns) so a 60 GB model folder is read once."""

    def __init__(self, path: Path | None):
        self.path, self.dirty = path, False
        self.entries: dict[str, list] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.entries = {}  # a damaged cache only costs re-hashing

    def file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        self.entries[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        self.dirty = True
        return h.hexdigest()

    def save(self) -> None:
        if self.path is not None and self.dirty:
            atomic_write_json(self.path, self.entries)
            self.dirty = False


def hash_path(path: Path, cache: HashCache | None = None) -> str:
    """sha256 over a file's bytes, or over (relative name, file hash) of every file below a directory
    (manifests excluded: they hold timings). "missing" for a path that does not exist."""
    path = Path(path)
    cache = cache or HashCache(None)
    if path.is_file():
        return cache.file(path)
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(str(child.relative_to(path)).encode() + b"\0" + cache.file(child).encode())
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _matches(node: Node, name: str | None) -> bool:
    """`--from train` matches every train node; `--from train/srft` that policy's train nodes."""
    return bool(name) and (node.stage == name or node.key == name or node.key.startswith(name + "/"))


class Runner:
    """Plans and runs nodes in the order given (callers list them topologically)."""

    def __init__(self, run_dir: Path, nodes: list[Node], console: Any = None):
        self.run_dir, self.nodes, self.console = Path(run_dir), nodes, console
        self.by_key = {n.key: n for n in nodes}
        if len(self.by_key) != len(nodes):
            raise ValueError("duplicate node keys")
        seen: set[str] = set()
        for n in nodes:
            missing = [d for d in n.deps if d not in seen]
            if missing:
                raise ValueError(f"node {n.key} depends on {missing}, which are not listed before it")
            seen.add(n.key)
        self._input_hashes: dict[Path, str] = {}
        self.hashes = HashCache(self.run_dir / HASH_CACHE)

    def folder(self, key: str) -> Path:
        return self.run_dir / key

    def fingerprint(self, node: Node) -> tuple[str, dict[str, Any]]:
        """(fingerprint, the parts it was computed from); the parts go into the manifest for `_why_changed`."""
        inputs = {}
        for p in node.inputs:
            if p not in self._input_hashes:
                self._input_hashes[p] = hash_path(p, self.hashes)
            inputs[str(p)] = self._input_hashes[p]
        deps = {d: (read_manifest(self.folder(d)) or {}).get("output_hash", "not-built") for d in node.deps}
        parts = {"stage": node.stage, "options": node.options, "srft_version": srft.__version__,
                 "inputs": inputs, "deps": deps}
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest(), parts

    def status(self, node: Node) -> tuple[bool, str]:
        """(up to date?, why not) from the node's manifest and its current fingerprint."""
        manifest = read_manifest(self.folder(node.key))
        if manifest is None:
            return False, "not built yet"
        fp, parts = self.fingerprint(node)
        if manifest.get("fingerprint") == fp:
            return True, "unchanged"
        return False, _why_changed(manifest.get("parts", {}), parts)

    def plan(self, force_from: str | None = None) -> list[PlanItem]:
        """Which nodes would run and why, without running anything. Forced nodes and everything downstream run;
        a dependency that will re-run makes its dependents run too (their fingerprint cannot be known yet)."""
        rerun: set[str] = set()
        items = []
        for node in self.nodes:
            upstream = [d for d in node.deps if d in rerun]
            if _matches(node, force_from):
                item = PlanItem(node, "run", f"forced by --from {force_from}")
            elif upstream:
                item = PlanItem(node, "run", f"upstream {upstream[0]} runs")
            else:
                ok, reason = self.status(node)
                item = PlanItem(node, "skip" if ok else "run", reason)
            if item.action == "run":
                rerun.add(node.key)
            items.append(item)
        self.hashes.save()
        return items

    def run(self, force_from: str | None = None, hooks: Hooks | None = None, *, workers: int = 1,
            threads: int | None = None) -> list[NodeResult]:
        """Run what is out of date, in order. Skips are decided when a node's turn comes (so a dependency that
        re-ran but wrote identical bytes does not force its dependents); forced nodes' dependents always run.
        With `workers` > 1, up to that many nodes whose dependencies are done run at once, each in a worker
        process (`threads` torch threads each); results come back in node order either way."""
        hooks = hooks or Hooks()
        results: dict[str, NodeResult] = {}
        forced: set[str] = set()
        if workers > 1:
            self._run_parallel(force_from, hooks, results, forced, workers, threads)
        else:
            for node in self.nodes:
                result, reason = self._decide(node, results, forced, force_from)
                if result is None:
                    hooks.start(node, reason)
                    result = self._attempt(node, reason, hooks)
                results[node.key] = result
                hooks.finish(result)
        self.hashes.save()
        return [results[n.key] for n in self.nodes]

    def _decide(self, node: Node, results: dict[str, NodeResult], forced: set[str],
                force_from: str | None) -> tuple[NodeResult | None, str]:
        """(the blocked or skipped result, or None when the node must run; the reason)."""
        bad = [d for d in node.deps if results[d].status in ("failed", "blocked")]
        if bad:
            reason = f"{bad[0]} {results[bad[0]].status}"
            return NodeResult(node.key, node.stage, "blocked", reason), reason
        up = [d for d in node.deps if d in forced]
        if _matches(node, force_from) or up:
            forced.add(node.key)
            return None, f"forced by --from {force_from}" if not up else f"upstream {up[0]} forced"
        ok, reason = self.status(node)
        if not ok:
            return None, reason
        manifest = read_manifest(self.folder(node.key)) or {}
        return NodeResult(node.key, node.stage, "skipped", reason, summary=manifest.get("summary", {})), reason

    def _run_parallel(self, force_from: str | None, hooks: Hooks, results: dict[str, NodeResult], forced: set[str],
                      workers: int, threads: int | None) -> None:
        """Dispatch ready nodes (in list order) to a pool of spawned processes, `workers` at a time."""
        import concurrent.futures as cf
        import multiprocessing

        logs = [h.baseFilename for h in logging.getLogger("srft").handlers if isinstance(h, logging.FileHandler)]
        pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(threads, logs))
        pending, running = list(self.nodes), {}
        try:
            while pending or running:
                for node in [n for n in pending if all(d in results for d in n.deps)]:
                    if len(running) >= workers:
                        break
                    pending.remove(node)
                    result, reason = self._decide(node, results, forced, force_from)
                    if result is None:
                        hooks.start(node, reason)
                        fp, parts = self.fingerprint(node)
                        job = pool.submit(execute, node, fp, parts, self.run_dir, self._dep_dirs(node))
                        running[job] = (node, reason, time.time())
                        continue
                    results[node.key] = result
                    hooks.finish(result)
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED) if running else ((), ())
                for job in done:
                    node, reason, start = running.pop(job)
                    results[node.key] = self._collect(job, node, reason, start)
                    hooks.finish(results[node.key])
        finally:
            # A stop (Ctrl-C, SIGTERM) must not leave workers training on: end them; their temp folders are
            # removed by the next run of those nodes. The pool offers no public way to reach its processes.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, job: Any, node: Node, reason: str, start: float) -> NodeResult:
        try:
            manifest = job.result()
        except Exception as exc:  # noqa: BLE001 - node boundary: record, block dependents, carry on
            text = "".join(traceback.format_exception(exc))
            log.error("%s failed after %.1f s: %s\n%s", node.key, time.time() - start, exc, text)
            return NodeResult(node.key, node.stage, "failed", reason, time.time() - start,
                              error=f"{type(exc).__name__}: {exc}")
        return NodeResult(node.key, node.stage, "ran", reason, manifest["seconds"], summary=manifest["summary"])

    def _attempt(self, node: Node, reason: str, hooks: Hooks) -> NodeResult:
        start = time.time()
        try:
            manifest = self.run_node(node, progress=lambda c, t, n: hooks.progress(node, c, t, n))
        except Exception as exc:  # noqa: BLE001 - node boundary: record, block dependents, carry on
            log.error("%s failed after %.1f s: %s\n%s", node.key, time.time() - start, exc, traceback.format_exc())
            return NodeResult(node.key, node.stage, "failed", reason, time.time() - start,
                              error=f"{type(exc).__name__}: {exc}")
        return NodeResult(node.key, node.stage, "ran", reason, manifest["seconds"], summary=manifest["summary"])

    def _dep_dirs(self, node: Node) -> dict[str, Path]:
        return {d: self.folder(d) for d in node.deps}

    def run_node(self, node: Node, progress: Progress | None = None) -> dict[str, Any]:
        """Run one node in this process into a temp folder and move it into place with its manifest."""
        fp, parts = self.fingerprint(node)
        return execute(node, fp, parts, self.run_dir, self._dep_dirs(node), progress, self.console)


def execute(node: Node, fp: str, parts: dict[str, Any], run_dir: Path, dep_dirs: dict[str, Path],
            progress: Progress | None = None, console: Any = None) -> dict[str, Any]:
    """Run `node` into a temp folder renamed to run_dir/<key> once the work and the manifest (the last file
    written) are complete; return the manifest. Module-level, so a worker process can run it."""
    final = run_dir / node.key
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed run (SIGKILL, power loss)
        shutil.rmtree(stale, ignore_errors=True)
    start = time.time()
    log.info("%s: start (options %s)", node.key, json.dumps(node.options, sort_keys=True, default=str))
    with atomic_path(final, directory=True) as tmp:
        ctx = NodeContext(node, tmp, run_dir, dep_dirs, console=console, fingerprint=fp)
        if progress is not None:
            ctx.progress = progress
        summary = node.fn(ctx) or {}
        manifest = {"key": node.key, "fingerprint": fp, "parts": parts, "summary": summary,
                    "srft_version": srft.__version__, "started": start, "seconds": round(time.time() - start, 3),
                    "output_hash": hash_path(tmp)}
        atomic_write_json(tmp / MANIFEST, manifest)
    log.info("%s: done in %.1f s", node.key, manifest["seconds"])
    return manifest


def _init_worker(threads: int | None, log_files: list[str]) -> None:
    """A worker process: the run's torch threads, and its log lines appended to the run's log."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    logger = logging.getLogger("srft")
    logger.setLevel(logging.INFO)
    for path in log_files:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)


def _why_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("options") != new["options"]:
        before, after = old.get("options") or {}, new["options"]
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return f"options changed: {', '.join(changed)}"
    if old.get("inputs") != new["inputs"]:
        before = old.get("inputs") or {}
        changed = sorted(k for k in set(before) | set(new["inputs"]) if before.get(k) != new["inputs"].get(k))
        return f"input changed: {', '.join(os.path.basename(k.rstrip('/')) or k for k in changed)}"
    if old.get("deps") != new["deps"]:
        before = old.get("deps") or {}
        changed = sorted(k for k in new["deps"] if before.get(k) != new["deps"][k])
        return f"upstream {', '.join(changed)} changed"
    if old.get("srft_version") != new["srft_version"]:
        return f"srft version {old.get('srft_version')} -> {new['srft_version']}"
    return "fingerprint changed"


class RunLocked(RuntimeError):
    """Another `srft run` holds the run directory."""
