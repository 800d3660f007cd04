"""Trajectory readers: one module per format, registered by name in `FORMATS`, detected once per file.

A reader is `read(record: dict, ctx: RecordContext) -> Trajectory`, where `record` is a parsed `.traj`/`.json`
document or one row of a JSONL/Parquet data set. `detect(record)` names the format from the record's shape;
`scan_file(path)` turns any file into trajectories, harness reports, companions and problems, so one bad file
or row never stops the rest. The ingest stage (`srft.formats.ingest`) builds on `scan_file`.

Add a format: write `formats/<name>.py` with a `read` function, add it to `FORMATS`, and a rule to `detect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.formats._common import FormatError, RecordContext
from srft.formats._files import (FileProblem, companion_kind, jsonl_rows, load_json_doc, parquet_rows, row_sha256,
                                 stem_of)
from srft.formats.outcomes import OutcomeReport, detect_outcome_obj, report_from_obj
from srft.model import Trajectory
from srft.registry import resolve

FORMATS: dict[str, str] = {
    "mini-swe-agent-1": "srft.formats.mini_swe_agent_v1:read",
    "mini-swe-agent-1.1": "srft.formats.mini_swe_agent_v11:read",
    "litellm-log": "srft.formats.litellm_log:read",
    "swe-agent-traj": "srft.formats.swe_agent:read",
    "swe-smith": "srft.formats.swe_smith:read",
    "nebius-swe-agent": "srft.formats.nebius:read",
    "swe-rebench-openhands": "srft.formats.swe_rebench:read",
    "openai-chat": "srft.formats.openai_chat:read",
}

__all__ = ["FORMATS", "Bad", "Companion", "FormatError", "ReadResult", "RecordContext", "detect", "read_file",
           "read_record", "reader", "scan_file"]


class Bad(BaseModel):
    """A file, or one row of a data-set file, that was skipped, and why."""

    model_config = ConfigDict(extra="forbid")

    path: str
    row: int | None = Field(None, description="line number (JSONL, from 1) or row index (Parquet, from 0)")
    reason: str
    format: str | None = Field(None, description="the detected format, when the file got that far")

    def __str__(self) -> str:
        return f"{self.path}{'' if self.row is None else f':{self.row}'}: {self.reason}"


class Companion(BaseModel):
    """A file runs leave beside trajectories (predictions, exit statuses, logs, ...): counted, not read."""

    model_config = ConfigDict(extra="forbid")

    path: str
    kind: str


class ReadResult(BaseModel):
    """Everything one file held."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: str
    kind: Literal["trajectories", "outcome", "companion", "bad"]
    format: str | None = None
    trajectories: list[Trajectory] = Field(default_factory=list)
    bad: list[Bad] = Field(default_factory=list)
    companion: str | None = None
    outcome: OutcomeReport | None = None


def reader(name: str) -> Callable[[dict[str, Any], RecordContext], Trajectory]:
    """The reader registered as `name` (or a dotted path); an unknown name lists the known ones."""
    return resolve(FORMATS, name, "trajectory format")


def detect(record: Any) -> str | None:
    """The format of one record (a parsed document or a data-set row), from its shape; None if unknown."""
    if not isinstance(record, dict):
        return None
    fmt = record.get("trajectory_format")
    if fmt == "mini-swe-agent-1":
        return "mini-swe-agent-1"
    if isinstance(fmt, str) and fmt.startswith("mini-swe-agent-1."):
        return "mini-swe-agent-1.1"
    if isinstance(record.get("history"), list) and "info" in record:
        return "swe-agent-traj"
    messages, trajectory = record.get("messages"), record.get("trajectory")
    if isinstance(messages, list) and "response" in record:
        return "litellm-log"
    if isinstance(trajectory, list):
        first = next((t for t in trajectory if isinstance(t, dict)), {})
        if "text" in first or "system_prompt" in first or "target" in record:
            return "nebius-swe-agent"
        return "swe-rebench-openhands"
    if isinstance(messages, str):
        return "swe-smith"
    if isinstance(messages, list):
        if "info" in record:  # a mini-swe-agent file without trajectory_format (older 1.x)
            roles = {m.get("role") for m in messages if isinstance(m, dict)}
            return "mini-swe-agent-1.1" if roles & {"tool", "exit"} else "mini-swe-agent-1"
        return "openai-chat"
    return None


def _is_predictions(record: dict[str, Any]) -> bool:
    """preds.json ({instance_id: {model_patch, ...}}) or a predictions row ({instance_id, model_patch})."""
    if any(key in record for key in ("messages", "trajectory", "history")):
        return False
    if "model_patch" in record and "instance_id" in record:
        return True
    values = list(record.values())[:3]
    return bool(values) and all(isinstance(v, dict) and "model_patch" in v for v in values)


def _unknown(keys: list[str], what: str = "keys") -> str:
    shown = ", ".join(sorted(keys)[:15]) + (", ..." if len(keys) > 15 else "")
    return f"unknown format: {what} {shown or '(none)'} (a trajectory needs messages, history or trajectory)"


