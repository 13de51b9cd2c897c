"""Instance separation methods (kernels): semantic prediction (+ flows) in, instance labels out.

* ``components`` -- connected components per class (objects that never touch).
* ``watershed`` -- distance-transform watershed per class, the no-model fallback.
* ``flows`` -- cellpose mask construction from flows predicted by the ensemble itself
  (two extra outputs), with the ensemble foreground as the cell-probability mask.
* ``cellpose`` -- deepflash2's method: a pretrained cellpose model (local file or cellpose's
  model cache; never downloaded) turns the ensemble's class probability map into flows, then
  cellpose's mask construction runs with the ensemble foreground as the cell-probability mask.

All return ``(labels uint32 (Y, X), info dict)``; labels are unique across classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "METHODS",
    "components_instances",
    "watershed_instances",
    "flows_instances",
    "cellpose_instances",
    "resolve_cellpose_model",
    "CellposeModelMissing",
]

METHODS = ("components", "watershed", "flows", "cellpose")
CELLPOSE_FLOW_SCALE = 5.0  # cellpose network flows = 5 x labels_to_flows unit flows


class CellposeModelMissing(FileNotFoundError):
    """No pretrained cellpose model is available locally."""


def _classes(semantic: np.ndarray, classes) -> list[int]:
    present = [int(c) for c in np.unique(semantic) if c != 0]
    return present if classes is None else [c for c in classes if c in present]


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 0 or labels.max() == 0:
        return labels
    counts = np.bincount(labels.ravel())
    small = counts < min_size
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    return lut[labels]


def _per_class(semantic, classes, fn) -> np.ndarray:
    out = np.zeros(semantic.shape, dtype=np.uint32)
    n = 0
    for c in _classes(semantic, classes):
        lab = fn(semantic == c, c)
        m = lab > 0
        out[m] = lab[m].astype(np.uint32) + n
        n = int(out.max())
    return out


def components_instances(
    semantic: np.ndarray, *, min_size: int = 0, classes=None
) -> tuple[np.ndarray, dict]:
    """Connected components (4-connectivity) of every foreground class."""

    def fn(mask, _c):
        return ndi.label(mask)[0]

    labels = _per_class(semantic, classes, fn)
    return _relabel_sequential(_remove_small(labels, min_size)), {}


def watershed_instances(
    semantic: np.ndarray,
    *,
    min_size: int = 0,
    min_distance: int = 5,
    classes=None,
) -> tuple[np.ndarray, dict]:
    """Distance-transform watershed of each foreground class.

    Markers are the local maxima of the Euclidean distance transform at least ``min_distance``
    pixels apart (one per connected component at least), flooded on the negative distance
    within the class mask.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    def fn(mask, _c):
        comps, n = ndi.label(mask)
        if n == 0:
            return comps
        dist = ndi.distance_transform_edt(mask)
        peaks = peak_local_max(
            dist, min_distance=max(1, min_distance), labels=comps, exclude_border=False
        )
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # every component gets a marker, even a flat one without a strict maximum
        missing = np.setdiff1d(np.arange(1, n + 1), np.unique(comps[markers > 0]))
        if missing.size:
            centres = ndi.maximum_position(dist, comps, missing)
            for k, pos in enumerate(centres, start=len(peaks) + 1):
                markers[pos] = k
        return watershed(-dist, markers, mask=mask)

    labels = _per_class(semantic, classes, fn)
    return _relabel_sequential(_remove_small(labels, min_size)), {}


def _compute_masks(flows, cellprob, *, cellprob_threshold, flow_threshold, min_size, niter):
    import warnings

    import torch
    from cellpose.dynamics import compute_masks

    with warnings.catch_warnings():  # torch's note about sparse invariant checks, inside cellpose
        warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
        masks = compute_masks(
            np.asarray(flows, dtype=np.float32),
            np.asarray(cellprob, dtype=np.float32),
            niter=niter,
            cellprob_threshold=cellprob_threshold,
            flow_threshold=flow_threshold,
            min_size=min_size if min_size > 0 else -1,
            device=torch.device("cpu"),
        )
    masks = masks[0] if isinstance(masks, tuple) else masks
    return np.asarray(masks, dtype=np.uint32)


