"""Files that appear complete or not at all: the one atomic-write helper of scaleseg.

Every file scaleseg writes outside a zarr store goes through :func:`atomic_write` (or its text
and JSON shorthands): the content is written to a hidden temporary sibling, flushed and
``os.replace``-d onto the target, so a reader -- or a run resumed after a crash -- sees the old
file or the new one, never half of one. Folders that must appear whole use
:func:`atomic_directory`. Only the standard library is imported here (kernels and workers use
it without pulling in dask or zarr).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "is_remote",
    "remove_location",
]


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(url: str | os.PathLike) -> bool:
    """Whether ``url`` is an fsspec URL other than ``file://`` (``s3://``, ``gs://``, ...)."""
    s = str(url)
    return bool(_SCHEME.match(s)) and not s.startswith("file://")


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], Any], *, fsync: bool = False
) -> Path:
    """Call ``write(tmp_path)`` on a temporary sibling of ``path``, then rename it onto ``path``.

    Parameters
    ----------
    path : path
        The file to create or replace (its folder is created).
    write : callable
        Writes the complete content to the path it is given.
    fsync : bool
        Flush the temporary file to disk before the rename (weights, whose loss would cost
        hours).

    Returns
    -------
    Path
        ``path``. On any error the temporary file is removed and ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def remove_location(url: str | os.PathLike) -> None:
    """Delete whatever is at ``url`` (only ever called behind a checked ``overwrite``)."""
    if is_remote(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(str(url))
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    p = Path(str(url).removeprefix("file://"))
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def atomic_directory(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``out`` to fill; it replaces ``out`` only on success.

    An existing ``out`` is refused unless ``overwrite`` (it is then replaced only once the new
    content is complete); on any error the temporary folder is removed and ``out`` is untouched.
    Callers that own a run (:mod:`scaleseg.runs`) have checked that ``out`` may be replaced.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        remove_location(tmp)
        raise
    if out.exists():
        # move the old folder aside first: at no moment is there neither the old nor the new
        old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        os.replace(tmp, out)
        remove_location(old)
    else:
        os.replace(tmp, out)
