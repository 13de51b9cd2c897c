"""Work units of prediction: one (image, block) each (orchestration layer).

A unit reads its block plus halo straight from zarr (reflection outside the image), runs the
ensemble kernel over the windows of the global grid that touch the block core, and returns the
core's maps with the partial sums of the image scores. Writing goes chunk-aligned into the
output image, all levels of the pyramid at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..blocks import read_region
from ._tiling import plan_tiles, windows_for_region

if TYPE_CHECKING:
    from ..config import PredictConfig

__all__ = ["compute_block", "compute_ensemble_block"]


def compute_block(
    image,
    core: tuple[slice, slice],
    *,
    models: list,
    normalization,
    tile_shape: tuple[int, int],
    overlap: float,
    n_classes: int,
    n_extra: int = 0,
    tta: str = "flips",
    batch_size: int | None = None,
    zeta: float = 4.0,
    device=None,
    name: str = "",
    feature_stats=None,
    threshold: float | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Predict one block core of a lazy ``(c, y, x)`` image.

    ``feature_stats`` (one :class:`~scaleseg.uncertainty.FeatureStats` per model) adds the
    encoder-feature distance (and ``U_novel`` where they have a per-cell part) to the partial
    sums. ``threshold``: foreground-probability
    decision threshold of a binary ensemble (None: argmax). ``precision``: the torch members'
    autocast (:func:`~scaleseg.inference.predict_region`).

    Returns
    -------
    dict
        ``probabilities`` (K, h, w) float32, ``labels`` (h, w), ``uncertainty`` (3, h, w)
        float32 (u, epistemic, aleatoric), ``extra`` or None, ``partials``
        (:class:`~scaleseg.uncertainty.ScorePartials`), ``n_forward``, ``seconds_read``,
        ``seconds_model``, ``pixels`` (the core's input pixels, as read).
    """
    from ..uncertainty import argmax_labels, score_partials, uncertainty_maps
    from ._predict import predict_region

    t0 = time.perf_counter()
    shape = (int(image.shape[1]), int(image.shape[2]))
    plan = plan_tiles(shape, tile_shape=tile_shape, overlap=overlap)
    windows, read = windows_for_region(plan, core)
    raw = read_region(image, read)
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise ValueError(f"{name or image.attrs.get('url')}: image contains NaN or infinite pixels")
    padded = normalization.for_image(image).apply(raw)
    t1 = time.perf_counter()
    pred = predict_region(
        models,
        padded,
        read_origin=(read[0].start, read[1].start),
        windows=windows,
        region=core,
        tile_shape=tile_shape,
        n_classes=n_classes,
        n_extra=n_extra,
        tta=tta,
        batch_size=batch_size,
        device=device,
        feature_stats=feature_stats,
        precision=precision,
    )
    t2 = time.perf_counter()
    labels = argmax_labels(pred.mean, threshold)
    maps = uncertainty_maps(pred.mean, pred.mean_sq, zeta=zeta)
    return {
        "probabilities": pred.mean,
        "labels": labels,
        "uncertainty": np.stack([maps.u, maps.epistemic, maps.aleatoric]),
        "extra": pred.extra,
        "partials": score_partials(
            labels, maps, n_classes=n_classes, distance=pred.distance, novelty=pred.novelty
        ),
        "n_forward": pred.n_forward,
        "seconds_read": t1 - t0,
        "seconds_model": t2 - t1,
        "pixels": raw[
            :,
            core[0].start - read[0].start : core[0].stop - read[0].start,
            core[1].start - read[1].start : core[1].stop - read[1].start,
        ],
    }


_BOUND: dict[tuple, object] = {}
"""Per-process cache of per-image normalisations (the blocks of one image share them)."""


def compute_ensemble_block(
    image, core: tuple[slice, slice], info, config: PredictConfig, *, device, name: str = ""
) -> dict[str, Any]:
    """:func:`compute_block` with the models, normalisation and settings of an ensemble
    (models from the per-process cache), with the image's window
    (:meth:`~scaleseg.config.PredictConfig.window_for`)."""
    from ..models import Normalization
    from ._models import get_feature_stats, get_models

    normalization = Normalization.from_dict(info.normalization)
    url = image.attrs.get("url")
    if normalization.per_image and url:  # the image's percentiles, once per image and process
        key = (url, tuple(image.shape), normalization)
        bound = _BOUND.get(key)
        if bound is None:
            bound = normalization.for_image(image)
            _BOUND[key] = bound
            while len(_BOUND) > 16:
                _BOUND.pop(next(iter(_BOUND)))
        normalization = bound
    window = config.window_for(image.shape, info.tile_shape)
    return compute_block(
        image,
        core,
        models=get_models(info, device, config.engine, window, config.precision),
        normalization=normalization,
        tile_shape=window,
        overlap=config.overlap,
        n_classes=info.n_classes,
        n_extra=info.n_extra,
        tta=config.tta,
        batch_size=config.batch_size,
        zeta=config.zeta,
        device=device,
        name=name,
        feature_stats=get_feature_stats(info),
        threshold=config.threshold if config.threshold is not None else info.decision_threshold,
        precision=config.precision,
    )
