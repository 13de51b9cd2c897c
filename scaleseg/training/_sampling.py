"""Class-balanced tile sampling (numpy kernels: no I/O, no dask, randomness only through ``rng``).

deepflash2 draws the centre of every training tile with a probability proportional to a per-pixel
weight that makes each class present in the label map equally likely to lie at the centre.
That is what :func:`sample_tile_centres` does; :func:`tile_slices` turns a centre into the window
to read plus the reflection padding needed where the window leaves the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_weights", "reflect_index", "sample_tile_centres", "tile_slices"]


def class_weights(label_counts: np.ndarray) -> np.ndarray:
    """Per-pixel sampling weights that give every present class the same total probability.

    Parameters
    ----------
    label_counts : (K,) array_like of int
        Number of pixels of each class ``0 .. K-1``.

    Returns
    -------
    (K,) ndarray of float64
        ``w[k] = 1 / (n_present * count[k])`` for classes with ``count[k] > 0``, else 0.
        Hence ``sum(w * count) == 1`` and each present class holds ``1 / n_present`` of the mass.

    Examples
    --------
    >>> class_weights(np.array([98, 2, 0])).round(4).tolist()
    [0.0051, 0.25, 0.0]
    """
    counts = np.asarray(label_counts)
    if counts.ndim != 1:
        raise ValueError(f"label_counts must be 1-D (K,), got shape {counts.shape}")
    if np.any(counts < 0):
        raise ValueError(f"label_counts must be non-negative, got {counts.tolist()}")
    counts = counts.astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if present.any():
        weights[present] = 1.0 / (present.sum() * counts[present])
    return weights


def sample_tile_centres(
    labels: np.ndarray,
    n: int,
    *,
    rng: np.random.Generator,
    n_classes: int,
    stride: int = 1,
) -> np.ndarray:
    """Draw ``n`` tile centres so that every class present is equally likely to be at the centre.

    Equivalent to drawing pixels with probability ``class_weights(counts)[labels]`` (deepflash2),
    done in two stages: a class uniformly among the classes present, then a pixel of that class
    uniformly. Memory is one boolean and one index array of the candidate pixels per class drawn.

    Parameters
    ----------
    labels : (Y, X) ndarray of int
        Semantic label map with values in ``0 .. n_classes-1`` (0 = background).
    n : int
        Number of centres.
    rng : numpy.random.Generator
        The only source of randomness; the result is a function of the generator state.
    n_classes : int
        Number of classes K (including background).
    stride : int
        Only every ``stride``-th pixel along each axis is a candidate (for big label maps).

    Returns
    -------
    (n, 2) ndarray of int64
        ``(y, x)`` centres in the coordinates of ``labels``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (Y, X), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if n < 0 or stride < 1 or n_classes < 1:
        raise ValueError(
            f"need n >= 0, stride >= 1, n_classes >= 1 (got {n}, {stride}, {n_classes})"
        )
    cand = labels[::stride, ::stride]
    if cand.size == 0:
        raise ValueError("labels is empty: no tile centres to sample")
    lo, hi = int(cand.min()), int(cand.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}], found values in [{lo}, {hi}]")
    counts = np.bincount(cand.ravel(), minlength=n_classes)
    present = np.flatnonzero(counts)
    classes = present[rng.integers(0, len(present), size=n)]
    flat = np.empty(n, dtype=np.int64)
    for k in present:
        where = classes == k
        m = int(where.sum())
        if m:
            idx = np.flatnonzero(cand.ravel() == k)
            flat[where] = idx[rng.integers(0, len(idx), size=m)]
    ys, xs = np.divmod(flat, cand.shape[1])
    return np.stack([ys, xs], axis=1).astype(np.int64) * stride


def tile_slices(
    centre: Sequence[int],
    tile_shape: Sequence[int],
    image_shape: Sequence[int],
) -> tuple[slice, slice, tuple[tuple[int, int], tuple[int, int]]]:
    """The in-image window of a tile centred on ``centre`` and the padding for the rest.

    The tile spans ``centre - tile // 2 .. centre - tile // 2 + tile`` along each axis.

    Parameters
    ----------
    centre : (2,) int
        ``(y, x)`` inside the image.
    tile_shape, image_shape : (2,) int
        ``(height, width)``.

    Returns
    -------
    ys, xs : slice
        The part of the tile inside the image.
    pad_widths : ((int, int), (int, int))
        ``((before_y, after_y), (before_x, after_x))``: pixels outside the image, to be filled
        by reflection about the image border. ``np.pad(window, pad_widths, mode="reflect")``
        equals that only while each pad is smaller than the in-image extent of the window; in
        general index the image with :func:`reflect_index` (it reflects the image, not the window).
    """
    out = []
    for c, t, s in zip(centre, tile_shape, image_shape, strict=True):
        c, t, s = int(c), int(t), int(s)
        if t < 1:
            raise ValueError(f"tile_shape must be positive, got {tuple(tile_shape)}")
        if not 0 <= c < s:
            raise ValueError(f"centre {tuple(centre)} lies outside the image {tuple(image_shape)}")
        start = c - t // 2
        stop = start + t
        out.append((slice(max(start, 0), min(stop, s)), (max(-start, 0), max(stop - s, 0))))
    (ys, py), (xs, px) = out
    return ys, xs, (py, px)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map coordinates outside ``0 .. size-1`` into the image by reflection.

    Same rule as ``np.pad(..., mode="reflect")`` (the edge pixel is not repeated), applied
    repeatedly for pads wider than the image.

    Parameters
    ----------
    index : ndarray of int
    size : int

    Returns
    -------
    ndarray of int64
        Values in ``0 .. size-1``.

    Examples
    --------
    >>> reflect_index(np.arange(-3, 6), 4).tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1]
    """
    index = np.asarray(index, dtype=np.int64)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)
