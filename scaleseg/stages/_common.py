"""Pieces every stage run uses: progress bars and execution settings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StageBar", "absolute", "progress_bar", "torch_threads_setting"]


class StageBar:
    """A stage's tqdm bar: count, rate and ETA from tqdm, the failed units as a postfix.

    ``update(n)`` counts finished units; ``update(n, failed=k)`` counts ``n`` units of which
    ``k`` failed (the executor's contract, :func:`scaleseg.executor.map_units`).
    """

    def __init__(self, bar) -> None:
        self._bar = bar
        self.n = 0  # units counted (finished or failed), also when the bar is not shown
        self.failed = 0

    @property
    def total(self) -> int | None:
        return self._bar.total

    @total.setter
    def total(self, value: int | None) -> None:
        self._bar.total = value
        self._bar.refresh()

    def update(self, n: int = 1, *, failed: int = 0) -> None:
        self.n += n
        if failed:
            self.failed += failed
            self._bar.set_postfix(failed=self.failed, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def progress_bar(
    total: int | None, desc: str, *, enabled: bool = True, unit: str = "unit"
) -> Iterator[StageBar]:
    """A :class:`StageBar` on stderr; a silent stand-in when not ``enabled``."""
    from tqdm.auto import tqdm

    bar = StageBar(
        tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True)
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
