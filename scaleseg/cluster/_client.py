"""The one place where clusters are created: a ``Client`` from a profile name or an address."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._config import get_setting

__all__ = ["PROFILES", "cluster_session", "get_client", "dashboard_link", "client_has_gpus"]

PROFILES = ("local", "local-cuda")

_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://|^[\w.-]+:\d+$")


def _free_dashboard(address: str) -> str:
    """Use ``address`` when its port is free, else ``:0`` (a random free port)."""
    port = int(address.rsplit(":", 1)[-1] or 0)
    if port == 0:
        return address
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return ":0"
    return address


def _local(n_workers, threads_per_worker, memory_limit, dashboard_address, **kw):
    from distributed import LocalCluster

    n_workers = n_workers or get_setting("cluster.n-workers") or os.cpu_count() or 1
    return LocalCluster(
        n_workers=int(n_workers),
        threads_per_worker=int(threads_per_worker or get_setting("cluster.threads-per-worker", 1)),
        processes=True,
        memory_limit=memory_limit or get_setting("cluster.memory-limit", "auto"),
        dashboard_address=_free_dashboard(
            dashboard_address or get_setting("cluster.dashboard-address", ":8787")
        ),
        **kw,
    )


def _local_cuda(n_workers, threads_per_worker, memory_limit, dashboard_address, **kw):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:  # dask-cuda is an optional extra
        raise RuntimeError(
            "profile 'local-cuda' needs dask-cuda: pip install 'scaleseg[cuda]' "
            f"(import failed: {exc})"
        ) from None
    try:
        return LocalCUDACluster(
            n_workers=n_workers or get_setting("cluster.n-workers"),
            threads_per_worker=int(threads_per_worker or 1),
            dashboard_address=_free_dashboard(
                dashboard_address or get_setting("cluster.dashboard-address", ":8787")
            ),
            resources={"GPU": 1},
            **kw,
        )
    except Exception as exc:  # NVML missing, no device, driver mismatch
        raise RuntimeError(
            f"profile 'local-cuda': no usable GPU ({type(exc).__name__}: {exc})"
        ) from None


def get_client(
    profile_or_address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    dashboard_address: str | None = None,
    **cluster_kwargs: Any,
):
    """Build a :class:`distributed.Client` from a profile or connect to a scheduler.

    Parameters
    ----------
    profile_or_address : str, optional
        ``"local"`` (LocalCluster with one single-threaded worker process per core; the
        default), ``"local-cuda"`` (dask-cuda, one worker per GPU, each with a ``GPU``
        resource), or a scheduler address such as ``tcp://host:8786``. ``None`` reads
        ``scaleseg.cluster.profile`` from dask.config.

    Returns
    -------
    distributed.Client
        For a profile, ``client.cluster`` is the cluster created here; close it after the
        client (or use :func:`cluster_session`).
    """
    from distributed import Client

    target = profile_or_address or get_setting("cluster.profile", "local")
    if _ADDRESS.match(target):
        return Client(target)
    builders = {"local": _local, "local-cuda": _local_cuda}
    if target not in builders:
        raise ValueError(
            f"unknown cluster profile {target!r}; use one of {', '.join(PROFILES)} "
            "or a scheduler address (tcp://host:port)"
        )
    cluster = builders[target](
        n_workers, threads_per_worker, memory_limit, dashboard_address, **cluster_kwargs
    )
    return Client(cluster)


@contextmanager
def cluster_session(profile_or_address: str | None = None, **kwargs: Any) -> Iterator[Any]:
    """``with cluster_session("local") as client:`` -- closes the client and any cluster it made."""
    client = get_client(profile_or_address, **kwargs)
    try:
        yield client
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()


def dashboard_link(client) -> str:
    """The dashboard URL of ``client`` (empty when the scheduler runs none)."""
    try:
        return client.dashboard_link or ""
    except Exception:  # the scheduler has no dashboard
        return ""


def client_has_gpus(client) -> bool:
    """Whether any worker of ``client`` advertises a ``GPU`` resource."""
    info = client.scheduler_info()
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in info.get("workers", {}).values())