def read_record(record: dict[str, Any], ctx: RecordContext, fmt: str | None = None) -> Trajectory:
    """Detect (unless `fmt` is given) and read one record; raises FormatError."""
    fmt = fmt or detect(record)
    if fmt is None:
        raise FormatError(_unknown(list(record)))
    ctx.format = fmt
    return reader(fmt)(record, ctx)


Item = Trajectory | Bad | Companion | OutcomeReport


def scan_file(path: str | Path, *, fmt: str | None = None, label: str | None = None) -> Iterator[Item]:
    """Everything in one file, streamed: trajectories, a harness report, a companion, or Bad items (a bad
    row does not end the file). `fmt` forces the trajectory reader (companions and harness reports are still
    recognised); `label` is the path recorded in provenance."""
    path = Path(path)
    label = label or str(path)
    kind = companion_kind(path)
    if path.suffix == ".md":
        yield from _scan_markdown(path, label)
        return
    if kind is not None:  # `fmt` forces the trajectory reader; companions stay companions
        yield Companion(path=label, kind=kind)
        return
    try:
        if path.suffix == ".jsonl":
            yield from _scan_rows(_jsonl_rows(path), label, fmt, what="keys")
        elif path.suffix == ".parquet":
            columns, n, rows = parquet_rows(path)
            if n == 0:
                raise FileProblem(f"empty data set (0 rows; columns {', '.join(columns)})")
            yield from _scan_rows(rows, label, fmt, what="columns")
        else:
            yield from _scan_document(path, label, fmt)
    except FileProblem as exc:
        yield Bad(path=label, reason=str(exc))


def _scan_markdown(path: Path, label: str) -> Iterator[Item]:
    from srft.formats.outcomes import OutcomeFileError, read_outcome_file, sniff_outcome_file

    if sniff_outcome_file(path):
        try:
            yield read_outcome_file(path).model_copy(update={"path": label})
            return
        except OutcomeFileError:
            pass
    yield Companion(path=label, kind="markdown")


def _scan_document(path: Path, label: str, fmt: str | None) -> Iterator[Item]:
    value, sha = load_json_doc(path)
    if isinstance(value, list):  # a JSON array of data-set rows
        yield from _scan_rows(((i, row) for i, row in enumerate(value)), label, fmt, what="keys")
        return
    if not isinstance(value, dict):
        raise FileProblem(f"expected a JSON object, got {type(value).__name__}")
    outcome_kind = detect_outcome_obj(value)
    if outcome_kind:
        yield report_from_obj(value, label, outcome_kind)
        return
    if _is_predictions(value):
        yield Companion(path=label, kind="predictions")
        return
    ctx = RecordContext(format=fmt or "", path=label, sha256=sha, folder=path.parent.name, stem=stem_of(path))
    try:
        yield read_record(value, ctx, fmt)
    except FormatError as exc:
        yield Bad(path=label, reason=str(exc), format=ctx.format or None)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, row in jsonl_rows(path):
        yield lineno, row


def _scan_rows(rows: Iterator[tuple[int, Any]], label: str, fmt: str | None, *, what: str) -> Iterator[Item]:
    """Data-set rows: the format is detected on the first good row, then every row is read with it."""
    first = True
    for index, row in rows:
        if isinstance(row, FileProblem):
            yield Bad(path=label, row=index, reason=str(row), format=fmt)
            continue
        if not isinstance(row, dict):
            yield Bad(path=label, row=index, reason=f"expected an object per row, got {type(row).__name__}")
            continue
        if first:
            first = False
            if _is_predictions(row):
                yield Companion(path=label, kind="predictions")
                return
            fmt = fmt or detect(row)
            if fmt is None:
                raise FileProblem(_unknown(list(row), what))
        ctx = RecordContext(format=fmt, path=label, sha256=row_sha256(row), row=index)
        try:
            yield read_record(row, ctx, fmt)
        except FormatError as exc:
            yield Bad(path=label, row=index, reason=str(exc), format=fmt)


def read_file(path: str | Path, *, fmt: str | None = None) -> ReadResult:
    """Read a whole file into memory (fine for single trajectories; use `scan_file` or the ingest stage for
    large data sets). LLM-call logs come back one call each; `srft.formats.ingest` groups them."""
    result = ReadResult(path=str(path), kind="bad")
    for item in scan_file(path, fmt=fmt):
        if isinstance(item, Trajectory):
            result.trajectories.append(item)
            result.format = item.source.format
        elif isinstance(item, Bad):
            result.bad.append(item)
        elif isinstance(item, Companion):
            result.companion = item.kind
        else:
            result.outcome = item
    if result.trajectories:
        result.kind = "trajectories"
    elif result.outcome is not None:
        result.kind = "outcome"
    elif result.companion is not None:
        result.kind = "companion"
    return result
