"""Encoder-feature statistics of each fold's training images (orchestration: reads images,
runs the fold's encoder, writes ``fold_<k>/features.safetensors``).

Predict compares the pooled encoder features of every window with these statistics
(Mahalanobis distance, :mod:`scaleseg.uncertainty`), giving the ``ood_distance`` score.
Windows are the non-overlapping sliding-window grid of each training image with the ensemble's
tile shape (at most ``max_windows`` per image, evenly spread), normalised as in training.

Calibration (label-free): the fold's *validation* images were not used to fit its statistics,
so their distances show how far an unseen in-distribution image lies. Each gets the same kind
of number as predict's image score -- the mean over its windows of the distance averaged over
the four flips (predict's default test-time augmentation) -- stored as ``calibration`` in the
statistics file. The ensemble's threshold of the review rule is the largest of these over all
folds (:func:`distance_threshold`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._fit import fold_dir_name

if TYPE_CHECKING:
    from ..models import ModelSpec, Normalization

__all__ = [
    "FEATURES_FILE",
    "FeatureUnit",
    "distance_threshold",
    "ensure_fold_features",
    "feature_windows",
    "fold_features",
    "image_distances",
]

FEATURES_FILE = "features.safetensors"


def feature_windows(
    shape: tuple[int, int], tile_shape: tuple[int, int], *, max_windows: int
) -> list[tuple[int, int]]:
    """Origins of at most ``max_windows`` windows of the non-overlapping grid of ``shape``,
    evenly spread in row-major order (all of them when there are fewer)."""
    from ..inference import plan_tiles

    wins = plan_tiles(shape, tile_shape=tile_shape, overlap=0.0).windows()
    if len(wins) <= max_windows:
        return wins
    idx = np.unique(np.linspace(0, len(wins) - 1, max_windows).round().astype(int))
    return [wins[i] for i in idx]


def _window_features(
    model,
    items: list,
    *,
    normalization: Normalization,
    tile_shape: tuple[int, int],
    max_windows: int,
    batch_size: int,
    device,
    tta: str = "none",
):
    """Yield ``(item index, (T, B, D) features)`` for batches of each item's windows, one row
    per test-time transform of ``tta`` (``"none"``: T = 1)."""
    import torch

    from ..blocks import read_region
    from ..inference._tta import apply, tta_transforms
    from ..io import open_image, to_cyx
    from ..models import encoder_features

    norm = normalization
    transforms = tta_transforms(tta)
    ty, tx = tile_shape
    with torch.inference_mode():
        for j, item in enumerate(items):
            image = to_cyx(open_image(item.image_url))
            shape = (int(image.shape[1]), int(image.shape[2]))
            wins = feature_windows(shape, tile_shape, max_windows=max_windows)
            bound = norm.for_image(image)
            for b0 in range(0, len(wins), batch_size):
                tiles = [
                    bound.apply(read_region(image, (slice(y, y + ty), slice(x, x + tx))))
                    for y, x in wins[b0 : b0 + batch_size]
                ]
                x = torch.from_numpy(np.stack(tiles).astype(np.float32)).to(device)
                feats = [encoder_features(model, apply(x, t)).cpu().numpy() for t in transforms]
                yield j, np.stack(feats).astype(np.float64)


def fold_features(
    model,
    items: list,
    *,
    normalization: Normalization,
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    batch_size: int = 4,
    device=None,
) -> np.ndarray:
    """Pooled deepest encoder features ``(N, D)`` of the windows of ``items``' images."""
    import torch

    out = [
        f[0]
        for _, f in _window_features(
            model,
            items,
            normalization=normalization,
            tile_shape=tile_shape,
            max_windows=max_windows,
            batch_size=batch_size,
            device=device or torch.device("cpu"),
        )
    ]
    if not out:
        raise ValueError("no training windows to measure feature statistics on")
    return np.concatenate(out)


