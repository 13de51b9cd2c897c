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
    "cell_window",
    "feature_windows",
    "fold_cell_novelty",
    "fold_features",
    "image_distances",
]

FEATURES_FILE = "features.safetensors"
#: Most training cells the per-cell statistics of one fold are fitted on (memory bound).
MAX_CELLS = 65536
NOVELTY_RULE = (
    "cells of predict's default window over the fold's training images (at most "
    f"{MAX_CELLS} in all); a cell is novel beyond the largest distance of any cell of the "
    "fold's validation images under the four flips"
)


def feature_windows(
    shape: tuple[int, int], tile_shape: tuple[int, int], *, max_windows: int
) -> list[tuple[int, int]]:
    """Origins of at most ``max_windows`` windows of the non-overlapping grid of ``shape``,
    evenly spread in row-major order (all of them when there are fewer)."""
    from ..inference import plan_tiles

    wins = plan_tiles(shape, tile_shape=tile_shape, overlap=0.0).windows()
    return [wins[i] for i in _spread(len(wins), max_windows)]


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
    cells: bool = False,
):
    """Yield ``(item index, (T, B, D) features)`` for batches of each item's windows, one row
    per test-time transform of ``tta`` (``"none"``: T = 1).

    ``cells``: the windows are predict's default window for the image (:func:`cell_window`)
    and each row is the deepest map ``(D, h, w)`` (float32), not its pool.
    """
    import torch

    from ..blocks import read_region
    from ..inference._tta import apply, tta_transforms
    from ..io import open_image, to_cyx
    from ..models import deepest_map, encoder_features

    norm = normalization
    transforms = tta_transforms(tta)
    with torch.inference_mode():
        for j, item in enumerate(items):
            image = to_cyx(open_image(item.image_url))
            shape = (int(image.shape[1]), int(image.shape[2]))
            window = cell_window(shape, tile_shape) if cells else tuple(tile_shape)
            ty, tx = window
            wins = feature_windows(shape, window, max_windows=max_windows)
            bound = norm.for_image(image)
            for b0 in range(0, len(wins), batch_size):
                tiles = [
                    bound.apply(read_region(image, (slice(y, y + ty), slice(x, x + tx))))
                    for y, x in wins[b0 : b0 + batch_size]
                ]
                x = torch.from_numpy(np.stack(tiles).astype(np.float32)).to(device)
                if cells:
                    maps = [deepest_map(model.encoder(apply(x, t))).float() for t in transforms]
                    yield j, np.stack([m.cpu().numpy() for m in maps])
                else:
                    feats = [encoder_features(model, apply(x, t)).cpu().numpy() for t in transforms]
                    yield j, np.stack(feats).astype(np.float64)


def cell_window(shape: tuple[int, int], tile_shape: tuple[int, int]) -> tuple[int, int]:
    """The window the per-cell statistics are measured in for an image of ``shape``: predict's
    default window (the training tile times ``tile_scale``, cut to the image), so that cells
    near window borders are as frequent as in predict's default windows."""
    from ..config import PredictConfig

    return PredictConfig().window_for(shape, tile_shape)


def _spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices of ``range(n)``, evenly spread."""
    return np.arange(n) if n <= k else np.unique(np.linspace(0, n - 1, k).round().astype(int))


def fold_cell_novelty(
    model,
    train_items: list,
    valid_items: list,
    *,
    normalization: Normalization,
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    max_cells: int = MAX_CELLS,
    batch_size: int = 2,
    device=None,
):
    """The per-cell part of a fold's statistics (:class:`~scaleseg.uncertainty.CellNovelty`):
    the mean and precision of the cells of the training images' windows (at most ``max_cells``
    in all, evenly spread over each image's cells), and the threshold -- the largest distance
    of any cell of the validation images' windows under each of predict's four flips. None
    without validation images (nothing unseen to calibrate on) or with fewer than two cells.
    """
    import torch

    from ..uncertainty import CellNovelty, cell_distances, cell_rows, fit_feature_stats

    if not valid_items or not train_items:
        return None
    kw = dict(
        normalization=normalization,
        tile_shape=tuple(tile_shape),
        max_windows=max_windows,
        batch_size=batch_size,
        device=device or torch.device("cpu"),
        cells=True,
    )
    per_image = max(1, max_cells // len(train_items))
    rows: list[np.ndarray] = []
    current: list[np.ndarray] = []  # one image's cells (batches come image by image)

    def keep() -> None:
        if current:
            cells = np.concatenate(current)
            rows.append(cells[_spread(len(cells), per_image)])
            current.clear()

    last = None
    for j, maps in _window_features(model, train_items, **kw):
        if j != last:
            keep()
            last = j
        cells = cell_rows(maps[0])
        current.append(cells[_spread(len(cells), per_image)])  # bounded per batch too
    keep()
    train = np.concatenate(rows)
    train = train[_spread(len(train), max_cells)]  # more images than max_cells
    if train.shape[0] < 2:
        return None
    stats = fit_feature_stats(train)
    largest = max(
        float(cell_distances(maps.reshape(-1, *maps.shape[2:]), stats).max())
        for _, maps in _window_features(model, valid_items, tta="flips", **kw)
    )
    return CellNovelty(stats, largest)


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
    """Feature statistics of fold ``fold``, the calibration distances of its validation images
    and the per-cell part (:func:`fold_cell_novelty`), computed once: an existing file that
    holds all three is kept, one without calibration or without the per-cell part (written
    by an older scaleseg) is completed.

    Returns
    -------
    dict or None
        The fold's ``features`` entry of ``ensemble.json``: ``path`` (relative to the
        ensemble), ``sha256``, ``n_samples``, ``dim``, ``shrinkage``, ``calibration``
        (``images``, ``distances``), ``novelty`` (``n_cells``, ``threshold``, ``rule``; None
        without validation images) and ``seconds``; None when the training images hold fewer
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
    missing_cells = stats is not None and stats.novelty is None and bool(valid_items)
    if stats is None or (calibration is None and valid_items) or missing_cells:
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
        if calibration is None:
            calibration = (
                image_distances(model, valid_items, stats, **kw) if valid_items else np.zeros(0)
            )
        if stats.novelty is None:
            novelty = fold_cell_novelty(model, train_items, valid_items, **kw)
            stats = dataclasses.replace(stats, novelty=novelty)
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
        "novelty": None
        if stats.novelty is None
        else {
            "n_cells": stats.novelty.stats.n_samples,
            "threshold": round(stats.novelty.threshold, 6),
            "rule": NOVELTY_RULE,
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
