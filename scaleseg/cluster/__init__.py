"""Cluster factory: a Dask ``Client`` from a profile (local, local-cuda, slurm, kubernetes), a
recipe file from ``deploy/``, or a scheduler address.

Package defaults live in ``scaleseg.yaml`` and are loaded into ``dask.config`` under the
``scaleseg`` key, so ``DASK_SCALESEG__CLUSTER__PROFILE=...`` style variables work. Nothing here
writes the user's dask configuration.
"""

from ._client import (
    PROFILES,
    client_has_gpus,
    cluster_session,
    dashboard_link,
    get_client,
    make_cluster,
)
from ._config import apply_recipe, check_cluster_settings, get_setting, load_defaults, load_recipe
from ._kube import load_kubernetes_spec, validate_dask_resource, worker_groups
from ._observe import watch_epochs

__all__ = [
    "PROFILES",
    "apply_recipe",
    "check_cluster_settings",
    "client_has_gpus",
    "cluster_session",
    "dashboard_link",
    "get_client",
    "get_setting",
    "load_defaults",
    "load_kubernetes_spec",
    "load_recipe",
    "make_cluster",
    "validate_dask_resource",
    "watch_epochs",
    "worker_groups",
]
