"""Run records: the ``run.json`` written beside every command's outputs.

A record holds what the reporting checklist of Laine et al. (Nat. Methods 2021) asks for: the
configuration, versions of Python and every core dependency, the git commit when available, the
host, start / end times, inputs with cheap content hashes, outputs, model checksums and timings.

Usage::

    with RunRecord("convert", out_dir, config=cfg) as rec:
        rec.add_input(path)
        ...
        rec.add_output(out_path)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RunRecord", "package_versions", "git_commit", "cheap_hash", "CORE_PACKAGES"]

CORE_PACKAGES = (
    "scaleseg",
    "numpy",
    "dask",
    "distributed",
    "dask-cuda",
    "zarr",
    "ome-zarr",
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "cellpose",
    "SimpleITK",
    "albumentations",
    "xarray",
    "pandas",
    "scikit-image",
    "pydantic",
)

_HASH_HEAD = 1 << 20  # bytes read from the start (and the end) of a file for a cheap hash


def package_versions(names: tuple[str, ...] = CORE_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` for packages that are not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the scaleseg source tree (``None`` outside a checkout)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    commit = res.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def cheap_hash(path: str | Path) -> dict[str, Any]:
    """A cheap content fingerprint of a file or directory tree.

    Files: size plus BLAKE2 of the first and last MiB. Directories (zarr stores): file count,
    total size and a hash over relative names, sizes and the metadata files' contents, so a
    changed chunk count, a changed size or changed metadata changes the hash without reading
    every chunk.
    """
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    if p.is_file():
        size = p.stat().st_size
        with p.open("rb") as fh:
            h.update(fh.read(_HASH_HEAD))
            if size > 2 * _HASH_HEAD:
                fh.seek(-_HASH_HEAD, os.SEEK_END)
                h.update(fh.read(_HASH_HEAD))
        h.update(str(size).encode())
        return {"kind": "file", "bytes": size, "blake2b": h.hexdigest()}
    if p.is_dir():
        n_files = 0
        total = 0
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix()
            size = f.stat().st_size
            n_files += 1
            total += size
            h.update(f"{rel}:{size};".encode())
            if f.name in {"zarr.json", ".zattrs", ".zarray", ".zgroup"}:
                h.update(f.read_bytes())
        return {"kind": "dir", "files": n_files, "bytes": total, "blake2b": h.hexdigest()}
    return {"kind": "url", "blake2b": None}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunRecord:
    """Collects what a command did and writes it as ``run.json`` in ``out_dir``.

    Parameters
    ----------
    command : str
        The command name (``"convert"``, ``"predict"``, ...).
    out_dir : path
        Where the record goes (created if needed).
    config : pydantic model or dict, optional
        The validated configuration used.
    argv : list of str, optional
        The command line, when run from the CLI.
    filename : str
        ``run.json`` by default; a stage that adds to another command's output folder uses its
        own name (``run_instances.json``) so the first record is kept.
    """

    def __init__(
        self,
        command: str,
        out_dir: str | Path,
        *,
        config: Any = None,
        argv=None,
        filename: str = "run.json",
        keep_previous: bool = False,
    ):
        self.command = command
        self.out_dir = Path(out_dir)
        self.filename = filename
        self.data: dict[str, Any] = {
            "command": command,
            "argv": list(argv) if argv is not None else None,
            "config": _jsonable(config),
            "status": "running",
            "started": _now(),
            "finished": None,
            "seconds": None,
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python_executable": sys.executable,
            },
            "versions": package_versions(),
            "git_commit": git_commit(),
            "inputs": {},
            "outputs": {},
            "models": {},
            "timings": {},
            "summary": {},
            "error": None,
            "previous": _previous_runs(Path(out_dir) / filename) if keep_previous else [],
        }
        self._t0 = time.perf_counter()
        self._existed = self.out_dir.exists()

    # -- collection -------------------------------------------------------------------------
    def set_config(self, config: Any) -> None:
        """Record the effective configuration (after command-line flags were applied)."""
        self.data["config"] = _jsonable(config)

    def add_input(self, path: str | Path, *, name: str | None = None) -> None:
        key = name or str(path)
        self.data["inputs"][key] = {"path": str(path), **cheap_hash(path)}

    def add_output(self, path: str | Path, *, name: str | None = None) -> None:
        key = name or str(path)
        self.data["outputs"][key] = str(path)

    def add_model(self, name: str, checksum: str) -> None:
        self.data["models"][name] = checksum

    def add_timing(self, name: str, seconds: float) -> None:
        self.data["timings"][name] = round(float(seconds), 4)

    def set_summary(self, **values: Any) -> None:
        self.data["summary"].update(_jsonable(values))

    # -- writing ----------------------------------------------------------------------------
    def write(self) -> Path:
        from .files import atomic_write_json

        return atomic_write_json(self.out_dir / self.filename, self.data)

    def finish(self, status: str = "ok", error: BaseException | None = None) -> Path:
        self.data["status"] = status
        self.data["finished"] = _now()
        self.data["seconds"] = round(time.perf_counter() - self._t0, 3)
        if error is not None:
            self.data["error"] = f"{type(error).__name__}: {error}"
        return self.write()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish("ok")
        elif self.out_dir.exists() and not self._existed:
            # record a failure only in a folder this run created: never create a folder that
            # could look like a finished result, never touch an earlier run's record
            self.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc)


#: What a record keeps of each earlier run on the same output (a resumed run).
_PREVIOUS_KEYS = ("argv", "status", "started", "finished", "seconds", "summary", "error")


def _previous_runs(path: Path) -> list[dict[str, Any]]:
    """The earlier runs recorded in ``path``: its own run first, then those it listed."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(old, dict):
        return []
    return [{k: old.get(k) for k in _PREVIOUS_KEYS}, *old.get("previous", [])]


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return json.loads(json.dumps(obj, default=str))
