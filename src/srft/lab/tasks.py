"""Seeded bug-fixing tasks of graded difficulty: a few files of `name = value` lines, some values wrong.

A task is a small "repository" (path -> lines), one test per variable (`test_<name>` checks `name == expected`),
and a bug report naming the failing tests. Difficulty grows along the three axes the lab studies: more files
and lines to look through, more bugs (a longer path to the fix), and a hint in the report that names a file,
which on harder tasks is often the wrong one (a misleading hint the teacher tends to trust).

Everything is a pure function of (seed, difficulty): the same seed always gives the same task, so training and
held-out task sets are reproducible and disjoint by construction (`task_seeds`).
"""

from __future__ import annotations

import json
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Difficulty = Literal["easy", "medium", "hard"]

FILE_NAMES = ("app.py", "api.py", "cache.py", "cli.py", "config.py", "core.py", "db.py", "io.py", "log.py",
              "math.py", "net.py", "parse.py", "store.py", "util.py")
VAR_NAMES = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "count", "size", "limit",
             "depth", "width", "height", "speed", "scale", "offset", "margin", "retries", "timeout", "port",
             "level", "ratio", "weight", "score", "rank", "total", "index", "step", "batch", "epochs", "seed",
             "lines", "pages", "users", "items", "slots", "tiles", "cells", "nodes", "edges", "hops", "ticks",
             "bytes", "words", "chars", "rows", "cols", "gap", "pad", "delay", "quota", "budget", "cost", "price",
             "tax", "fee", "bonus", "points", "lives", "coins", "keys", "doors", "rooms")
VALUE_RANGE = (1, 99)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DifficultySpec(_Model):
    """How a task of one difficulty is drawn."""

    files: tuple[int, int] = Field(description="min and max number of files")
    lines: tuple[int, int] = Field(description="min and max lines per file")
    bugs: tuple[int, int] = Field(description="min and max number of wrong values (failing tests)")
    hint_rate: float = Field(ge=0, le=1, description="probability that the report names a file")
    misleading_rate: float = Field(ge=0, le=1, description="probability that a named file holds no bug")


DIFFICULTIES: dict[str, DifficultySpec] = {
    "easy": DifficultySpec(files=(2, 2), lines=(3, 4), bugs=(1, 1), hint_rate=0.5, misleading_rate=0.0),
    "medium": DifficultySpec(files=(3, 3), lines=(4, 5), bugs=(2, 2), hint_rate=0.6, misleading_rate=0.5),
    "hard": DifficultySpec(files=(4, 5), lines=(5, 6), bugs=(3, 4), hint_rate=0.8, misleading_rate=0.75),
}


class Task(_Model):
    """One generated task. `files` is the buggy repository the agent starts from."""

    instance_id: str = Field(description="lab__bugfix-<seed>; SWE-bench-shaped so every srft reader accepts it")
    seed: int = Field(description="the generator seed")
    difficulty: Difficulty = Field(description="easy | medium | hard")
    files: dict[str, list[str]] = Field(description="path -> lines `name = value`, paths sorted")
    expected: dict[str, int] = Field(description="test name's variable -> the value its test expects")
    bugs: list[str] = Field(description="variables whose value is wrong, in report (= repository) order")
    hint: str | None = Field(None, description="the file the report blames, if any")
    hint_misleading: bool = Field(False, description="the blamed file holds none of the bugs")
    statement: str = Field(description="the bug report shown to the agent")

    def location(self, name: str) -> tuple[str, int]:
        """(path, 1-based line) where `name` is defined in the original repository."""
        for path, lines in self.files.items():
            for i, line in enumerate(lines, 1):
                if line.split(" = ")[0] == name:
                    return path, i
        raise KeyError(name)

    def buggy_value(self, name: str) -> int:
        path, line = self.location(name)
        return int(self.files[path][line - 1].split(" = ")[1])