def image_distances(
    model,
    items: list,
    stats,
    *,
    normalization: Normalization,
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    batch_size: int = 4,
    device=None,
    tta: str = "flips",
) -> np.ndarray:
    """Per-image distance scores ``(len(items),)``: the mean over each image's windows of the
    Mahalanobis distance to ``stats``, averaged over the ``tta`` transforms (predict's image
    score is the same kind of number: a mean over windows of member- and flip-averaged
    distances)."""
    import torch

    from ..uncertainty import mahalanobis

    sums = np.zeros(len(items))
    counts = np.zeros(len(items))
    for j, feats in _window_features(
        model,
        items,
        normalization=normalization,
        tile_shape=tile_shape,
        max_windows=max_windows,
        batch_size=batch_size,
        device=device or torch.device("cpu"),
        tta=tta,
    ):
        t, b, d = feats.shape
        dist = mahalanobis(feats.reshape(t * b, d), stats).reshape(t, b).mean(axis=0)
        sums[j] += dist.sum()
        counts[j] += b
    return sums / np.maximum(counts, 1)


def distance_threshold(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ensemble's threshold of the distance review rule from its folds' ``features``
    entries: the largest calibration distance of any held-out training image (None when no
    fold has calibration images)."""
    values = [v for e in entries for v in (e.get("calibration") or {}).get("distances", [])]
    if not values:
        return None
    return {
        "value": float(max(values)),
        "rule": "largest ood_distance of a held-out training image (each fold's validation "
        "images against its own statistics; mean over windows of the flip-averaged distance)",
        "n_images": len(values),
        "median": float(np.median(values)),
    }


@dataclass(frozen=True)
class FeatureUnit:
    """One fold's feature-statistics work unit."""

    out_dir: str
    fold: int
    weights: str
    train_items: tuple
    valid_items: tuple = ()


def ensure_fold_features(
    unit: FeatureUnit,
    *,
    model: ModelSpec,
    normalization: Normalization,
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    torch_threads: int | None = 1,
) -> dict[str, Any] | None:
    """Feature statistics of fold ``fold`` and the calibration distances of its validation
    images (computed once; an existing file that holds both is kept, one without calibration
    is completed).

    Returns
    -------
    dict or None
        The fold's ``features`` entry of ``ensemble.json``: ``path`` (relative to the
        ensemble), ``sha256``, ``n_samples``, ``dim``, ``shrinkage``, ``calibration``
        (``images``, ``distances``) and ``seconds``; None when the training images hold fewer
        than two windows (no covariance to estimate).
    """
    import torch

    from ..models import (
        build_model,
        file_sha256,
        load_weights,
        pick_device,
        read_weights,
        save_weights,
    )
    from ..uncertainty import FeatureStats, fit_feature_stats

    t0 = time.perf_counter()
    fold = unit.fold
    train_items = list(unit.train_items)
    fold_dir = Path(unit.out_dir) / fold_dir_name(fold)
    path = fold_dir / FEATURES_FILE
    valid_items = list(unit.valid_items)
    arrays = {k: v.numpy() for k, v in read_weights(path).items()} if path.is_file() else {}
    stats = FeatureStats.from_arrays(arrays) if arrays else None
    calibration = arrays.get("calibration")
    if stats is None or (calibration is None and valid_items):
        if torch_threads:  # a worker task: torch threads and the allocator
            from ..worker import prepare_worker_process

            prepare_worker_process(torch_threads)
        device = pick_device()
        net = build_model(dataclasses.replace(model, encoder_weights=None))
        load_weights(net, fold_dir / unit.weights)
        model = net.to(device).eval()
        kw = dict(
            normalization=normalization,
            tile_shape=tuple(tile_shape),
            max_windows=max_windows,
            device=device,
        )
        if stats is None:
            feats = fold_features(model, train_items, **kw)
            if feats.shape[0] < 2:
                return None
            stats = fit_feature_stats(feats)
        calibration = (
            image_distances(model, valid_items, stats, **kw) if valid_items else np.zeros(0)
        )
        arrays = {k: torch.from_numpy(v) for k, v in stats.to_arrays().items()}
        arrays["calibration"] = torch.from_numpy(np.asarray(calibration, dtype=np.float64))
        save_weights(arrays, path, metadata={"what": "scaleseg encoder-feature statistics"})
    return {
        "path": f"{fold_dir_name(fold)}/{FEATURES_FILE}",
        "sha256": file_sha256(path),
        "n_samples": stats.n_samples,
        "dim": stats.dim,
        "shrinkage": round(stats.shrinkage, 6),
        "calibration": {
            "images": [getattr(i, "name", str(i)) for i in valid_items],
            "distances": [round(float(v), 6) for v in np.asarray(calibration).ravel()],
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
