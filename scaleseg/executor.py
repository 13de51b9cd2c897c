"""The one executor of scaleseg: typed work units mapped over a Dask ``Client`` or in-process.

Every stage runs its units through :func:`map_units`, so every stage has the same rules:

* **Where**: with a ``client`` one task per unit (``pure=False``, a readable unique key
  ``<stage>-<unit>-<6 hex>`` that the dashboard and the per-unit log lines show); without one,
  in this process (a plain loop, or a thread pool for I/O-bound units).
* **Resources**: ``resources="gpu"`` asks ``GPU=1`` per task when the cluster's workers advertise
  GPUs (a CPU cluster runs the identical path); a dict is passed on as it is.
* **Retries**: a failed unit runs again up to ``retries`` times (on a client: Dask's task
  retries; in-process: the same count).
* **Bounded**: on a client at most ``max(256, 16 x worker threads)`` units are in flight;
  more are submitted, in batches, as they finish, so the client's and the scheduler's state do
  not grow with the number of units (10^5 images are as many futures as 300 at a time).
* **Errors**: ``on_error="stop"`` cancels what has not run and raises the first error;
  ``"collect"`` runs everything and returns the failures (one bad image fails alone).
* **Events**: every finished unit is one JSON line on the ``scaleseg.units`` logger (on a client
  the scheduler plugin of :mod:`scaleseg.cluster._observe` reports it; in-process this module
  does).

Also here: :func:`current_worker` (the one "am I inside a Dask worker" check).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MapResult",
    "UnitFailure",
    "current_worker",
    "map_units",
    "parse_unit_key",
    "unit_key",
]

log = logging.getLogger("scaleseg.units")

IN_FLIGHT_PER_THREAD = 16
"""Units submitted ahead per worker thread (:func:`map_units` on a client)."""
MIN_IN_FLIGHT = 256
"""Units in flight at least, however small the cluster."""


def current_worker() -> Any | None:
    """The Dask worker running this code, or ``None`` outside a worker task."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None


@dataclass(frozen=True)
class UnitFailure:
    """A unit that failed after its retries."""

    index: int
    key: str
    error: str
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass
class MapResult:
    """Results in the order of the units (``None`` where a unit failed) and the failures."""

    results: list[Any]
    failures: list[UnitFailure]

    @property
    def ok(self) -> bool:
        return not self.failures


def unit_key(stage: str, name: str) -> str:
    """A unique task key ``<stage>-<name>-<6 hex>`` (``name`` without characters Dask splits on)."""
    safe = str(name).replace("(", "_").replace(")", "_").replace(",", "_").replace("'", "_")
    return f"{stage}-{safe}-{uuid.uuid4().hex[:6]}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_PREDICT = re.compile(r"^predict-(?P<image>.+)-(?P<by>\d+)-(?P<bx>\d+)-[0-9a-f]{6}$")
_TRAIN = re.compile(r"^train-fold_(?P<fold>\d+)-")
_ANY = re.compile(r"^(?P<stage>[a-z_]+)-(?P<unit>.+)-[0-9a-f]{6}$")


def parse_unit_key(key: str) -> dict[str, Any]:
    """The unit a task key of :func:`unit_key` names: ``{"image", "block"}`` (predict),
    ``{"fold"}`` (train), ``{"stage", "unit"}`` (others) or ``{}`` (not a unit's key)."""
    m = _PREDICT.match(key)
    if m:
        return {"image": m["image"], "block": [int(m["by"]), int(m["bx"])]}
    m = _TRAIN.match(key)
    if m:
        return {"fold": int(m["fold"])}
    m = _ANY.match(key)
    if m:
        return {"stage": m["stage"], "unit": m["unit"]}
    return {}


def _log_local(key: str, status: str, seconds: float) -> None:
    line = {"event": "unit", **parse_unit_key(key), "key": key, "status": status,
            "worker": "local", "seconds": round(seconds, 3)}  # fmt: skip
    # in-process units are also counted by the progress bars: their lines are debug messages,
    # failures warnings (a cluster run logs every unit through the scheduler plugin)
    log.log(logging.DEBUG if status == "ok" else logging.WARNING, json.dumps(line))


def _resources(client, resources) -> dict[str, float] | None:
    if resources == "gpu":
        from .cluster import client_has_gpus

        return {"GPU": 1} if client_has_gpus(client) else None
    return resources


