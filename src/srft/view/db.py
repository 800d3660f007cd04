"""Human step labels in SQLite (WAL): one row per (trajectory, step, annotator), plus an append-only history.

WAL lets the viewer write while `srft labels export` (or a second viewer) reads. A connection is opened per
operation: the web server answers from a thread pool, and sqlite3 connections must not cross threads.

Tables:
  labels(trajectory_id, step, annotator, label, note, updated_at)  the current label of each annotator
  history(id, trajectory_id, step, annotator, label, note, at)     every change; label NULL = cleared
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from srft.labels import StepLabel
from srft.model import LABELS

SCHEMA_VERSION = 1
_LABEL_CHECK = ", ".join(f"'{x}'" for x in LABELS)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    trajectory_id TEXT NOT NULL,
    step INTEGER NOT NULL CHECK (step >= 1),
    annotator TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ({_LABEL_CHECK})),
    note TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (trajectory_id, step, annotator)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trajectory_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    label TEXT,
    note TEXT,
    at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class HumanLabel:
    trajectory_id: str
    step: int
    annotator: str
    label: str
    note: str | None
    updated_at: str


class LabelsDBError(ValueError):
    """The database cannot be used (not an srft labels database, newer schema, or conflicting labels)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class LabelsDB:
    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise LabelsDBError(f"{self.path}: no such labels database")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise LabelsDBError(f"{self.path}: schema version {row[0]} is newer than this srft "
                                    f"({SCHEMA_VERSION}); upgrade srft")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as exc:
            raise LabelsDBError(f"{self.path}: cannot open: {exc}") from exc
        try:
            con.execute("PRAGMA busy_timeout = 10000")
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        except sqlite3.DatabaseError as exc:
            raise LabelsDBError(f"{self.path}: {exc}") from exc
        finally:
            con.close()

    def set(self, trajectory_id: str, step: int, annotator: str, label: str | None,
            note: str | None = None) -> HumanLabel | None:
        """Save (or with label None, clear) one annotator's label of a step; returns what is stored now."""
        if label is not None and label not in LABELS:
            raise ValueError(f"unknown label {label!r} (expected one of {', '.join(LABELS)})")
        note = (note or "").strip() or None
        at = _now()
        with self._connect() as con:
            if label is None:
                con.execute("DELETE FROM labels WHERE trajectory_id = ? AND step = ? AND annotator = ?",
                            (trajectory_id, step, annotator))
            else:
                con.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                            "(trajectory_id, step, annotator) DO UPDATE SET label = excluded.label, "
                            "note = excluded.note, updated_at = excluded.updated_at",
                            (trajectory_id, step, annotator, label, note, at))
            con.execute("INSERT INTO history (trajectory_id, step, annotator, label, note, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (trajectory_id, step, annotator, label, note, at))
        return None if label is None else HumanLabel(trajectory_id, step, annotator, label, note, at)

    def labels(self, *, trajectory_id: str | None = None,
               annotators: Sequence[str] | None = None) -> list[HumanLabel]:
        """Current labels, sorted by (trajectory_id, step, annotator); optionally of one trajectory / annotators."""
        sql, args = "SELECT * FROM labels WHERE 1 = 1", []
        if trajectory_id is not None:
            sql += " AND trajectory_id = ?"
            args.append(trajectory_id)
        if annotators:
            sql += f" AND annotator IN ({', '.join('?' * len(annotators))})"
            args += list(annotators)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY trajectory_id, step, annotator", args).fetchall()
        return [HumanLabel(*r) for r in rows]

    def annotators(self) -> list[str]:
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT annotator FROM labels ORDER BY annotator")]

    def history_count(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM history").fetchone()[0]


def export_labels(db: LabelsDB, annotators: Sequence[str] | None = None,
                  on_conflict: str = "error") -> tuple[list[StepLabel], dict]:
    """Gold step labels from the database: `source` = 'human:<annotator>', `reason` = the note.

    Where several annotators labelled one step: `error` lists the conflicts (agreeing labels are merged),
    `latest` keeps the most recent label. Export one annotator each (`annotators=[name]`) to measure
    inter-annotator agreement with `srft critic-eval`.
    """
    if on_conflict not in ("error", "latest"):
        raise ValueError(f"on_conflict {on_conflict!r}: expected 'error' or 'latest'")
    by_step: dict[tuple[str, int], list[HumanLabel]] = {}
    for lab in db.labels(annotators=annotators):
        by_step.setdefault((lab.trajectory_id, lab.step), []).append(lab)
    out, conflicts, merged = [], [], 0
    for (tid, step), labs in sorted(by_step.items()):
        labs = sorted(labs, key=lambda x: (x.updated_at, x.annotator))
        if len({x.label for x in labs}) > 1:
            conflicts.append(f"{tid} step {step}: " + ", ".join(f"{x.annotator}={x.label}" for x in labs))
            if on_conflict == "error":
                continue
        merged += len(labs) > 1
        chosen = labs[-1]
        who = ",".join(sorted({x.annotator for x in labs if x.label == chosen.label}))
        out.append(StepLabel(trajectory_id=tid, step=step, label=chosen.label, reason=chosen.note,
                             source=f"human:{who}"))
    if conflicts and on_conflict == "error":
        shown = "\n  ".join(conflicts[:20])
        raise LabelsDBError(f"{db.path}: {len(conflicts)} step(s) have conflicting labels from different "
                            f"annotators:\n  {shown}\nchoose one with --annotator NAME, or --on-conflict latest")
    report = {"labels": len(out), "trajectories": len({x.trajectory_id for x in out}),
              "annotators": sorted({a for labs in by_step.values() for a in (x.annotator for x in labs)}),
              "multi_annotator_steps": merged, "conflicts": len(conflicts)}
    return out, report
