"""A lock in a run's output folder: one run per output at a time, dead holders recognised.

The lock is the file ``<output>/.scaleseg-lock``, created with ``O_EXCL`` and holding the
holder's host, pid, start time and a random token. While the run lives, a daemon thread
touches it every ``heartbeat`` seconds. A second run on the same output finds the file and
refuses, naming host and pid -- unless the lock is *stale*: its holder is a process of this
host that no longer exists, or its last heartbeat is older than ``stale_after`` seconds (a
process on another host that died, e.g. a cancelled batch job). A stale lock is taken over
with a message. Heartbeats use the file's modification time, which the (shared) file system
sets, so clocks of different hosts need not agree closely.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".scaleseg-lock"
log = logging.getLogger("scaleseg.runs")


class RunLockedError(RuntimeError):
    """Another live run holds the output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Hold ``<folder>/.scaleseg-lock`` for the duration of a ``with`` block.

    Parameters
    ----------
    folder : path
        The run's output folder (created if missing).
    heartbeat : float
        Seconds between touches of the lock file.
    stale_after : float
        A lock not touched for this long is stale (default: 6 heartbeats).
    what : str
        How messages name the run (``"scaleseg predict"``).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        heartbeat: float = 10.0,
        stale_after: float | None = None,
        what: str = "scaleseg",
    ):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.heartbeat = float(heartbeat)
        self.stale_after = float(stale_after if stale_after is not None else 6 * heartbeat)
        self.what = what
        self.token = uuid.uuid4().hex
        self.taken_over: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state of an existing lock ------------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """The current holder's record (``None`` when unlocked), with ``age`` in seconds since
        its last heartbeat."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:  # being written this very moment, or garbage
            info = {}
        return {**info, "age": max(0.0, age)}

    def is_stale(self, info: dict[str, Any]) -> bool:
        """Whether the holder described by ``info`` is dead."""
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return True
        return info["age"] > self.stale_after

    # -- acquire / release --------------------------------------------------------------------
    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "token": self.token,
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:  # released in between
                    continue
                if not self.is_stale(info):
                    raise RunLockedError(
                        f"{self.folder} is in use by another run (host {info.get('host', '?')}, "
                        f"pid {info.get('pid', '?')}, started {info.get('started', '?')}, last "
                        f"heartbeat {info['age']:.0f} s ago); wait for it to finish or choose "
                        f"another output folder"
                    ) from None
                self.taken_over = info
                log.warning(
                    "%s: taking over a stale lock of %s (host %s, pid %s, last heartbeat %.0f s "
                    "ago): that run is no longer alive",
                    self.folder,
                    self.what,
                    info.get("host", "?"),
                    info.get("pid", "?"),
                    info["age"],
                )
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            break
        else:
            raise RunLockedError(f"{self.folder}: could not take the run lock {self.path}")
        self._thread = threading.Thread(target=self._beat, name="scaleseg-lock", daemon=True)
        self._thread.start()
        return self

    def _owned(self) -> bool:
        try:
            return json.loads(self.path.read_text()).get("token") == self.token
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # the folder was replaced as a whole: re-create ours
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text(
                        json.dumps(
                            {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}
                        )  # fmt: skip
                    )
                except OSError:
                    pass
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._owned():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
