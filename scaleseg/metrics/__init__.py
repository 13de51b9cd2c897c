"""Segmentation metrics: semantic overlap, instance matching and scores.

Pure numpy/scipy kernels (no dask, no I/O). Label maps use ``0`` = background.

Semantic: :func:`dice`, :func:`iou`, :func:`dice_per_class`, :func:`iou_per_class`.
Instances: :func:`label_instances`, :func:`remove_small_instances`,
:func:`instance_iou`, :func:`match_instances`, :func:`average_precision`,
:func:`mean_average_precision`, :func:`precision_recall_f1`, :func:`error_rate`,
:func:`panoptic_quality`, :func:`aggregated_jaccard_index`, :func:`instance_scores`.
Expert comparison: :func:`relative_performance`.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "MAP_THRESHOLDS": "._instance_scores",
        "Matching": "._instances",
        "RELATIVE_PERFORMANCE": "._relative",
        "aggregated_jaccard_index": "._instance_scores",
        "average_precision": "._instance_scores",
        "dice": "._overlap",
        "dice_per_class": "._overlap",
        "error_rate": "._instance_scores",
        "instance_iou": "._instances",
        "instance_scores": "._instance_scores",
        "iou": "._overlap",
        "iou_per_class": "._overlap",
        "label_instances": "._labels",
        "match_instances": "._instances",
        "mean_average_precision": "._instance_scores",
        "panoptic_quality": "._instance_scores",
        "precision_recall_f1": "._instance_scores",
        "relative_performance": "._relative",
        "remove_small_instances": "._labels",
    },
)
