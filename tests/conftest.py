"""Shared fixtures: small deterministic arrays, tiny OME-Zarr images and one local cluster."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

# the session's real single-node SLURM (``slurm_cluster``) for the tests marked ``slurm``
pytest_plugins = ("slurm_fixture",)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# the per-user cache (exported inference graphs) of this test session, never the user's own;
# worker processes and CLI subprocesses inherit it
_CACHE = tempfile.mkdtemp(prefix="scaleseg-test-cache-")
os.environ["SCALESEG_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


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


@pytest.fixture(scope="session", autouse=True)
def _cli_default_cluster(request):
    """``train`` / ``predict`` without ``--cluster`` connect to the configured profile
    (``scaleseg.cluster.profile``): in the tests, the warm session cluster above, instead of a
    fresh LocalCluster per command (~8 s of worker start-up and imports each). Session-wide,
    so that module fixtures see it too. Tests that name ``--cluster local`` still start their
    own; tests of the default itself are marked ``own_default_cluster`` (below); a run of
    only ``slurm`` tests does not make it the default (their local references still use it,
    through ``--scheduler``)."""
    items = getattr(request.session, "items", [])
    if items and all("slurm" in item.keywords for item in items):
        yield
        return
    import dask.config

    address = request.getfixturevalue("client").scheduler.address
    with dask.config.set({"scaleseg.cluster.profile": address}):
        yield


@pytest.fixture(autouse=True)
def _own_default_cluster(request):
    """``@pytest.mark.own_default_cluster``: the package's default profile again."""
    if request.node.get_closest_marker("own_default_cluster") is None:
        yield
        return
    import dask.config

    from scaleseg.cluster import load_defaults

    load_defaults()
    with dask.config.set({"scaleseg.cluster.profile": "local"}):
        yield


def make_random_ensemble(
    path,
    *,
    in_channels=1,
    n_classes=2,
    n_models=2,
    tile=(64, 64),
    encoder="tu-resnet10t",
    n_extra=0,
    seed=0,
    normalization=None,
):
    """A small ensemble folder with randomly initialised weights (no training)."""
    from pathlib import Path

    from scaleseg.models import EnsembleManifest, ModelSpec, build_model, save_weights

    path = Path(path)
    spec = {
        "arch": "Unet",
        "encoder": encoder,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "n_extra": n_extra,
        "encoder_weights": None,
    }
    folds = []
    for k in range(n_models):
        (path / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        sha = save_weights(
            build_model(ModelSpec.from_dict(spec), seed=seed + k),
            path / f"fold_{k}" / "weights.safetensors",
        )
        folds.append(
            {
                "fold": k,
                "path": f"fold_{k}/weights.safetensors",
                "sha256": sha,
                "valid_dice": 0.0,
                "best_epoch": 0,
                "train_images": [],
                "valid_images": [],
                "seconds": 0.0,
            }
        )
    EnsembleManifest(
        created="2026-01-01T00:00:00+00:00",
        model=spec,
        architecture="Unet",
        encoder=encoder,
        in_channels=in_channels,
        n_classes=n_classes,
        n_extra=n_extra,
        tile_shape=tuple(tile),
        normalization=normalization or {"mean": [0.05] * in_channels, "std": [0.03] * in_channels},
        folds=folds,
        classes=[f"class_{i}" for i in range(n_classes)],
        train={},
    ).write(path)
    return path


@pytest.fixture(scope="session")
def tiny_ensemble(tmp_path_factory):
    return make_random_ensemble(tmp_path_factory.mktemp("ensemble") / "ens")


@pytest.fixture(autouse=True)
def _scaleseg_loggers_enabled():
    """Some libraries configure logging with ``disable_existing_loggers``: tests that read
    scaleseg's log records must not depend on which test ran before."""
    import logging

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("scaleseg") and isinstance(logger, logging.Logger):
            logger.disabled = False
    yield
