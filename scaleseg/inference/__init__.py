"""Ensemble inference: global sliding-window plans with Gaussian weights, test-time
augmentation and the ensemble mixture by running sums (kernels), and block orchestration."""

from ._blocks import BlockPlan, compute_block, output_levels, plan_blocks, write_block
from ._models import (
    EnsembleInfo,
    clear_model_cache,
    get_feature_stats,
    get_models,
    read_ensemble,
    verify_ensemble,
)
from ._predict import RegionPrediction, predict_region
from ._run import (
    UNCERTAINTY_CHANNELS,
    plan_units,
    predict_collection,
    predict_options,
    predict_output_state,
    predict_unit,
    same_output_state,
)
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
    "UNCERTAINTY_CHANNELS",
    "BlockPlan",
    "EnsembleInfo",
    "clear_model_cache",
    "compute_block",
    "get_feature_stats",
    "get_models",
    "output_levels",
    "plan_blocks",
    "plan_units",
    "predict_collection",
    "predict_options",
    "predict_output_state",
    "same_output_state",
    "predict_unit",
    "read_ensemble",
    "verify_ensemble",
    "write_block",
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
