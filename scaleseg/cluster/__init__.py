"""Cluster factory: a Dask ``Client`` from a profile (local, local-cuda) or a scheduler address.

Package defaults live in ``scaleseg.yaml`` and are loaded into ``dask.config`` under the
``scaleseg`` key, so ``DASK_SCALESEG__CLUSTER__PROFILE=...`` style variables work.
"""

from ._client import PROFILES, client_has_gpus, cluster_session, dashboard_link, get_client
from ._config import get_setting, load_defaults

__all__ = [
    "PROFILES",
    "client_has_gpus",
    "cluster_session",
    "dashboard_link",
    "get_client",
    "get_setting",
    "load_defaults",
]
