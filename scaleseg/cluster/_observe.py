"""One structured log line per finished unit of work, written by the driver.

A small scheduler plugin publishes every finished (or failed) task -- key, worker, compute
seconds -- as an event on the topic :data:`TOPIC`; the driver subscribes and logs each one as a
JSON line on the ``scaleseg.units`` logger. Keys that name a unit (``predict-<image>-<by>-<bx>-…``,
``train-fold_<k>-…``) are parsed into image / block / fold fields. Internal tasks of dask
collections (tuple keys) are not logged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging

from distributed.diagnostics.plugin import SchedulerPlugin

from ..executor import parse_unit_key

__all__ = ["EPOCH_TOPIC", "TOPIC", "UnitLogPlugin", "parse_unit_key", "watch_epochs", "watch_units"]

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


def _log_event(client_id: str, event) -> None:
    _, msg = event
    msg = dict(msg)
    clients = msg.pop("clients", None)
    if clients and client_id not in clients:  # another client's task on a shared scheduler
        return
    line = {"event": "unit", **parse_unit_key(msg["key"]), **msg}
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


def watch_units(client) -> bool:
    """Log one JSON line per finished task of ``client``; False when the scheduler cannot load
    the plugin (scaleseg not installed there). The plugin is registered once per scheduler."""
    try:
        client.register_plugin(UnitLogPlugin(), name=UnitLogPlugin.name)
    except Exception as exc:  # e.g. a remote scheduler without scaleseg installed
        log.warning(
            "per-unit log lines unavailable on this scheduler (%s: %s)", type(exc).__name__, exc
        )
        return False
    client.subscribe_topic(TOPIC, functools.partial(_log_event, client.id))
    return True
