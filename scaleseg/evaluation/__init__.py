"""Evaluation of predictions against a reference and against the range of the experts.

Orchestration layer: sources (OME-Zarr collections or mask folders) are resolved into
per-image label maps (:func:`resolve_source`), each image is scored by one task (dask when a
``Client`` is given) with the :mod:`scaleseg.metrics` kernels (:func:`evaluate`), and the
tables and figures are written by :func:`write_evaluation`.
"""

from ._evaluate import KINDS, evaluate, score_maps, summarize
from ._plots import (
    OUTPUT_STEMS,
    check_output_dir,
    plot_expert_range,
    plot_scores,
    write_evaluation,
)
from ._sources import ALL_EXPERTS, LabelItem, LabelSource, is_instance_label, resolve_source

__all__ = [
    "ALL_EXPERTS",
    "KINDS",
    "OUTPUT_STEMS",
    "LabelItem",
    "LabelSource",
    "check_output_dir",
    "evaluate",
    "is_instance_label",
    "plot_expert_range",
    "plot_scores",
    "resolve_source",
    "score_maps",
    "summarize",
    "write_evaluation",
]
