"""Rules that keep a user's files safe: where a run may write and what it may replace."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..files import is_remote
from ._lock import LOCK_FILE
from ._spec import SPEC_FILE

__all__ = [
    "RECORD_FILE",
    "OutputError",
    "check_output",
    "check_paths",
    "folder_entries",
    "foreign_folder_error",
    "scaleseg_record",
]

RECORD_FILE = "run.json"
#: Entries of an output folder that do not make it "hold something" (our own lock).
_IGNORED = {LOCK_FILE}


class OutputError(ValueError):
    """An output folder that must not be used as asked; the message says why and what to do."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(str(path).removeprefix("file://")).expanduser().resolve()


def check_paths(output: str | os.PathLike, inputs: Mapping[str, Any]) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (role -> path).

    Remote URLs are compared as text. ``None`` inputs are skipped.

    Raises
    ------
    OutputError
        Naming the output, the input, its role and the relation.
    """
    if is_remote(output):
        out_s = str(output).rstrip("/")
        for role, path in inputs.items():
            if path is None:
                continue
            p = str(path).rstrip("/")
            if out_s == p or out_s.startswith(p + "/") or p.startswith(out_s + "/"):
                raise OutputError(f"{output}: the output overlaps the {role} {path}")
        return
    out = _resolved(output)
    for role, path in inputs.items():
        if path is None or is_remote(path):
            continue
        p = _resolved(path)
        if out == p:
            relation = "is"
        elif p in out.parents:
            relation = "lies inside"
        elif out in p.parents:
            relation = "contains"
        else:
            continue
        raise OutputError(
            f"{output}: the output {relation} the {role} {path}; scaleseg never writes into or "
            "replaces its inputs -- choose another output folder"
        )


def folder_entries(folder: Path) -> list[str]:
    """Names in ``folder`` other than scaleseg's lock (sorted)."""
    try:
        return sorted(e.name for e in folder.iterdir() if e.name not in _IGNORED)
    except FileNotFoundError:
        return []


def scaleseg_record(folder: Path, record_name: str = RECORD_FILE) -> dict[str, Any] | None:
    """The run record of a folder scaleseg wrote (``None`` for any other folder).

    A folder counts as scaleseg's when it holds a run spec or a ``run.json`` whose ``command``
    is a scaleseg stage.
    """
    for name in (record_name, RECORD_FILE):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("command"), str):
                return data
    if (folder / SPEC_FILE).is_file():
        return {"command": None}
    return None


def check_output(
    output, stage: str, inputs: Mapping[str, Any], *, record_name: str = RECORD_FILE
) -> None:
    """The cheap checks of an output folder, run before any input is read: not an input, not
    a file, not a non-empty folder scaleseg did not write (see :class:`~scaleseg.runs.StageRun`)."""
    check_paths(output, inputs)
    if is_remote(output):
        return
    out = Path(str(output).removeprefix("file://"))
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file, not a folder")
    entries = folder_entries(out)
    if entries and scaleseg_record(out, record_name) is None:
        raise foreign_folder_error(out, entries, stage)


def foreign_folder_error(folder: Path, entries: list[str], stage: str) -> OutputError:
    shown = ", ".join(entries[:8]) + (f", ... ({len(entries)} entries)" if len(entries) > 8 else "")
    return OutputError(
        f"{folder} is not empty and was not written by scaleseg (it holds {shown}); scaleseg "
        f"{stage} refuses to write there or replace it, even with --overwrite -- choose a new "
        "or empty folder"
    )
