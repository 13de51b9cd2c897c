"""Ensemble training: class-balanced tiles read lazily from OME-Zarr, augmentation, the
deepflash2 fine-tune policy per fold, and one Dask task per fold."""

from ..models._normalize import Normalization, channel_stats
from ._data import TileDataset, TrainItem, normalization_from_items, validation_tiles
from ._ensemble import ENSEMBLE_FILE, finished_folds, kfold_splits, train_ensemble, write_model_card
from ._export import export_ensemble
from ._fit import FoldSpec, fit_fold
from ._items import items_from_gt, select_images, training_items

__all__ = [
    "ENSEMBLE_FILE",
    "FoldSpec",
    "Normalization",
    "TileDataset",
    "TrainItem",
    "channel_stats",
    "export_ensemble",
    "finished_folds",
    "fit_fold",
    "items_from_gt",
    "kfold_splits",
    "normalization_from_items",
    "select_images",
    "train_ensemble",
    "training_items",
    "validation_tiles",
    "write_model_card",
]
