"""Shared pieces of the CLI: cluster options, config loading, error reporting, progress."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "CLIError",
    "add_cluster_args",
    "add_config_arg",
    "client_from_args",
    "progress_bar",
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


def add_cluster_args(parser: argparse.ArgumentParser, *, default_local: bool) -> None:
    g = parser.add_argument_group("cluster")
    g.add_argument(
        "--cluster",
        metavar="PROFILE",
        default="local" if default_local else None,
        help="cluster profile: local (default{}) or local-cuda".format(
            "" if default_local else ": run in this process"
        ),
    )
    g.add_argument(
        "--scheduler", metavar="ADDRESS", help="connect to a running scheduler (tcp://host:8786)"
    )
    g.add_argument("--workers", type=int, metavar="N", help="workers for a local profile")
    g.add_argument(
        "--performance-report", metavar="FILE", help="write Dask's HTML performance report here"
    )


@contextmanager
def client_from_args(args: argparse.Namespace) -> Iterator[Any]:
    """Yield a Client for ``--scheduler`` / ``--cluster`` (or ``None``), printing the dashboard."""
    target = args.scheduler or args.cluster
    if target is None:
        yield None
        return
    from ..cluster import cluster_session, dashboard_link

    kwargs = {"n_workers": args.workers} if args.workers and not args.scheduler else {}
    with cluster_session(target, **kwargs) as client:
        n = len(client.scheduler_info().get("workers", {}))
        say(
            f"Dask cluster: {target} with {n} workers; dashboard: {dashboard_link(client) or 'none'}"
        )
        report = getattr(args, "performance_report", None)
        if not report:
            yield client
            return
        from distributed import performance_report

        with performance_report(filename=report):
            yield client
        say(f"performance report: {report}")


@contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None)
    try:
        yield bar
    finally:
        bar.close()