def flows_instances(
    semantic: np.ndarray,
    flows: np.ndarray,
    *,
    min_size: int = 15,
    flow_threshold: float = 0.4,
    niter: int = 200,
    classes=None,
) -> tuple[np.ndarray, dict]:
    """Cellpose mask construction from ensemble-predicted flows.

    Parameters
    ----------
    semantic : (Y, X) ndarray of uint
        ŷ of the ensemble; each class's mask is the cell-probability mask.
    flows : (2, Y, X) ndarray of float
        Ensemble-mean flows ``(dy, dx)`` in the convention of the training targets
        (``cellpose.dynamics.labels_to_flows``: unit vectors). Cellpose networks output 5x
        these, which its mask construction and flow-error check expect, so they are scaled
        by :data:`CELLPOSE_FLOW_SCALE` here.
    """

    def fn(mask, _c):
        # cellprob > 0 exactly on the class mask
        cellprob = np.where(mask, 1.0, -1.0)
        return _compute_masks(
            CELLPOSE_FLOW_SCALE * flows * mask,
            cellprob,
            cellprob_threshold=0.0,
            flow_threshold=flow_threshold,
            min_size=min_size,
            niter=niter,
        )

    labels = _per_class(semantic, classes, fn)
    return _relabel_sequential(labels), {}


def resolve_cellpose_model(model: str | None) -> Path:
    """A local cellpose model file: a path, or a name in cellpose's model cache.

    Raises
    ------
    CellposeModelMissing
        With where it looked; nothing is ever downloaded.
    """
    from cellpose.models import MODEL_DIR

    looked = []
    if model:
        p = Path(model).expanduser()
        looked.append(str(p))
        if p.is_file():
            return p
        looked.append(str(MODEL_DIR / model))
        if (MODEL_DIR / model).is_file():
            return MODEL_DIR / model
    else:
        for name in ("cpsam_v2", "cpsam"):
            looked.append(str(MODEL_DIR / name))
            if (MODEL_DIR / name).is_file():
                return MODEL_DIR / name
    raise CellposeModelMissing(
        "no local cellpose model (looked in: " + ", ".join(looked) + "). The 'cellpose' method "
        "needs a pretrained cellpose >= 4 model file: pass its path (instances.cellpose_model / "
        "--cellpose-model), put it in cellpose's cache ($CELLPOSE_LOCAL_MODELS_PATH or "
        "~/.cellpose/models), or use the 'flows' or 'watershed' method, which need no "
        "pretrained model. Nothing is downloaded."
    )


def cellpose_instances(
    semantic: np.ndarray,
    probabilities: np.ndarray,
    *,
    model: str | None = None,
    diameter: float | None = None,
    min_size: int = 15,
    flow_threshold: float = 0.4,
    classes=None,
    device=None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """deepflash2's cellpose step on the ensemble's probability maps, per class.

    Reports ``cellpose_removed_pixels`` per class: foreground pixels of the ensemble that
    cellpose assigned to no instance.
    """
    from cellpose.models import CellposeModel

    path = resolve_cellpose_model(model)
    cp = CellposeModel(pretrained_model=str(path), device=device)
    removed: dict[str, int] = {}

    def fn(mask, c):
        prob = np.clip(probabilities[c], 0, 1).astype(np.float32)
        x = np.stack([prob, prob, prob], axis=-1)
        _, flows, _ = cp.eval(
            x, channel_axis=-1, diameter=diameter, compute_masks=False, normalize=True
        )
        dp = flows[1]
        lab = _compute_masks(
            dp * mask,
            np.where(mask, 1.0, -1.0),
            cellprob_threshold=0.0,
            flow_threshold=flow_threshold,
            min_size=min_size,
            niter=200,
        )
        removed[f"class_{c}"] = int(np.count_nonzero(mask & (lab == 0)))
        return lab

    labels = _per_class(semantic, classes, fn)
    return _relabel_sequential(labels), {"cellpose_removed_pixels": removed, "model": str(path)}
