"""The record of finished work units of a run: append-only JSON-lines logs, one per process.

A unit appends one line (its record) after all its outputs are written, so a unit without a
line runs again on resume, and a line is never half-visible to a reader: a line that does not
parse (a process killed mid-write) counts as absent. Each process appends to its own file
(``units-<host>-<pid>-<random>.jsonl``), so there are no concurrent appenders and no locks, and
the number of files grows with the processes of a run, not with its units; :meth:`UnitLog.compact`
folds them into one ``units.jsonl`` when a run ends. 10⁵ units are 10⁵ lines, not 10⁵ files.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["UnitLog"]

_LOCK = threading.Lock()
_TOKEN = uuid.uuid4().hex[:8]  # per process: a reused pid never appends to another's file


class UnitLog:
    """Finished-unit records of one run folder.

    Parameters
    ----------
    folder : path
        Where the logs live (created on the first append).
    key : callable, optional
        Maps a record to its unit key (default: ``(record["image"], tuple(record["block"]))``).
    """

    def __init__(self, folder: str | os.PathLike, key=None):
        self.folder = Path(folder)
        self._key = key or (lambda r: (r["image"], tuple(r.get("block") or ())))

    def _own_file(self) -> Path:
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
        return self.folder / f"units-{host}-{os.getpid()}-{_TOKEN}.jsonl"

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line (one ``write`` on an ``O_APPEND`` descriptor, then
        ``fsync``)."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        with _LOCK:
            fd = os.open(self._own_file(), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # never glue a record onto a torn one
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        """The log files, the compacted one first."""
        found = sorted(self.folder.glob("units-*.jsonl")) if self.folder.is_dir() else []
        whole = self.folder / "units.jsonl"
        return ([whole] if whole.is_file() else []) + found

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            with open(path, "rb") as fh:
                for raw in fh:
                    try:
                        rec = json.loads(raw)
                    except ValueError:  # a line cut by a kill: that unit did not finish
                        continue
                    if isinstance(rec, dict):
                        yield rec

    def read(self) -> dict[Hashable, dict[str, Any]]:
        """The latest record of every unit, by key."""
        return {self._key(r): r for r in self}

    def compact(self) -> Path:
        """Fold every log into ``units.jsonl`` (atomically; one line per unit), then remove the
        per-process files it replaced."""
        from .files import atomic_write

        old = [p for p in self.files() if p.name != "units.jsonl"]
        records = self.read()
        path = self.folder / "units.jsonl"

        def write(tmp: str) -> None:
            with open(tmp, "w") as fh:
                for rec in records.values():
                    fh.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
        for p in old:
            p.unlink(missing_ok=True)
        return path
