"""The one place where clusters are created: a ``Client`` from a profile name or an address."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from ._config import apply_recipe, check_cluster_settings, get_setting, load_recipe

__all__ = [
    "PROFILES",
    "client_has_gpus",
    "cluster_session",
    "dashboard_link",
    "get_client",
    "make_cluster",
]

PROFILES = ("local", "local-cuda", "slurm", "kubernetes")

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


def _adapt_or_scale(cluster, n_workers, adapt: dict | None, profile: str) -> None:
    """A fixed size when ``n_workers`` is given, else adaptive scaling from the settings."""
    if n_workers:
        cluster.scale(int(n_workers))
        return
    adapt = dict(adapt or {})
    if not adapt:
        raise ValueError(
            f"profile {profile!r}: give --workers N or set scaleseg.cluster.{profile}.adapt "
            "(minimum / maximum workers)"
        )
    kw = {k.replace("-", "_"): v for k, v in adapt.items() if v is not None}
    cluster.adapt(**kw)


def _slurm(n_workers, threads_per_worker, memory_limit, dashboard_address, scale=True, **kw):
    """dask-jobqueue ``SLURMCluster``; job settings come from ``jobqueue.slurm`` in dask.config
    (``deploy/slurm/jobqueue.yaml``: GPUs via ``--gres``, ``--resources GPU=1``, lifetime)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise RuntimeError(
            f"profile 'slurm' needs dask-jobqueue: pip install 'scaleseg[slurm]' (import failed: {exc})"
        ) from None
    if threads_per_worker:
        kw.setdefault("cores", int(threads_per_worker))
    if memory_limit and memory_limit != "auto":
        kw.setdefault("memory", memory_limit)
    if dashboard_address:
        kw.setdefault("scheduler_options", {"dashboard_address": dashboard_address})
    cluster = SLURMCluster(**kw)
    if scale:
        try:
            _check_submittable(cluster)
            _adapt_or_scale(cluster, n_workers, get_setting("cluster.slurm.adapt"), "slurm")
        except BaseException:
            cluster.close()
            raise
    return cluster


