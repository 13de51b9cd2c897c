"""Cluster factory and the dask.config defaults."""

from __future__ import annotations

import dask.config
import pytest

from scaleseg.cluster import (
    client_has_gpus,
    cluster_session,
    dashboard_link,
    get_client,
    get_setting,
)


def test_defaults_loaded_and_overridable(monkeypatch):
    assert get_setting("cluster.profile") == "local"
    assert get_setting("cluster.torch-threads") == 1
    with dask.config.set({"scaleseg.cluster.profile": "local-cuda"}):
        assert get_setting("cluster.profile") == "local-cuda"


def test_env_variable_override(tmp_path):
    """DASK_SCALESEG__... variables reach the setting (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "from scaleseg.cluster import get_setting; print(get_setting('cluster.n-workers'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"DASK_SCALESEG__CLUSTER__N_WORKERS": "7", "PATH": ""},
    )
    assert out.stdout.strip() == "7"


def test_local_profile():
    with cluster_session("local", n_workers=1, dashboard_address=":0") as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 1
        w = next(iter(info["workers"].values()))
        assert w["nthreads"] == 1
        assert dashboard_link(client).startswith("http")
        assert not client_has_gpus(client)
        assert client.submit(lambda x: x + 1, 1).result() == 2


def test_scheduler_address(client):
    c = get_client(client.scheduler.address)
    try:
        assert c.submit(sum, [1, 2]).result() == 3
    finally:
        c.close()


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown cluster profile 'nope'"):
        get_client("nope")


def test_local_cuda_without_gpu_is_clear():
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="local-cuda"):
        get_client("local-cuda")
