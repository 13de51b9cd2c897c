"""Running one function over many items: one Dask task each on a client, else a local pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

__all__ = ["map_tasks"]


def map_tasks(
    fn: Callable,
    items: Iterable,
    *,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> list:
    """``[fn(item, **kwargs) for item in items]`` in completion order.

    With a ``client`` every item is one task (``pure=False``); otherwise a thread pool of
    ``threads`` (default: up to 4) runs them, or a plain loop for ``threads=1``. The first error
    cancels what has not started and is raised.
    """
    items = list(items)
    results = []
    if client is not None:
        from distributed import as_completed as dist_completed

        futures = client.map(fn, items, pure=False, **kwargs)
        try:
            for fut in dist_completed(futures):
                results.append(fut.result())
                if progress:
                    progress(1)
        except BaseException:
            client.cancel(futures)
            raise
        return results
    n = threads or min(4, os.cpu_count() or 1)
    if n == 1:
        for item in items:
            results.append(fn(item, **kwargs))
            if progress:
                progress(1)
        return results
    with ThreadPoolExecutor(max_workers=n) as pool:
        futs = [pool.submit(fn, item, **kwargs) for item in items]
        try:
            for fut in as_completed(futs):
                results.append(fut.result())
                if progress:
                    progress(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
