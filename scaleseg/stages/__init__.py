"""Stage runs: one library entry point per stage, each owning its output folder.

Re-exported lazily by :mod:`scaleseg` (``scaleseg.train(...)``, ``scaleseg.predict(...)``).
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ConvertResult": "._data",
        "DemoDataResult": "._data",
        "GTResult": "._data",
        "convert": "._data",
        "demo_data": "._data",
        "estimate_gt": "._data",
        "EvaluateResult": "._review",
        "QAResult": "._review",
        "SelectResult": "._review",
        "check_quality": "._review",
        "evaluate": "._review",
        "select_for_annotation": "._review",
        "ROIExportResult": "._rois",
        "ROIImportResult": "._rois",
        "export_roi_sets": "._rois",
        "import_roi_set": "._rois",
        "InstancesResult": "._predict",
        "PredictResult": "._predict",
        "TrainResult": "._train",
        "predict": "._predict",
        "segment_instances": "._predict",
        "train": "._train",
    },
)
