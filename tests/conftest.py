"""Shared fixtures: small deterministic arrays, tiny OME-Zarr images and one local cluster."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def image_cyx(rng):
    """A (2, 70, 53) uint16 image with odd sizes."""
    return (rng.random((2, 70, 53)) * 4000).astype(np.uint16)


@pytest.fixture(params=["0.4", "0.5"])
def ngff_version(request):
    return request.param


@pytest.fixture(scope="session")
def client():
    """One session-wide LocalCluster with two single-threaded worker processes."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