def make_task(seed: int, difficulty: Difficulty) -> Task:
    """The task for (seed, difficulty); pure and deterministic."""
    spec = DIFFICULTIES[difficulty]
    rng = random.Random(f"lab-task:{difficulty}:{seed}")
    paths = sorted(rng.sample(FILE_NAMES, rng.randint(*spec.files)))
    sizes = [rng.randint(*spec.lines) for _ in paths]
    names = rng.sample(VAR_NAMES, sum(sizes))
    expected = {name: rng.randint(*VALUE_RANGE) for name in names}
    chosen = set(rng.sample(names, rng.randint(*spec.bugs)))
    bugs = [n for n in names if n in chosen]  # repository order, as `test` lists failures
    actual = dict(expected)
    for name in bugs:
        actual[name] = rng.choice([v for v in range(VALUE_RANGE[0], VALUE_RANGE[1] + 1) if v != expected[name]])
    files, it = {}, iter(names)
    for path, size in zip(paths, sizes):
        files[path] = [f"{name} = {actual[name]}" for name in (next(it) for _ in range(size))]
    buggy_files = {p for p, lines in files.items() if any(ln.split(" = ")[0] in bugs for ln in lines)}
    hint, misleading = None, False
    if rng.random() < spec.hint_rate:
        misleading = rng.random() < spec.misleading_rate and len(buggy_files) < len(paths)
        pool = sorted(set(paths) - buggy_files) if misleading else sorted(buggy_files)
        hint = rng.choice(pool)
    task = Task(instance_id=f"lab__bugfix-{difficulty[0]}{seed:06d}", seed=seed, difficulty=difficulty,
                files=files, expected=expected, bugs=bugs, hint=hint, hint_misleading=misleading, statement="")
    return task.model_copy(update={"statement": render_statement(task, actual)})


def failure_line(name: str, got: int | None, want: int) -> str:
    """One failing test as the report and the environment's `test` tool show it."""
    return json.dumps({"test": f"test_{name}", "var": name, "got": got, "value": want})


def render_statement(task: Task, actual: dict[str, int]) -> str:
    """The bug report: the failing tests as the CI's JSON lines (see srft.lab.env), then the suspected file."""
    parts = ["Failing tests:", *(failure_line(n, actual[n], task.expected[n]) for n in task.bugs)]
    if task.hint:
        parts.append(f'Users report the bug in {json.dumps({"path": task.hint})}')
    return "\n".join(parts)


Split = Literal["train", "eval", "pretrain"]
SPLIT_BASE = {"train": 0, "eval": 1_000_000, "pretrain": 2_000_000}


def task_seeds(split: Split, n: int, offset: int = 0) -> list[int]:
    """Disjoint seed ranges: teacher tasks from [0, 10^6), held-out tasks from [10^6, 2*10^6), the base
    model's pretraining tasks from [2*10^6, 3*10^6)."""
    if offset + n > 1_000_000:
        raise ValueError(f"{split}: at most 10^6 tasks per split (asked for {offset} + {n})")
    return [SPLIT_BASE[split] + offset + i for i in range(n)]


def make_tasks(split: Split, n: int, mix: dict[str, float], seed: int = 0) -> list[Task]:
    """`n` tasks whose difficulties follow `mix` (weights), deterministically for (split, n, mix, seed).

    Counts per difficulty are apportioned exactly (largest remainder), so a 60-task eval set with an even mix
    holds exactly 20 of each; tasks are then interleaved in a seeded order.
    """
    unknown = sorted(set(mix) - set(DIFFICULTIES))
    if unknown:
        raise ValueError(f"unknown difficulty {unknown}; known: {', '.join(DIFFICULTIES)}")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("difficulty mix must have a positive weight")
    quotas = {d: n * w / total for d, w in sorted(mix.items())}
    counts = {d: int(q) for d, q in quotas.items()}
    for d in sorted(quotas, key=lambda d: (counts[d] - quotas[d], d))[: n - sum(counts.values())]:
        counts[d] += 1
    seeds = task_seeds(split, n, offset=seed * n)
    order = list(range(n))
    random.Random(f"lab-order:{split}:{seed}").shuffle(order)
    labels = [d for d in sorted(counts) for _ in range(counts[d])]
    return [make_task(seeds[i], labels[order[i]]) for i in range(n)]
