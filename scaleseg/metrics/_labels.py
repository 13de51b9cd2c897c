"""Instance label helpers: compact indexing, small-object removal, labelling."""

from __future__ import annotations

import numpy as np

from ._validate import as_label_array

__all__ = ["label_instances", "remove_small_instances"]

# A lookup table indexed by label value is used while the largest label stays
# below this many entries (or the pixel count); beyond it, np.unique is used.
_LUT_LIMIT = 1 << 24


def _compact(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index the objects of a flat label array.

    Parameters
    ----------
    flat : (P,) ndarray of int
        Non-negative labels, ``0`` = background; labels need not be consecutive.

    Returns
    -------
    ids : (N,) ndarray
        Sorted non-zero labels present, in the input dtype.
    index : (P,) ndarray of intp
        ``0`` for background pixels, ``i + 1`` for pixels of ``ids[i]``.
    areas : (N,) ndarray of int64
        Pixel count of each object.
    """
    vmax = int(flat.max()) if flat.size else 0
    if vmax <= max(_LUT_LIMIT, 2 * flat.size):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=vmax + 1)
        present = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(vmax + 1, dtype=np.intp)
        lut[present] = np.arange(1, present.size + 1)
        return present.astype(flat.dtype), lut[flat], counts[present].astype(np.int64)
    ids, index, areas = np.unique(flat, return_inverse=True, return_counts=True)
    index = index.astype(np.intp, copy=False).reshape(-1)
    if ids[0] != 0:  # no background pixel at all: shift so that 0 stays free
        return ids, index + 1, areas.astype(np.int64)
    return ids[1:], index, areas[1:].astype(np.int64)


def remove_small_instances(labels, *, min_size: int, relabel: bool = False) -> np.ndarray:
    """Remove objects with fewer than ``min_size`` pixels.

    Parameters
    ----------
    labels : (Y, X) ndarray of int
        Instance label map (any number of dimensions), ``0`` = background.
        Labels need not be consecutive.
    min_size : int
        Objects with an area (pixel count) strictly below ``min_size`` are set
        to background; objects of exactly ``min_size`` pixels are kept (the
        deepflash2 / scikit-image ``remove_small_objects(min_size=...)`` rule).
        ``0`` or ``1`` keeps everything.
    relabel : bool, optional
        ``False`` (default): surviving objects keep their label values, so ids
        still match other tables. ``True``: survivors are renumbered
        ``1..N`` in order of their original label value.

    Returns
    -------
    ndarray
        A new array of the input shape and dtype.
    """
    arr = as_label_array(labels, name="labels")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    flat = arr.ravel()
    ids, index, areas = _compact(flat)
    keep = areas >= min_size
    if relabel:
        new = np.zeros(ids.size + 1, dtype=arr.dtype)
        new[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=arr.dtype)
    else:
        new = np.zeros(ids.size + 1, dtype=arr.dtype)
        new[1:] = np.where(keep, ids, 0)
    return new[index].reshape(arr.shape)


def label_instances(
    semantic,
    *,
    min_size: int = 0,
    connectivity: int = 1,
    classes=None,
) -> np.ndarray:
    """Instances as connected components of a semantic label map.

    Parameters
    ----------
    semantic : (Y, X) ndarray of int
        Semantic label map (any number of dimensions), ``0`` = background.
        A binary or boolean mask gives the components of the foreground.
    min_size : int, optional
        Components with fewer pixels are dropped (see
        :func:`remove_small_instances`).
    connectivity : int, optional
        Maximum number of orthogonal steps between neighbours, as in
        :func:`skimage.measure.label`: ``1`` = 4-connectivity in 2-D,
        ``2`` = 8-connectivity.
    classes : sequence of int, optional
        Class values to label; default all non-zero values present. Each
        class is labelled on its own, so touching objects of different classes
        stay separate instances.

    Returns
    -------
    (Y, X) ndarray of uint32
        Instance labels ``1..N``, consecutive, numbered class by class in
        ascending class order, then in raster order of each component's first
        pixel; ``0`` = background.
    """
    from scipy import ndimage as ndi

    sem = as_label_array(semantic, name="semantic")
    if not 1 <= connectivity <= max(sem.ndim, 1):
        raise ValueError(f"connectivity must be in 1..{sem.ndim}, got {connectivity}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    structure = ndi.generate_binary_structure(sem.ndim, connectivity)
    if classes is None:
        ids, _, _ = _compact(sem.ravel())
        classes = ids.tolist()
    else:
        classes = sorted({int(c) for c in classes} - {0})
    out = np.zeros(sem.shape, dtype=np.uint32)
    offset = 0
    for c in classes:
        comp, n = ndi.label(sem == c, structure=structure, output=np.uint32)
        if n:
            fg = comp > 0
            out[fg] = comp[fg] + np.uint32(offset)
            offset += n
    if min_size > 1 and offset:
        out = remove_small_instances(out, min_size=min_size, relabel=True)
    return out
