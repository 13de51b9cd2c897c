"""Outputs that appear complete or not at all: write into a hidden sibling, rename at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._write import remove_location

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; it replaces ``out`` only on success.

    An existing ``out`` is refused unless ``overwrite`` (and then replaced only once the new
    content is complete); on any error the temporary folder is removed and ``out`` is untouched.
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
        remove_location(out)
    os.replace(tmp, out)
