"""Shared pieces of the CLI: cluster options, config loading, error reporting, progress."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

__all__ = [
    "CLIError",
    "add_cluster_args",
    "add_config_arg",
    "client_from_args",
    "say",
]


class CLIError(Exception):
    """An error reported to the user as one line, with a non-zero exit code."""


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="run configuration (JSON, see `scaleseg config export`)"
    )


class _ClusterAction(argparse.Action):
    """``--cluster`` once: a profile, recipe or address; again: site files over the recipe
    (``--cluster deploy/slurm/jobqueue.yaml --cluster site.yaml``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*(current if isinstance(current, list) else []), values])


def add_cluster_args(parser: argparse.ArgumentParser, *, default_local: bool) -> None:
    g = parser.add_argument_group("cluster")
    g.add_argument(
        "--cluster",
        metavar="PROFILE",
        action=_ClusterAction,
        default=None,
        help="cluster profile: local, local-cuda, slurm, kubernetes, or a recipe file "
        "(deploy/slurm/jobqueue.yaml); repeat it to lay site files over a recipe, later "
        "values winning (--cluster deploy/slurm/jobqueue.yaml --cluster site.yaml); {}".format(
            "default: scaleseg.cluster.profile of the dask config ('local' unless set, e.g. "
            "DASK_SCALESEG__CLUSTER__PROFILE=local-cuda)"
            if default_local
            else "default: run in this process"
        ),
    )
    parser.set_defaults(cluster_by_default=default_local)
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="connect to a running scheduler: tcp://host:8786, tls://host:8786 (certificates "
        "from distributed.comm.tls in the dask config) or a scheduler file (*.json)",
    )
    g.add_argument(
        "--workers", type=int, metavar="N", help="workers (local profiles; a fixed size for slurm)"
    )
    g.add_argument(
        "--performance-report", metavar="FILE", help="write Dask's HTML performance report here"
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (in-process CLI calls
    from tests or notebooks replace it between commands)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _unit_logger() -> None:
    """The unit lines on stderr (``scaleseg.units``), set up once per process: the summaries
    at INFO, every unit too with ``--verbose`` (the level follows the ``scaleseg`` logger)."""
    log = logging.getLogger("scaleseg.units")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
        log.propagate = False


class _LazyClient:
    """A Dask client started on first use: a run refused by its checks, or one that finds its
    work done, never starts a cluster. Attribute access goes to the real ``Client``."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack):
        self._args, self._stack, self._client = args, stack, None

    def _get(self):
        if self._client is None:
            self._client = self._stack.enter_context(_session(self._args))
        return self._client

    def __getattr__(self, name: str):
        return getattr(self._get(), name)


def _target(args: argparse.Namespace):
    """``--scheduler``, else ``--cluster``, else (train, predict) the configured profile."""
    if args.scheduler or args.cluster:
        return args.scheduler or args.cluster
    if getattr(args, "cluster_by_default", False):
        from ..cluster import get_setting

        return str(get_setting("cluster.profile", "local"))
    return None


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Any]:
    from ..cluster import cluster_session, dashboard_link
    from ..cluster._observe import watch_units

    target = _target(args)
    kwargs = {"n_workers": args.workers} if args.workers else {}  # refused for a scheduler
    with cluster_session(target, **kwargs) as client:
        n = len(client.scheduler_info().get("workers", {}))
        name = " + ".join(target) if isinstance(target, list) else target
        say(f"Dask cluster: {name} with {n} workers; dashboard: {dashboard_link(client) or 'none'}")
        _unit_logger()
        summary = watch_units(client)
        try:
            report = getattr(args, "performance_report", None)
            if not report:
                yield client
                return
            from distributed import performance_report

            with performance_report(filename=report):
                yield client
            say(f"performance report: {report}")
        finally:
            if summary is not None:
                summary.flush()


@contextmanager
def client_from_args(args: argparse.Namespace) -> Iterator[Any]:
    """Yield a client for ``--scheduler`` / ``--cluster`` (or ``None``), started on first use;
    the dashboard link is printed when it starts.

    While the client is open, finished tasks are logged on the ``scaleseg.units`` logger: a
    summary line per stage every 30 s and at the end; every unit (key, image / block or fold,
    worker, seconds) with ``--verbose``, every failed unit always.
    """
    if _target(args) is None:
        yield None
        return
    with ExitStack() as stack:
        yield _LazyClient(args, stack)
