"""Structured log lines of the finished units of work, written by the driver.

A small scheduler plugin publishes every finished (or failed) task -- key, worker, compute
seconds -- as an event on the topic :data:`TOPIC`; the driver subscribes and logs each one as a
JSON line on the ``scaleseg.units`` logger (DEBUG; failures at WARNING), with a summary line per
stage at INFO every 30 s (:class:`UnitSummary`). Keys that name a unit (``predict-<image>-<by>-<bx>-…``,
``train-fold_<k>-…``) are parsed into image / block / fold fields. Internal tasks of dask
collections (tuple keys) are not logged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from ..executor import parse_unit_key

__all__ = [
    "EPOCH_TOPIC",
    "TOPIC",
    "UnitLogPlugin",
    "UnitSummary",
    "parse_unit_key",
    "watch_epochs",
    "watch_units",
]

TOPIC = "scaleseg-unit"
#: Topic of the per-epoch records that training folds publish from their workers.
EPOCH_TOPIC = "scaleseg-epoch"
log = logging.getLogger("scaleseg.units")


class UnitLogPlugin(SchedulerPlugin):
    """Publish ``{key, status, worker, seconds}`` for every task that leaves ``processing``."""

    name = "scaleseg-unit-log"
    idempotent = True  # registered once per scheduler, whichever client comes first

    def __init__(self) -> None:
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if start != "processing" or finish not in ("memory", "erred") or not isinstance(key, str):
            return
        if self.scheduler is None:
            return
        ts = self.scheduler.tasks.get(key)
        clients = sorted(cs.client_key for cs in ts.who_wants) if ts is not None else []
        stops = kwargs.get("startstops") or ()
        seconds = sum(s["stop"] - s["start"] for s in stops if s.get("action") == "compute")
        self.scheduler.log_event(
            TOPIC,
            {
                "key": key,
                "status": "ok" if finish == "memory" else "error",
                "worker": kwargs.get("worker"),
                "seconds": round(float(seconds), 3),
                "clients": clients,
            },
        )


class UnitSummary:
    """Receives the unit events of one client: each unit is a DEBUG line (a failed one a
    WARNING), and a summary line per stage -- units finished and failed, units per second,
    mean compute seconds -- goes out at INFO at most every ``every`` seconds and on
    :meth:`flush`. So the log of a run of 10^5 units stays readable; ``--verbose`` shows every
    unit."""

    def __init__(self, client_id: str, every: float = 30.0) -> None:
        self.client_id = client_id
        self.every = every
        self.t0 = self.last = time.monotonic()
        self.stages: dict[str, list[float]] = {}  # stage -> [finished, failed, compute seconds]

    def __call__(self, event) -> None:
        _, msg = event
        msg = dict(msg)
        clients = msg.pop("clients", None)
        if clients and self.client_id not in clients:  # another client's task on a shared scheduler
            return
        failed = msg.get("status") != "ok"
        line = {"event": "unit", **parse_unit_key(msg["key"]), **msg}
        log.log(logging.WARNING if failed else logging.DEBUG, json.dumps(line, sort_keys=False))
        counts = self.stages.setdefault(str(msg["key"]).split("-", 1)[0], [0, 0, 0.0])
        counts[1 if failed else 0] += 1
        counts[2] += float(msg.get("seconds") or 0.0)
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        """Log the summary line of every stage seen so far."""
        self.last = time.monotonic()
        elapsed = max(self.last - self.t0, 1e-9)
        for stage, (ok, bad, seconds) in self.stages.items():
            n = ok + bad
            line = {"event": "units", "stage": stage, "finished": int(ok), "failed": int(bad),
                    "units_per_s": round(n / elapsed, 3),
                    "mean_seconds": round(seconds / max(n, 1), 3)}  # fmt: skip
            log.info(json.dumps(line, sort_keys=False))


def _log_epoch(run: str, event) -> None:
    from ..training._fit import format_epoch

    _, msg = event
    if msg.get("run") != run:  # another training on a shared scheduler
        return
    logging.getLogger("scaleseg.train").info(format_epoch(msg))


@contextlib.contextmanager
def watch_epochs(client, run: str):
    """Log the per-epoch line of every fold of the training writing to ``run`` (its output
    folder) on the ``scaleseg.train`` logger of this process while the block runs."""
    client.subscribe_topic(EPOCH_TOPIC, functools.partial(_log_epoch, run))
    try:
        yield
    finally:
        client.unsubscribe_topic(EPOCH_TOPIC)


def watch_units(client, *, every: float = 30.0) -> UnitSummary | None:
    """Log the finished tasks of ``client`` through a :class:`UnitSummary` (returned; call
    its ``flush()`` at the end); None when the scheduler cannot load the plugin (scaleseg not
    installed there). The plugin is registered once per scheduler."""
    try:
        client.register_plugin(UnitLogPlugin(), name=UnitLogPlugin.name)
    except Exception as exc:  # e.g. a remote scheduler without scaleseg installed
        log.warning(
            "per-unit log lines unavailable on this scheduler (%s: %s)", type(exc).__name__, exc
        )
        return None
    summary = UnitSummary(client.id, every)
    client.subscribe_topic(TOPIC, summary)
    return summary
