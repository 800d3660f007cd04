"""Files -> records: JSON documents, JSONL and Parquet rows (in batches), companion files by name.

Everything here reports problems as `FileProblem(reason)` with a reason a user can act on ("truncated JSON:
the file ends at byte 812", "not UTF-8 text (byte 0)"); the caller attaches the path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROW_BATCH = 256  # Parquet rows decoded at a time: bounds memory on 100k-row data sets
JSON_SUFFIXES = (".json", ".traj", ".jsonl", ".parquet")

# Files runs leave beside trajectories: recognised by name and counted, never read as trajectories.
# (pattern, kind); first match wins. Harness reports are not here: they are detected by content.
COMPANIONS: tuple[tuple[str, str], ...] = (
    ("preds.json", "predictions"), ("all_preds.jsonl", "predictions"), ("*preds*.json", "predictions"),
    ("*preds*.jsonl", "predictions"), ("exit_statuses_*.yaml", "exit_statuses"),
    ("run_batch_exit_statuses.yaml", "exit_statuses"), ("metadata.json", "run_metadata"),
    ("*.yaml", "config"), ("*.yml", "config"), ("*.toml", "config"), ("*.cfg", "config"), ("*.ini", "config"),
    ("*.log", "log"), ("*.log.*", "log"), ("*.md", "markdown"), ("*.rst", "markdown"), ("*.txt", "text"),
    ("*.patch", "patch"), ("*.diff", "patch"), ("*.html", "other"), ("*.csv", "other"), ("*.png", "other"),
    ("*.jpg", "other"), ("*.svg", "other"), ("*.sh", "other"), ("*.py", "other"),
)


class FileProblem(ValueError):
    """A file or row that cannot be read; the message is the reason (without the path)."""


def companion_kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((kind for pattern, kind in COMPANIONS if fnmatch.fnmatch(name, pattern)), None)


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in (".traj.json", ".traj", ".json"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def row_sha256(row: dict[str, Any]) -> str:
    payload = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileProblem(f"cannot read ({exc.strerror or exc})") from exc


def _decode(data: bytes) -> str:
    if not data.strip():
        raise FileProblem("empty file" if not data else "empty file (whitespace only)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"not UTF-8 text (invalid byte at {exc.start}): binary or another encoding") from exc


def json_error(text: str, exc: json.JSONDecodeError) -> str:
    """'truncated JSON: ...' when the parser ran off the end (an unterminated string always does), else where
    it failed, in bytes."""
    size = len(text.encode())
    at = len(text[:exc.pos].encode())
    if exc.msg.startswith("Unterminated string"):
        return f"truncated JSON: the file ends at byte {size} inside a string that starts at byte {at}"
    if exc.pos >= len(text.rstrip()):
        return f"truncated JSON: the file ends at byte {size} ({exc.msg})"
    return f"invalid JSON at byte {at} of {size} ({exc.msg})"


def load_json_doc(path: Path) -> tuple[Any, str]:
    """Parse one JSON document; returns (value, sha256 of the file bytes)."""
    data = _read_bytes(path)
    text = _decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(json_error(text, exc)) from exc
    return value, hashlib.sha256(data).hexdigest()


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | FileProblem]]:
    """(line number from 1, row or the problem with that line); a bad line never stops the file."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise FileProblem(f"cannot read ({exc.strerror or exc})") from exc
    seen_any = False
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            seen_any = True
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, FileProblem(f"not UTF-8 text (invalid byte at {exc.start} of the line)")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, FileProblem(json_error(line, exc).replace("the file ends", "the line ends"))
                continue
            if not isinstance(obj, dict):
                yield lineno, FileProblem(f"expected a JSON object per line, got {type(obj).__name__}")
                continue
            yield lineno, obj
    if not seen_any:
        raise FileProblem("empty file")


def parquet_rows(path: Path) -> tuple[list[str], int, Iterator[tuple[int, dict[str, Any]]]]:
    """(column names, row count, iterator of (row index from 0, row)) decoded ROW_BATCH rows at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except OSError as exc:  # pyarrow raises ArrowInvalid (an OSError subclass... or ValueError) on junk
        raise FileProblem(f"not a readable Parquet file ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow's error types vary by version; the reason is kept
        raise FileProblem(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        index = 0
        for batch in pf.iter_batches(batch_size=ROW_BATCH):
            for row in batch.to_pylist():
                yield index, row
                index += 1

    return list(pf.schema_arrow.names), pf.metadata.num_rows, rows()
