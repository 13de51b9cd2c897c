"""Segmentation models: smp/timm factory, input-channel adaptation, losses, safe weight I/O, export.

Importing this subpackage imports torch, timm and segmentation-models-pytorch, and sets
``HF_HUB_OFFLINE=1`` unless already set: nothing here reaches the network.
"""

import os

# Before timm / smp / huggingface_hub are imported anywhere below: never retry the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ._channels import adapt_first_conv_weight, find_first_conv  # noqa: E402
from ._device import pick_device  # noqa: E402
from ._export import export_onnx, export_torchscript  # noqa: E402
from ._factory import (  # noqa: E402
    ARCHITECTURES,
    DECODER_INIT_STD,
    ModelSpec,
    build_model,
    init_decoder,
    resolve_encoder_weights,
)
from ._features import (  # noqa: E402
    capture_encoder_features,
    encoder_features,
    has_encoder,
    pool_deepest,
)
from ._manifest import (  # noqa: E402
    ENSEMBLE_FILE,
    DistanceThreshold,
    EncoderWeights,
    EnsembleManifest,
    FeatureEntry,
    FoldEntry,
)
from ._losses import LOSSES, SegmentationLoss, build_loss  # noqa: E402
from ._normalize import Normalization, channel_stats, to_unit_range  # noqa: E402
from ._weights import WeightsError, file_sha256, load_weights, read_weights, save_weights  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "DECODER_INIT_STD",
    "ENSEMBLE_FILE",
    "LOSSES",
    "DistanceThreshold",
    "EncoderWeights",
    "EnsembleManifest",
    "FeatureEntry",
    "FoldEntry",
    "ModelSpec",
    "Normalization",
    "SegmentationLoss",
    "WeightsError",
    "adapt_first_conv_weight",
    "build_model",
    "capture_encoder_features",
    "encoder_features",
    "has_encoder",
    "pick_device",
    "pool_deepest",
    "build_loss",
    "channel_stats",
    "export_onnx",
    "export_torchscript",
    "file_sha256",
    "find_first_conv",
    "init_decoder",
    "load_weights",
    "read_weights",
    "resolve_encoder_weights",
    "save_weights",
    "to_unit_range",
]
