"""Evaluation of predictions against a reference and against the range of the experts.

Orchestration layer: sources (OME-Zarr collections or mask folders) are resolved into
per-image label maps (:func:`resolve_source`), each image is scored by one task (dask when a
``Client`` is given) with the :mod:`scaleseg.metrics` kernels (:func:`evaluate`), and the
tables and figures are written by :func:`write_evaluation`.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ALL_EXPERTS": "._sources",
        "KINDS": "._evaluate",
        "LabelItem": "._sources",
        "LabelSource": "._sources",
        "OUTPUT_STEMS": "._plots",
        "check_output_dir": "._plots",
        "evaluate": "._evaluate",
        "is_instance_label": "._sources",
        "plot_expert_range": "._plots",
        "plot_scores": "._plots",
        "resolve_source": "._sources",
        "score_maps": "._evaluate",
        "summarize": "._evaluate",
        "write_evaluation": "._plots",
    },
)