def _check_submittable(cluster) -> None:
    """``sbatch --test-only`` of the worker job script before any job is asked for: without it a
    refused submission (no SLURM here, a wrong partition, a job larger than any node) is only
    logged by the adaptive loop, which retries forever while the run waits for workers."""
    import shutil
    import subprocess
    import tempfile

    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise RuntimeError(
            "profile 'slurm': sbatch is not on PATH -- run on a node that can submit jobs "
            "(a login node, or after loading your site's slurm module)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as fh:
        fh.write(cluster.job_script())
        fh.flush()
        try:
            proc = subprocess.run([sbatch, "--test-only", fh.name], capture_output=True,
                                  text=True, timeout=60, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                "profile 'slurm': sbatch --test-only did not answer in 60 s"
            ) from None
    if proc.returncode != 0:
        why = "; ".join(ln.strip() for ln in proc.stderr.splitlines() if ln.strip())[-500:]
        raise RuntimeError(
            f"profile 'slurm': SLURM refuses the worker job ({why or f'exit {proc.returncode}'}); "
            "check queue (partition), account, cores, memory, walltime and "
            "job-extra-directives in the recipe or your site file"
        )


def _kubernetes(n_workers, threads_per_worker, memory_limit, dashboard_address, scale=True, **kw):
    """dask-kubernetes ``KubeCluster`` (Dask operator) from the validated ``DaskCluster`` spec
    named by ``scaleseg.cluster.kubernetes.spec`` (``deploy/kubernetes/cluster.yaml``)."""
    from ._kube import load_kubernetes_spec

    spec_path = get_setting("cluster.kubernetes.spec")
    if not spec_path:
        raise ValueError(
            "profile 'kubernetes': set scaleseg.cluster.kubernetes.spec to a DaskCluster YAML"
        )
    spec = load_kubernetes_spec(spec_path)  # validated before anything is contacted
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:
        raise RuntimeError(
            "profile 'kubernetes' needs dask-kubernetes: pip install 'scaleseg[kubernetes]' "
            f"(import failed: {exc})"
        ) from None
    namespace = get_setting("cluster.kubernetes.namespace")
    if namespace:
        kw.setdefault("namespace", namespace)
    cluster = KubeCluster(custom_cluster_spec=spec, **kw)
    if scale and (n_workers or get_setting("cluster.kubernetes.adapt")):
        _adapt_or_scale(cluster, n_workers, get_setting("cluster.kubernetes.adapt"), "kubernetes")
    return cluster


_BUILDERS = {"local": _local, "local-cuda": _local_cuda, "slurm": _slurm, "kubernetes": _kubernetes}


def _is_recipe(target: str) -> bool:
    return target.endswith((".yaml", ".yml"))


def _single(target: Any) -> Any:
    """A one-element list (``--cluster`` given once) is its element."""
    if isinstance(target, (list, tuple)) and len(target) == 1:
        return str(target[0])
    return target


def _recipe_files(target: Any) -> list[str] | None:
    """The recipe files named by ``target`` (one, or a recipe and its site overrides in a
    list; a one-element list is first made its element by :func:`_single`), or ``None`` for a
    profile name / address."""
    if isinstance(target, (list, tuple)):
        names = [str(t) for t in target]
        if not names or not all(map(_is_recipe, names)):
            raise ValueError(
                f"several cluster targets {names}: only recipe files (*.yaml) can be combined "
                "(the first is the recipe, the later ones override its values)"
            )
        return names
    return [str(target)] if target is not None and _is_recipe(str(target)) else None


def make_cluster(
    profile: str,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    dashboard_address: str | None = None,
    scale: bool = True,
    **cluster_kwargs: Any,
):
    """The cluster object of a profile, without a client.

    ``scale=False`` builds a ``slurm`` / ``kubernetes`` cluster without asking for workers
    (nothing is submitted), e.g. to inspect ``SLURMCluster.job_script()``.
    """
    check_cluster_settings(get_setting("cluster", {}) or {})
    if profile not in _BUILDERS:
        raise ValueError(
            f"unknown cluster profile {profile!r}; use one of {', '.join(PROFILES)}, a recipe "
            "file (deploy/**/*.yaml) or a scheduler address (tcp://host:port)"
        )
    builder = _BUILDERS[profile]
    if profile in ("slurm", "kubernetes"):
        cluster_kwargs["scale"] = scale
    return builder(n_workers, threads_per_worker, memory_limit, dashboard_address, **cluster_kwargs)


def get_client(
    profile_or_address: str | Sequence[str] | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    dashboard_address: str | None = None,
    **cluster_kwargs: Any,
):
    """Build a :class:`distributed.Client` from a profile, a recipe, or a scheduler address.

    Parameters
    ----------
    profile_or_address : str, optional
        ``"local"`` (LocalCluster with one single-threaded worker process per core; the
        default), ``"local-cuda"`` (dask-cuda, one worker per GPU, each with a ``GPU``
        resource), ``"slurm"`` (dask-jobqueue ``SLURMCluster`` configured by
        ``jobqueue.slurm`` in dask.config), ``"kubernetes"`` (dask-kubernetes ``KubeCluster``
        from the spec in ``scaleseg.cluster.kubernetes.spec``), a recipe file such as
        ``deploy/slurm/jobqueue.yaml`` (merged into this process's dask.config -- never
        written to disk -- and its ``scaleseg.cluster.profile`` used), a list of a recipe and
        site files that override its values in order (:func:`load_recipe`), or a scheduler address
        such as ``tcp://host:8786`` / ``tls://host:8786`` (TLS credentials come from
        ``distributed.comm.tls`` in dask.config), or a scheduler file (``*.json``, from
        ``dask scheduler --scheduler-file``). ``None`` reads ``scaleseg.cluster.profile``.

    Returns
    -------
    distributed.Client
        For a profile, ``client.cluster`` is the cluster created here; close it after the
        client (or use :func:`cluster_session`).
    """
    from distributed import Client

    profile_or_address = _single(profile_or_address)
    if recipes := _recipe_files(profile_or_address):
        apply_recipe(load_recipe(*recipes))  # in memory, for this process
        profile_or_address = None
    target = str(profile_or_address or get_setting("cluster.profile", "local"))
    if _ADDRESS.match(target) or target.endswith(".json"):
        asked = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                 "memory_limit": memory_limit, "dashboard_address": dashboard_address,
                 **cluster_kwargs}  # fmt: skip
        if given := sorted(k for k, v in asked.items() if v is not None):
            raise ValueError(
                f"{target} is a running scheduler: {', '.join(given)} size a cluster that "
                "scaleseg starts (a profile or recipe), not one it connects to"
            )
    if _ADDRESS.match(target):
        return Client(target)
    if target.endswith(".json"):  # a scheduler file (dask scheduler --scheduler-file)
        if not os.path.isfile(target):
            raise FileNotFoundError(f"{target}: no such scheduler file")
        return Client(scheduler_file=target)
    cluster = make_cluster(
        target,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        **cluster_kwargs,
    )
    try:
        return Client(cluster)
    except BaseException:
        cluster.close()
        raise


@contextmanager
def cluster_session(
    profile_or_address: str | Sequence[str] | None = None, **kwargs: Any
) -> Iterator[Any]:
    """``with cluster_session("local") as client:`` -- closes the client and any cluster it made.

    A recipe file's settings apply inside the block only.
    """

    target = _single(profile_or_address)
    with ExitStack() as stack:
        if recipes := _recipe_files(target):
            stack.enter_context(apply_recipe(load_recipe(*recipes)))
            target = str(get_setting("cluster.profile"))
        client = get_client(target, **kwargs)
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
