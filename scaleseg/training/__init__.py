"""Ensemble training: class-balanced tiles read lazily from OME-Zarr, augmentation, the
deepflash2 fine-tune policy per fold, and one Dask task per fold."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ENSEMBLE_FILE": "._ensemble",
        "FoldSpec": "._fit",
        "Normalization": "..models._normalize",
        "TileDataset": "._data",
        "TrainItem": "._data",
        "channel_stats": "..models._normalize",
        "export_ensemble": "._export",
        "finished_folds": "._ensemble",
        "fit_fold": "._fit",
        "items_from_gt": "._items",
        "kfold_splits": "._ensemble",
        "normalization_from_items": "._data",
        "saturation_warnings": "._ensemble",
        "select_images": "._items",
        "train_ensemble": "._ensemble",
        "training_items": "._items",
        "validation_tiles": "._data",
        "write_model_card": "._ensemble",
    },
)
