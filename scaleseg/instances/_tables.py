"""Per-instance measurement tables, exact when an image is processed in blocks.

A block yields *partial sums* per instance id (:func:`instance_partials`); partials of all blocks are
reduced by :func:`combine_instance_partials` into one row per instance with the columns of
``instances.parquet`` (:data:`INSTANCE_COLUMNS`). Integer columns (area, bounding box, class counts)
are exact whatever the blocking; float columns (centroid, means) agree to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "INSTANCE_COLUMNS",
    "combine_instance_partials",
    "instance_partials",
    "instance_table",
]

#: Columns of an instance table, in order. ``mean_intensity_<channel>`` columns (one per image channel,
#: only when an image was given) sit between ``bbox_x1`` and ``mean_uncertainty``.
INSTANCE_COLUMNS = [
    "label",
    "class",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "mean_uncertainty",
    "touches_border",
]

_BBOX = ["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]
_INT_SUMS = ["count", "sum_y", "sum_x"]


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


def instance_partials(
    labels,
    *,
    offset: Sequence[int] = (0, 0),
    image_shape: Sequence[int] | None = None,
    semantic=None,
    image=None,
    uncertainty=None,
    n_classes: int | None = None,
) -> pd.DataFrame:
    """Partial sums per instance id for one block of an image.

    Parameters
    ----------
    labels : (h, w) ndarray of uint32 or uint64
        Instance ids of the block, 0 = background.
    offset : (2,) sequence of int, optional
        Global ``(y, x)`` position of the block's first pixel in the image.
    image_shape : (2,) sequence of int, optional
        Global ``(Y, X)`` shape of the whole image, used for ``touches_border``. Required when
        ``offset`` is not ``(0, 0)``; otherwise defaults to ``labels.shape``.
    semantic : (h, w) ndarray of uint8 or uint16, optional
        Semantic classes (0 = background) of the block.
    image : (C, h, w) ndarray, optional
        Intensities of the block.
    uncertainty : (h, w) ndarray of float, optional
        Pixel uncertainty map of the block.
    n_classes : int, optional
        Number of semantic classes; defaults to ``semantic.max() + 1`` of this block (parts with
        different class counts still combine).

    Returns
    -------
    pandas.DataFrame
        One row per id present, sorted by id, with ``label`` (uint64), ``count``, ``sum_y``, ``sum_x``
        (int64, global coordinates), ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1`` (int64, global,
        ``*1`` exclusive), ``sum_intensity_<c>`` (float64, ``c`` = channel index, when ``image`` is given),
        ``sum_uncertainty`` (float64, when ``uncertainty`` is given), ``class_count_<k>`` (int64, when
        ``semantic`` is given) and ``touches_border`` (bool: a pixel lies on the first or last row or
        column of the image).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {labels.min()}")
    h, w = labels.shape
    oy, ox = (int(v) for v in offset)
    if image_shape is None:
        if (oy, ox) != (0, 0):
            raise ValueError(f"image_shape is required with offset={tuple(offset)}")
        image_shape = (h, w)
    ny, nx = (int(v) for v in image_shape)
    if oy < 0 or ox < 0 or oy + h > ny or ox + w > nx:
        raise ValueError(
            f"block {labels.shape} at offset {(oy, ox)} exceeds image_shape {(ny, nx)}"
        )
    for name, arr in (("semantic", semantic), ("uncertainty", uncertainty)):
        if arr is not None and np.shape(arr) != (h, w):
            raise ValueError(f"{name} shape {np.shape(arr)} != labels shape {(h, w)}")
    if image is not None and (np.ndim(image) != 3 or np.shape(image)[1:] != (h, w)):
        raise ValueError(f"image must be (C, {h}, {w}), got {np.shape(image)}")

    flat = labels.ravel()
    pix = np.flatnonzero(flat)
    lab = flat[pix].astype(np.uint64)
    order = np.argsort(lab, kind="stable")
    pix, lab = pix[order], lab[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if lab.size else np.zeros(0, np.intp)
    inverse = np.cumsum(np.r_[False, lab[1:] != lab[:-1]]) if lab.size else np.zeros(0, np.intp)
    n = starts.size
    ys = (pix // w).astype(np.int64) + oy
    xs = (pix % w).astype(np.int64) + ox

    def reduce(ufunc, values, dtype):
        if n == 0:
            return np.zeros(0, dtype)
        return ufunc.reduceat(values, starts).astype(dtype, copy=False)

    out = {
        "label": lab[starts] if n else np.zeros(0, np.uint64),
        "count": np.diff(np.r_[starts, lab.size]).astype(np.int64),
        "sum_y": reduce(np.add, ys, np.int64),
        "sum_x": reduce(np.add, xs, np.int64),
        "bbox_y0": reduce(np.minimum, ys, np.int64),
        "bbox_x0": reduce(np.minimum, xs, np.int64),
        "bbox_y1": reduce(np.maximum, ys, np.int64) + 1,
        "bbox_x1": reduce(np.maximum, xs, np.int64) + 1,
    }
    if image is not None:
        img = np.asarray(image).reshape(np.shape(image)[0], -1)
        for c in range(img.shape[0]):
            vals = img[c][pix].astype(np.float64)
            out[f"sum_intensity_{c}"] = np.bincount(inverse, weights=vals, minlength=n)
    if uncertainty is not None:
        vals = np.asarray(uncertainty).ravel()[pix].astype(np.float64)
        out["sum_uncertainty"] = np.bincount(inverse, weights=vals, minlength=n)
    if semantic is not None:
        sem = np.asarray(semantic).ravel()[pix].astype(np.int64)
        k = int(n_classes) if n_classes is not None else int(np.max(semantic, initial=0)) + 1
        if sem.size and (sem.min() < 0 or sem.max() >= k):
            raise ValueError(
                f"semantic values must lie in [0, {k}), got [{sem.min()}, {sem.max()}]"
            )
        counts = np.bincount(inverse * k + sem, minlength=n * k).reshape(n, k)
        for j in range(k):
            out[f"class_count_{j}"] = counts[:, j].astype(np.int64)
    border = (ys == 0) | (ys == ny - 1) | (xs == 0) | (xs == nx - 1)
    out["touches_border"] = np.bincount(inverse, weights=border, minlength=n) > 0
    return pd.DataFrame(out)


def combine_instance_partials(
    parts: Sequence[pd.DataFrame], *, channel_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Reduce per-block partials (from :func:`instance_partials`) to one row per instance.

    Rows with the same ``label`` (an instance cut by block borders) are merged: sums add, the bounding
    box takes min/max, ``touches_border`` is true if any part says so.

    Parameters
    ----------
    parts : sequence of pandas.DataFrame
        Partials of the blocks of one image; all must agree on having intensity / uncertainty sums.
        Missing ``class_count_<k>`` columns count as 0.
    channel_names : sequence of str, optional
        Names of the intensity channels, used as ``mean_intensity_<name>``; defaults to the channel
        index.

    Returns
    -------
    pandas.DataFrame
        :data:`INSTANCE_COLUMNS` (plus ``mean_intensity_<name>`` after ``bbox_x1``), sorted by label.
        ``label`` uint64, ``class`` uint16, ``area`` and ``bbox_*`` int64, centroids and means float64,
        ``touches_border`` bool. ``class`` is the most frequent *foreground* semantic class of the
        instance's pixels (ties: the smaller class), ignoring background 0 unless the instance lies
        entirely on background; 0 also when no semantic map was given. ``mean_uncertainty`` is the mean
        pixel uncertainty over the instance (the instance uncertainty score), NaN without an
        uncertainty map.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        n_channels = len(channel_names) if channel_names is not None else 0
        return _empty(_output_dtypes(_channel_columns(n_channels, channel_names)))

    def channels(p):
        return sorted(
            (c for c in p.columns if c.startswith("sum_intensity_")), key=lambda c: int(c[14:])
        )

    chans = channels(parts[0])
    has_u = "sum_uncertainty" in parts[0]
    for i, p in enumerate(parts):
        if channels(p) != chans or ("sum_uncertainty" in p) != has_u:
            raise ValueError(
                f"partial {i} has different intensity/uncertainty columns than partial 0"
            )
    class_cols = sorted(
        {c for p in parts for c in p.columns if c.startswith("class_count_")},
        key=lambda c: int(c[12:]),
    )
    df = pd.concat(parts, ignore_index=True)
    df[class_cols] = df[class_cols].fillna(0).astype(np.int64)
    g = df.groupby("label", sort=True)
    sums = g[_INT_SUMS + class_cols + chans + (["sum_uncertainty"] if has_u else [])].sum()
    lo = g[_BBOX[:2]].min()
    hi = g[_BBOX[2:]].max()
    touches = g["touches_border"].any()

    area = sums["count"].to_numpy(np.int64)
    out = {
        "label": sums.index.to_numpy().astype(np.uint64),
        "class": _majority_class(sums[class_cols].to_numpy(np.int64), class_cols),
        "area": area,
        "centroid_y": sums["sum_y"].to_numpy(np.float64) / area,
        "centroid_x": sums["sum_x"].to_numpy(np.float64) / area,
    }
    for col in _BBOX:
        out[col] = (lo[col] if col in lo else hi[col]).to_numpy(np.int64)
    mean_cols = _channel_columns(len(chans), channel_names)
    for name, col in zip(mean_cols, chans, strict=True):
        out[name] = sums[col].to_numpy(np.float64) / area
    out["mean_uncertainty"] = (
        sums["sum_uncertainty"].to_numpy(np.float64) / area if has_u else np.full(area.size, np.nan)
    )
    out["touches_border"] = touches.to_numpy(bool)
    return pd.DataFrame(out).astype(_output_dtypes(mean_cols))


def instance_table(
    labels,
    *,
    image=None,
    uncertainty=None,
    semantic=None,
    channel_names: Sequence[str] | None = None,
    n_classes: int | None = None,
) -> pd.DataFrame:
    """Instance table of a whole image (one block).

    Parameters
    ----------
    labels : (Y, X) ndarray of uint32 or uint64
        Instance ids, 0 = background.
    image : (C, Y, X) ndarray, optional
        Intensities, averaged per instance into ``mean_intensity_<name>``.
    uncertainty : (Y, X) ndarray of float, optional
        Pixel uncertainty, averaged per instance into ``mean_uncertainty``.
    semantic : (Y, X) ndarray of uint8 or uint16, optional
        Semantic classes, 0 = background; the majority foreground class is the instance's ``class``.
    channel_names : sequence of str, optional
        Channel names for the intensity columns (default: channel index).
    n_classes : int, optional
        Number of semantic classes.

    Returns
    -------
    pandas.DataFrame
        See :func:`combine_instance_partials`.
    """
    part = instance_partials(
        labels, semantic=semantic, image=image, uncertainty=uncertainty, n_classes=n_classes
    )
    n_channels = 0 if image is None else np.shape(image)[0]
    if not len(part):  # keep the intensity columns of an empty table
        return _empty(_output_dtypes(_channel_columns(n_channels, channel_names)))
    return combine_instance_partials([part], channel_names=channel_names)


def _channel_columns(n_channels: int, channel_names: Sequence[str] | None) -> list[str]:
    if channel_names is None:
        channel_names = [str(c) for c in range(n_channels)]
    if len(channel_names) != n_channels:
        raise ValueError(f"{len(channel_names)} channel_names for {n_channels} channels")
    return [f"mean_intensity_{name}" for name in channel_names]


def _output_dtypes(mean_cols: list[str]) -> dict[str, str]:
    dtypes = {"label": "uint64", "class": "uint16", "area": "int64"}
    dtypes |= {"centroid_y": "float64", "centroid_x": "float64"}
    dtypes |= dict.fromkeys(_BBOX, "int64") | dict.fromkeys(mean_cols, "float64")
    return dtypes | {"mean_uncertainty": "float64", "touches_border": "bool"}


def _majority_class(counts: np.ndarray, class_cols: list[str]) -> np.ndarray:
    if not class_cols:
        return np.zeros(counts.shape[0], np.uint16)
    classes = np.array([int(c[12:]) for c in class_cols])
    fg = counts.copy()
    fg[:, classes == 0] = -1  # background only wins when there is no foreground pixel
    best = classes[np.argmax(fg, axis=1)]
    best[fg.max(axis=1) <= 0] = 0
    return best.astype(np.uint16)
