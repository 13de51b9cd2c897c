"""Ensemble inference: global sliding-window plans with Gaussian weights, test-time
augmentation and the ensemble mixture by running sums (kernels), and block orchestration."""

from ._predict import RegionPrediction, predict_region
from ._tiling import (
    TilePlan,
    gaussian_weights,
    plan_tiles,
    reflect_indices,
    window_starts,
    windows_for_region,
)
from ._tta import TTA_SETS, Transform, apply, invert, invert_vectors, tta_transforms

__all__ = [
    "TTA_SETS",
    "RegionPrediction",
    "TilePlan",
    "Transform",
    "apply",
    "gaussian_weights",
    "invert",
    "invert_vectors",
    "plan_tiles",
    "predict_region",
    "reflect_indices",
    "tta_transforms",
    "window_starts",
    "windows_for_region",
]
