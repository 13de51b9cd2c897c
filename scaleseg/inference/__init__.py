"""Ensemble inference: global sliding-window plans with Gaussian weights, test-time
augmentation and the ensemble mixture by running sums (kernels), and block orchestration."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "BlockPlan": "..blocks",
        "EnsembleInfo": "._models",
        "RegionPrediction": "._predict",
        "TTA_SETS": "._tta",
        "TilePlan": "._tiling",
        "Transform": "._tta",
        "UNCERTAINTY_CHANNELS": "._run",
        "apply": "._tta",
        "clear_model_cache": "._models",
        "compute_block": "._blocks",
        "gaussian_weights": "._tiling",
        "get_feature_stats": "._models",
        "get_models": "._models",
        "invert": "._tta",
        "invert_vectors": "._tta",
        "output_levels": "..blocks",
        "plan_blocks": "..blocks",
        "plan_tiles": "._tiling",
        "predict_collection": "._run",
        "predict_region": "._predict",
        "predict_lazy": "._lazy",
        "read_ensemble": "._models",
        "reflect_indices": "._tiling",
        "tta_transforms": "._tta",
        "verify_ensemble": "._models",
        "window_starts": "._tiling",
        "windows_for_region": "._tiling",
        "write_block": "..blocks",
    },
)
