"""Pieces every stage run uses: progress bars and execution settings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["absolute", "progress_bar", "torch_threads_setting"]


@contextmanager
def progress_bar(
    total: int | None, desc: str, *, enabled: bool = True, unit: str = "unit"
) -> Iterator[Any]:
    """A tqdm bar on stderr (``update(n)``); a silent stand-in when not ``enabled``."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True
    )
    try:
        yield bar
    finally:
        bar.close()


def torch_threads_setting() -> int | None:
    """Torch threads per task (``scaleseg.cluster.torch-threads`` in the dask config)."""
    from ..cluster import get_setting

    return get_setting("cluster.torch-threads", 1)


def absolute(path) -> str | None:
    """A local path made absolute (URLs unchanged; ``None`` stays ``None``), for run specs."""
    if path is None:
        return None
    s = str(path)
    return s if "://" in s else str(Path(s).expanduser().resolve())
