"""Segmentation models: smp/timm factory, input-channel adaptation, losses, safe weight I/O, export.

Its names are loaded on first use (torch, timm and segmentation-models-pytorch with them); it sets
``HF_HUB_OFFLINE=1`` unless already set: nothing here reaches the network.
"""

import os

# Before timm / smp / huggingface_hub are imported anywhere below: never retry the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .._lazy import attach  # noqa: E402

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ARCHITECTURES": "._factory",
        "DECODER_INIT_STD": "._factory",
        "DecisionThreshold": "._manifest",
        "ENGINES": "._engines",
        "GraphModel": "._engines",
        "DistanceThreshold": "._manifest",
        "ENSEMBLE_FILE": "._manifest",
        "EncoderWeights": "._manifest",
        "EnsembleManifest": "._manifest",
        "FeatureEntry": "._manifest",
        "FoldEntry": "._manifest",
        "LOSSES": "._losses",
        "ModelSpec": "._factory",
        "Normalization": "._normalize",
        "SegmentationLoss": "._losses",
        "WeightsError": "._weights",
        "adapt_first_conv_weight": "._channels",
        "available_engines": "._engines",
        "build_loss": "._losses",
        "build_model": "._factory",
        "capture_encoder_features": "._features",
        "channel_stats": "._normalize",
        "deepest_map": "._features",
        "encoder_features": "._features",
        "engine_cache_dir": "._engines",
        "export_graph": "._engines",
        "export_onnx": "._export",
        "export_torchscript": "._export",
        "file_sha256": "._weights",
        "find_first_conv": "._channels",
        "graph_path": "._engines",
        "has_encoder": "._features",
        "init_decoder": "._factory",
        "load_graph_model": "._engines",
        "resolve_engine": "._engines",
        "resolve_precision": "._engines",
        "autocast_dtype": "._engines",
        "PRECISIONS": "._engines",
        "load_weights": "._weights",
        "pick_device": "._device",
        "pool_deepest": "._features",
        "read_weights": "._weights",
        "resolve_encoder_weights": "._factory",
        "save_weights": "._weights",
        "to_unit_range": "._normalize",
    },
)