def map_units(
    fn: Callable[..., Any],
    units: Iterable[Any],
    *,
    stage: str,
    names: Sequence[str] | Callable[[Any], str] | None = None,
    client: Any = None,
    resources: Literal["gpu"] | dict[str, float] | None = None,
    retries: int = 0,
    on_error: Literal["stop", "collect"] = "stop",
    threads: int = 1,
    progress: Callable[[int], Any] | None = None,
    **kwargs: Any,
) -> MapResult:
    """Run ``fn(unit, **kwargs)`` for every unit (see the module notes for the rules).

    Parameters
    ----------
    fn : callable
        A module-level function (picklable); its ``kwargs`` must be picklable too.
    units : iterable
        Typed work units (frozen dataclasses or other picklable values).
    stage : str
        First part of every task key (``"predict"``, ``"train"``, ...).
    names : sequence of str or callable, optional
        Unit names for the keys (default: the unit's index).
    client : distributed.Client, optional
    resources : "gpu", dict or None
    retries : int
    on_error : {"stop", "collect"}
    threads : int
        In-process only: more than 1 runs units in a thread pool (I/O-bound units).
    progress : callable, optional
        Called as ``progress(1)`` after every finished unit and ``progress(1, failed=1)``
        after every failed one (:class:`scaleseg.stages._common.StageBar` takes both).

    Returns
    -------
    MapResult
    """
    units = list(units)
    if callable(names):
        labels = [str(names(u)) for u in units]
    elif names is not None:
        labels = [str(n) for n in names]
    else:
        labels = [str(i) for i in range(len(units))]
    keys = [unit_key(stage, n) for n in labels]
    if on_error not in ("stop", "collect"):
        raise ValueError(f"on_error must be 'stop' or 'collect', got {on_error!r}")
    results: list[Any] = [None] * len(units)
    failures: list[UnitFailure] = []
    if not units:
        return MapResult(results, failures)
    if client is not None:
        _run_on_client(fn, units, keys, client, _resources(client, resources), retries,
                       on_error, progress, results, failures, kwargs)  # fmt: skip
    else:
        _run_here(fn, units, keys, retries, on_error, threads, progress, results, failures, kwargs)
    failures.sort(key=lambda f: f.index)
    return MapResult(results, failures)


def _window(client) -> int:
    """Units in flight at most: enough to keep every worker thread busy with a queue behind it,
    few enough that the client and scheduler state stay bounded whatever the number of units."""
    try:
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    except Exception:  # a scheduler that does not answer: a conservative default
        threads = 8
    return max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * threads)


def _run_on_client(fn, units, keys, client, resources, retries, on_error, progress, results,
                   failures, kwargs) -> None:  # fmt: skip
    from distributed import as_completed

    n = len(units)
    window = _window(client)
    batch = max(1, window // 4)
    live: dict[str, tuple[int, Any]] = {}  # key -> (unit index, future) of the units in flight
    start = 0

    def submit() -> list:
        nonlocal start
        stop = min(n, start + batch)
        futures = client.map(fn, units[start:stop], key=keys[start:stop], pure=False,
                             retries=retries or None, resources=resources, **kwargs)  # fmt: skip
        for i, fut in enumerate(futures, start):
            live[fut.key] = (i, fut)
        start = stop
        return futures

    first: list = []
    while start < n and len(first) < window:
        first += submit()
    pending = as_completed(first)
    try:
        for fut in pending:
            i, _ = live.pop(fut.key)
            if fut.status == "error":
                exc = fut.exception()
                if on_error == "stop":
                    raise exc
                failures.append(UnitFailure(i, keys[i], _describe(exc), exc))
                if progress:
                    progress(1, failed=1)
            else:
                results[i] = fut.result()
                if progress:
                    progress(1)
            fut.release()  # the result is ours now: the cluster may forget the task
            if start < n and len(live) <= window - batch:
                pending.update(submit())
    except BaseException:
        client.cancel([fut for _, fut in live.values()])
        raise


def _attempt(fn, unit, key, retries, kwargs):
    for attempt in range(retries + 1):
        t0 = time.perf_counter()
        try:
            out = fn(unit, **kwargs)
        except Exception:
            _log_local(key, "error", time.perf_counter() - t0)
            if attempt == retries:
                raise
            continue
        _log_local(key, "ok", time.perf_counter() - t0)
        return out
    raise AssertionError("unreachable")


def _run_here(fn, units, keys, retries, on_error, threads, progress, results, failures,
              kwargs) -> None:  # fmt: skip
    def one(i: int) -> None:
        try:
            results[i] = _attempt(fn, units[i], keys[i], retries, kwargs)
        except Exception as exc:
            if on_error == "stop":
                raise
            failures.append(UnitFailure(i, keys[i], _describe(exc), exc))
            if progress:
                progress(1, failed=1)
        else:
            if progress:
                progress(1)

    n = max(1, min(int(threads or 1), len(units), os.cpu_count() or 1))
    if n == 1:
        for i in range(len(units)):
            one(i)
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        futs = [pool.submit(one, i) for i in range(len(units))]
        try:
            for f in futs:
                f.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
