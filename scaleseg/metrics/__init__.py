"""Segmentation metrics: semantic overlap, instance matching and scores.

Pure numpy/scipy kernels (no dask, no I/O). Label maps use ``0`` = background.

Semantic: :func:`dice`, :func:`iou`, :func:`dice_per_class`, :func:`iou_per_class`.
Instances: :func:`label_instances`, :func:`remove_small_instances`,
:func:`instance_iou`, :func:`match_instances`, :func:`average_precision`,
:func:`mean_average_precision`, :func:`precision_recall_f1`, :func:`error_rate`,
:func:`panoptic_quality`, :func:`aggregated_jaccard_index`, :func:`instance_scores`.
Expert comparison: :func:`relative_performance`.
"""

from ._instance_scores import (
    MAP_THRESHOLDS,
    aggregated_jaccard_index,
    average_precision,
    error_rate,
    instance_scores,
    mean_average_precision,
    panoptic_quality,
    precision_recall_f1,
)
from ._instances import Matching, instance_iou, match_instances
from ._labels import label_instances, remove_small_instances
from ._overlap import dice, dice_per_class, iou, iou_per_class
from ._relative import RELATIVE_PERFORMANCE, relative_performance

__all__ = [
    "MAP_THRESHOLDS",
    "RELATIVE_PERFORMANCE",
    "Matching",
    "aggregated_jaccard_index",
    "average_precision",
    "dice",
    "dice_per_class",
    "error_rate",
    "instance_iou",
    "instance_scores",
    "iou",
    "iou_per_class",
    "label_instances",
    "match_instances",
    "mean_average_precision",
    "panoptic_quality",
    "precision_recall_f1",
    "relative_performance",
    "remove_small_instances",
]
