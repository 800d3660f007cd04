"""External sort for trajectories: sorted runs spilled to temp files, merged lazily by id.

`srft ingest` writes its store sorted by id (same inputs, same bytes) without holding 100k trajectories in
memory: every CHUNK trajectories are sorted and pickled to a run file; `iter_sorted` merges the runs with a
heap, holding one trajectory per run.
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

from srft.model import Trajectory

CHUNK = 2000


class SortedSpill:
    def __init__(self, directory: str | Path | None = None, chunk: int = CHUNK) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="srft-ingest-", dir=directory)
        self._chunk, self._buffer, self._runs = chunk, [], []
        self._seq = 0  # ties on id keep arrival order, so duplicate collapsing keeps the first seen

    def add(self, traj: Trajectory) -> None:
        self._buffer.append((traj.id, self._seq, traj.to_record()))
        self._seq += 1
        if len(self._buffer) >= self._chunk:
            self._spill()

    def _spill(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort(key=lambda item: (item[0], item[1]))
        path = Path(self._tmp.name) / f"run-{len(self._runs):05d}.pkl"
        with open(path, "wb") as fh:
            for item in self._buffer:
                pickle.dump(item, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._runs.append(path)
        self._buffer = []

    @staticmethod
    def _read(path: Path) -> Iterator[tuple[str, int, dict]]:
        with open(path, "rb") as fh:
            while True:
                try:
                    yield pickle.load(fh)  # our own temp files, written above
                except EOFError:
                    return

    def iter_records(self) -> Iterator[dict]:
        """Store records (`Trajectory.to_record`) in id order; equal ids in arrival order."""
        self._spill()
        for _, _, record in heapq.merge(*(self._read(p) for p in self._runs), key=lambda it: (it[0], it[1])):
            yield record

    def iter_sorted(self) -> Iterator[Trajectory]:
        for record in self.iter_records():
            yield Trajectory.from_record(record)

    def close(self) -> None:
        self._tmp.cleanup()
