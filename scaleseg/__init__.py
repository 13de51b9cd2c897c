"""scaleseg: cluster-scale, quality-controlled segmentation of ambiguous bioimages.

The deepflash2 method (Griebel et al., Nat. Commun. 2023) -- multi-expert ground truth, deep
ensembles, ensemble inference with uncertainty, instance separation and quality assurance --
run as a Dask-distributed batch processor over chunked OME-Zarr archives.

One function per stage, the same as the command line; each owns its output folder, records
what it did in ``run.json``, resumes an interrupted run and refuses what would lose a file::

    import scaleseg
    scaleseg.train("archive.zarr", "ensemble", gt="gt")
    result = scaleseg.predict("archive.zarr", "ensemble", "prediction")

``import scaleseg`` is light: the stage functions and readers are loaded on first use (torch,
cellpose and distributed are imported where they are used).
"""

from __future__ import annotations

from importlib import import_module as _import_module
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("scaleseg")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

#: public name -> (module, attribute), imported on first access
_LAZY = {
    "train": ("scaleseg.stages", "train"),
    "TrainResult": ("scaleseg.stages", "TrainResult"),
    "predict": ("scaleseg.stages", "predict"),
    "PredictResult": ("scaleseg.stages", "PredictResult"),
    "segment_instances": ("scaleseg.stages", "segment_instances"),
    "InstancesResult": ("scaleseg.stages", "InstancesResult"),
    "predict_lazy": ("scaleseg.inference", "predict_lazy"),
    "convert": ("scaleseg.stages", "convert"),
    "ConvertResult": ("scaleseg.stages", "ConvertResult"),
    "demo_data": ("scaleseg.stages", "demo_data"),
    "DemoDataResult": ("scaleseg.stages", "DemoDataResult"),
    "estimate_gt": ("scaleseg.stages", "estimate_gt"),
    "GTResult": ("scaleseg.stages", "GTResult"),
    "evaluate": ("scaleseg.stages", "evaluate"),
    "EvaluateResult": ("scaleseg.stages", "EvaluateResult"),
    "check_quality": ("scaleseg.stages", "check_quality"),
    "QAResult": ("scaleseg.stages", "QAResult"),
    "select_for_annotation": ("scaleseg.stages", "select_for_annotation"),
    "SelectResult": ("scaleseg.stages", "SelectResult"),
    "export_roi_sets": ("scaleseg.stages", "export_roi_sets"),
    "import_roi_set": ("scaleseg.stages", "import_roi_set"),
    "RunConfig": ("scaleseg.config", "RunConfig"),
    "TrainConfig": ("scaleseg.config", "TrainConfig"),
    "PredictConfig": ("scaleseg.config", "PredictConfig"),
    "GTConfig": ("scaleseg.config", "GTConfig"),
    "InstancesConfig": ("scaleseg.config", "InstancesConfig"),
    "QAConfig": ("scaleseg.config", "QAConfig"),
    "ConvertConfig": ("scaleseg.config", "ConvertConfig"),
    "load_config": ("scaleseg.config", "load_config"),
    "EnsembleManifest": ("scaleseg.models._manifest", "EnsembleManifest"),
    "OutputError": ("scaleseg.runs", "OutputError"),
    "RunLockedError": ("scaleseg.runs", "RunLockedError"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'scaleseg' has no attribute {name!r}") from None
    value = getattr(_import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
