"""Encoder-feature statistics of each fold's training images (orchestration: reads images,
runs the fold's encoder, writes ``fold_<k>/features.safetensors``).

Predict compares the pooled encoder features of every window with these statistics
(Mahalanobis distance, :mod:`scaleseg.uncertainty`), giving the ``ood_distance`` score.
Windows are the non-overlapping sliding-window grid of each training image with the ensemble's
tile shape (at most ``max_windows`` per image, evenly spread), normalised as in training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ._fit import fold_dir_name

__all__ = ["FEATURES_FILE", "feature_windows", "fold_features", "ensure_fold_features"]

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


def fold_features(
    model,
    items: list,
    *,
    normalization: dict[str, Any],
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    batch_size: int = 4,
    device=None,
) -> np.ndarray:
    """Pooled deepest encoder features ``(N, D)`` of the windows of ``items``' images."""
    import torch

    from ..inference._blocks import read_region
    from ..io import open_image, to_cyx
    from ..models import Normalization, encoder_features

    norm = Normalization.from_dict(normalization)
    device = device or torch.device("cpu")
    ty, tx = tile_shape
    out = []
    with torch.inference_mode():
        for item in items:
            image = to_cyx(open_image(item.image_url))
            shape = (int(image.shape[1]), int(image.shape[2]))
            wins = feature_windows(shape, tile_shape, max_windows=max_windows)
            for b0 in range(0, len(wins), batch_size):
                tiles = [
                    norm.apply(read_region(image, (slice(y, y + ty), slice(x, x + tx))))
                    for y, x in wins[b0 : b0 + batch_size]
                ]
                x = torch.from_numpy(np.stack(tiles).astype(np.float32)).to(device)
                out.append(encoder_features(model, x).cpu().numpy())
    if not out:
        raise ValueError("no training windows to measure feature statistics on")
    return np.concatenate(out).astype(np.float64)


def ensure_fold_features(
    out_dir: str | Path,
    fold: int,
    weights: str,
    train_items: list,
    *,
    model_spec: dict[str, Any],
    normalization: dict[str, Any],
    tile_shape: tuple[int, int],
    max_windows: int = 32,
    torch_threads: int | None = 1,
) -> dict[str, Any] | None:
    """Feature statistics of fold ``fold`` (computed once; an existing file is kept).

    Returns
    -------
    dict or None
        The fold's ``features`` entry of ``ensemble.json``: ``path`` (relative to the
        ensemble), ``sha256``, ``n_samples``, ``dim``, ``shrinkage``, ``seconds``; None when the
        training images hold fewer than two windows (no covariance to estimate).
    """
    import torch

    from ..models import (
        ModelSpec,
        build_model,
        file_sha256,
        load_weights,
        read_weights,
        save_weights,
    )
    from ..uncertainty import FeatureStats, fit_feature_stats

    t0 = time.perf_counter()
    fold_dir = Path(out_dir) / fold_dir_name(fold)
    path = fold_dir / FEATURES_FILE
    if path.is_file():
        stats = FeatureStats.from_arrays({k: v.numpy() for k, v in read_weights(path).items()})
        sha = file_sha256(path)
    else:
        if torch_threads:  # a worker task: torch threads and the allocator
            from ..cluster import prepare_worker_process

            prepare_worker_process(torch_threads)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(ModelSpec.from_dict({**model_spec, "encoder_weights": None}))
        load_weights(model, fold_dir / weights)
        model = model.to(device).eval()
        feats = fold_features(
            model,
            train_items,
            normalization=normalization,
            tile_shape=tuple(tile_shape),
            max_windows=max_windows,
            device=device,
        )
        if feats.shape[0] < 2:
            return None
        stats = fit_feature_stats(feats)
        arrays = {k: torch.from_numpy(v) for k, v in stats.to_arrays().items()}
        sha = save_weights(arrays, path, metadata={"what": "scaleseg encoder-feature statistics"})
    return {
        "path": f"{fold_dir_name(fold)}/{FEATURES_FILE}",
        "sha256": sha,
        "n_samples": stats.n_samples,
        "dim": stats.dim,
        "shrinkage": round(stats.shrinkage, 6),
        "seconds": round(time.perf_counter() - t0, 2),
    }
