"""File I/O at the edges: atomic writes, JSONL, and the trajectory Parquet/JSONL store.

Every output goes through `atomic_path`: written to a temp name beside the target, then `os.replace`d, so a
crash never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from srft.model import LABELS, Trajectory

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it
TRAJECTORY_BATCH = 512  # rows per Parquet row group / read batch: bounds memory on 100k-row stores


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it into place (replacing what was there)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs should be as readable as open() makes them
    try:
        yield tmp
        if directory and target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def make_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create an output folder (and its parents). ValueError naming `option` when the path is a file or cannot be
    created, instead of an OSError deep inside a stage."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder; give a folder path (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create this folder ({exc.strerror or exc}); give a writable "
                         "path") from None
    return out


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed (inputs can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, key-sorted JSON: same object, same bytes."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    return n


class JsonlError(ValueError):
    """A JSONL line that does not parse; names the file and line."""


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number from 1, object) for each non-blank line; raise JsonlError naming the line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


# -- the trajectory store --------------------------------------------------------------------------------

def _arrow_schema():
    import pyarrow as pa

    s, i, b, f = pa.string(), pa.int64(), pa.bool_(), pa.float64()
    tool_call = pa.struct([("id", s), ("type", s), ("function", pa.struct([("name", s), ("arguments", s)]))])
    message = pa.struct([("role", s), ("content", s), ("tool_calls", pa.list_(tool_call)),
                         ("tool_call_id", s), ("name", s), ("reasoning_content", s)])
    step = pa.struct([("number", i), ("message_index", i), ("thought", s), ("action", s),
                      ("observation_indices", pa.list_(i)), ("is_demo", b), ("synthetic", b), ("final", b),
                      ("label", s), ("label_reason", s), ("label_source", s),
                      ("label_probs", pa.struct([(lab, f) for lab in LABELS])), ("weight", f)])
    test = pa.struct([("name", s), ("group", s), ("passed", b)])
    return pa.schema([
        ("schema_version", i), ("id", s), ("instance_id", s), ("repo", s),
        ("source", pa.struct([("format", s), ("path", s), ("row", i), ("sha256", s)])),
        ("messages", pa.list_(message)), ("steps", pa.list_(step)), ("tools_json", s),
        ("outcome", pa.struct([("resolved", b), ("status", s), ("source", s), ("detail", s),
                               ("tests", pa.list_(test))])),
        ("metadata", pa.struct([("model", s), ("exit_status", s), ("cost", f), ("api_calls", i),
                                ("submission", s), ("extra_json", s)])),
    ])


def write_trajectories(path: str | os.PathLike, trajectories: Iterable[Trajectory]) -> int:
    """Write trajectories to `.parquet` or `.jsonl` (by suffix), atomically, in the order given.
    Callers sort by id when they want byte-identical output for identical inputs."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return write_jsonl(path, (t.to_record() for t in trajectories))
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    n = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for traj in trajectories:
                batch.append(traj.to_record())
                if len(batch) >= TRAJECTORY_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    n, batch = n + len(batch), []
            if batch or n == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
    return n


def iter_trajectories(path: str | os.PathLike) -> Iterator[Trajectory]:
    """Stream trajectories from a store written by `write_trajectories` (or a directory holding
    `trajectories.parquet`, as `srft ingest` writes)."""
    path = Path(path)
    if path.is_dir():
        path = path / "trajectories.parquet"
    if path.suffix == ".jsonl":
        for _, rec in iter_jsonl(path):
            yield Trajectory.from_record(rec)
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=TRAJECTORY_BATCH):
        for rec in batch.to_pylist():
            yield Trajectory.from_record(rec)


def read_trajectories(path: str | os.PathLike) -> list[Trajectory]:
    return list(iter_trajectories(path))
