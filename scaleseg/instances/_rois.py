"""ImageJ / Fiji ROI export and import of instance label images (via ``roifile``).

Coordinate convention
---------------------
ImageJ places the *corner* of pixel ``(row, col)`` at ``(x, y) = (col, row)``: the pixel covers
``[col, col + 1) x [row, row + 1)``, its centre is at ``(col + 0.5, row + 0.5)``, and an area ROI holds
the pixels whose centres lie inside the polygon (a rectangle ``left=2, right=5`` holds columns 2-4).
scikit-image puts pixel *centres* at integer ``(row, col)``. Hence

    ``x = col + 0.5``,  ``y = row + 0.5``  (export)  and  ``col = x - 0.5``, ``row = y - 0.5``  (import).

:func:`export_rois` traces each object with :func:`skimage.measure.find_contours` at level 0.5 on the
zero-padded binary mask. That contour runs along pixel edges on straight runs and cuts each convex
corner diagonally between edge midpoints, so every object pixel centre lies strictly inside and every
background centre strictly outside: in Fiji the outline sits on the object's boundary, and
:func:`import_rois` rasterises it back to exactly the same pixels (objects without holes round-trip
exactly; see ``tests/test_rois.py``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import roifile
from roifile import ROI_SUBTYPE, ROI_TYPE, ImagejRoi
from skimage.draw import polygon as draw_polygon
from skimage.measure import approximate_polygon, find_contours

from scaleseg.instances._tables import instance_partials

__all__ = ["export_rois", "import_rois", "sanitize_roi_name"]

_AREA_TYPES = {ROI_TYPE.POLYGON, ROI_TYPE.RECT, ROI_TYPE.OVAL, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED}
_OPEN_LINE_TYPES = {ROI_TYPE.POLYLINE, ROI_TYPE.FREELINE}


def sanitize_roi_name(name: str) -> str:
    """Replace every character outside ``[A-Za-z0-9._-]`` by ``_``.

    Parameters
    ----------
    name : str
        Proposed ROI name.

    Returns
    -------
    str
        A name that is safe as a ZIP entry and a file name on every platform.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Outer contour ``(n, 2)`` of a binary mask as ``(row, col)``, mask-pixel-centre coordinates."""
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5, fully_connected="high")

    def enclosed_area(c):
        y, x = c[:, 0], c[:, 1]
        return abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))

    # the outer boundary encloses the largest area (holes and smaller pieces are dropped)
    outer = max(contours, key=enclosed_area)
    outer = approximate_polygon(outer, tolerance=0)  # drop collinear points; still closed
    return outer[:-1] - 1.0


def export_rois(
    labels,
    path: str | os.PathLike,
    *,
    scores: Mapping[int, float] | None = None,
    names_prefix: str = "",
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write one ImageJ polygon ROI per instance into a ROI ``.zip`` that Fiji's ROI Manager opens.

    Parameters
    ----------
    labels : (Y, X) ndarray of unsigned int
        Instance ids, 0 = background.
    path : str or path-like
        Output ``.zip`` file.
    scores : mapping of int to float, optional
        Score per label (e.g. the instance uncertainty). ROIs are then written by *decreasing* score
        (labels without a score, or with NaN, last) and named
        ``f"{names_prefix}{rank:04d}-u{score:.3f}-id{label}"``; without scores they are written by label
        and named ``f"{names_prefix}{rank:04d}-id{label}"``. Ranks start at 1; names are passed through
        :func:`sanitize_roi_name`.
    names_prefix : str, optional
        Prefix of every ROI name.
    overwrite : bool, optional
        Replace an existing file; otherwise an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    pandas.DataFrame
        One row per ROI in file order: ``label`` (uint64), ``rank`` (int64), ``score`` (float64, NaN
        without scores), ``name``, ``n_points``.

    Notes
    -----
    The ROI is the outer contour of the object (see the module docstring for the half-pixel
    convention): holes are filled, and an id made of several disconnected pieces keeps only the
    piece enclosing the largest area. One- and two-pixel objects get a 4- and 6-vertex polygon. The
    file is written to a temporary file and moved into place, so a failed export leaves no partial
    file.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

    part = instance_partials(labels)
    ids = part["label"].to_numpy(np.uint64)
    if scores is not None:
        score = np.array([scores.get(int(i), np.nan) for i in ids], dtype=np.float64)
        order = np.argsort(-score, kind="stable")  # NaN sorts last
    else:
        score = np.full(ids.size, np.nan)
        order = np.arange(ids.size)

    rois, rows = [], []
    for rank, i in enumerate(order, start=1):
        label = int(ids[i])
        y0, x0, y1, x1 = (int(part.at[i, c]) for c in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"))
        rc = _outline(labels[y0:y1, x0:x1] == labels.dtype.type(label)) + (y0, x0)
        xy = rc[:, ::-1] + 0.5  # ImageJ pixel-corner convention
        if scores is not None:
            name = f"{names_prefix}{rank:04d}-u{score[i]:.3f}-id{label}"
        else:
            name = f"{names_prefix}{rank:04d}-id{label}"
        name = sanitize_roi_name(name)
        roi = ImagejRoi.frompoints(xy.astype(np.float64), name=name)
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)
        rows.append((label, rank, score[i], name, len(xy)))

    from ..files import atomic_write

    atomic_write(path, lambda tmp: roifile.roiwrite(tmp, rois, mode="w"))
    table = pd.DataFrame(rows, columns=["label", "rank", "score", "name", "n_points"])
    return table.astype(
        {
            "label": "uint64",
            "rank": "int64",
            "score": "float64",
            "name": "object",
            "n_points": "int64",
        }
    )


def _paths_of(roi: ImagejRoi) -> tuple[list[np.ndarray], str]:
    """Closed ``(x, y)`` paths of an area ROI, or ``([], reason)`` when the ROI has no area."""
    rtype, subtype = roi.roitype, roi.subtype
    if subtype in (ROI_SUBTYPE.TEXT, ROI_SUBTYPE.IMAGE, ROI_SUBTYPE.ARROW):
        return [], f"{subtype.name.lower()} overlay"
    if roi.composite:
        return list(roi.coordinates(multi=True)), ""
    if rtype in _AREA_TYPES:
        return [roi.coordinates()], ""
    if rtype in _OPEN_LINE_TYPES:
        xy = roi.coordinates()
        if len(xy) >= 3 and np.allclose(xy[0], xy[-1]):
            return [xy], ""
        return [], f"open {rtype.name.lower()}"
    return [], f"{rtype.name.lower()} ROI has no area"


def _rasterise(paths: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie inside the paths (even-odd rule across sub-paths)."""
    if len(paths) == 1:
        xy = np.asarray(paths[0], dtype=np.float64)
        return draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask = np.zeros(shape, bool)
    for xy in paths:
        xy = np.asarray(xy, dtype=np.float64)
        if len(xy) >= 3:
            rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
            mask[rr, cc] ^= True
    return np.nonzero(mask)


def import_rois(path: str | os.PathLike, shape: tuple[int, int]) -> tuple[np.ndarray, pd.DataFrame]:
    """Rasterise the ROIs of an ImageJ ``.zip`` (or ``.roi``) file into a label image.

    Parameters
    ----------
    path : str or path-like
        ROI ``.zip`` (Fiji ROI Manager "Save"), single ``.roi``, or ImageJ TIFF with overlays.
    shape : (2,) tuple of int
        ``(Y, X)`` shape of the image the ROIs belong to.

    Returns
    -------
    labels : (Y, X) ndarray of uint32
        Area ROIs numbered 1..N in file order. Where ROIs overlap the *later* ROI wins; a pixel
        belongs to a ROI when its centre lies inside the outline (ImageJ's rule; see the module
        docstring).
    table : pandas.DataFrame
        One row per ROI in file order: ``name``, ``label`` (uint32, 0 when skipped), ``roi_type``,
        ``n_pixels`` (pixels it holds in ``labels``, after overlaps), ``skipped`` (bool) and
        ``reason``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file cannot be read as ImageJ ROIs, or ``shape`` is not two positive ints.

    Warns
    -----
    UserWarning
        When ROIs without area (points, straight / open lines, angles, text) are skipped.

    Notes
    -----
    Polygon, freehand, traced, rectangle and oval ROIs are supported (ovals through roifile's polygon
    approximation), as are polylines / freehand lines whose last point equals the first. Composite
    (shape) ROIs are filled with the even-odd rule, so their holes stay empty. Stack positions
    (c, z, t) are ignored.
    """
    path = Path(path)
    if len(shape) != 2 or min(int(s) for s in shape) <= 0:
        raise ValueError(f"shape must be two positive ints (Y, X), got {shape!r}")
    shape = (int(shape[0]), int(shape[1]))
    if not path.is_file():
        raise FileNotFoundError(f"no ROI file at {path}")
    try:
        rois = roifile.roiread(path)
    except Exception as exc:  # roifile/zipfile raise many types on damaged files
        raise ValueError(
            f"{path}: not a readable ImageJ ROI file ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(rois, ImagejRoi):
        rois = [rois]

    labels = np.zeros(shape, np.uint32)
    rows, skipped, n = [], [], 0
    for roi in rois:
        try:
            paths, reason = _paths_of(roi)
        except Exception as exc:  # malformed coordinates in an otherwise readable file
            raise ValueError(f"{path}: cannot read ROI {roi.name!r} ({exc})") from exc
        if paths:
            n += 1
            rr, cc = _rasterise(paths, shape)
            labels[rr, cc] = n
        else:
            skipped.append(f"{roi.name} ({reason})")
        rows.append((roi.name, n if paths else 0, roi.roitype.name.lower(), not paths, reason))
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} ROI(s) without area: {', '.join(skipped)}",
            UserWarning,
            stacklevel=2,
        )
    table = pd.DataFrame(rows, columns=["name", "label", "roi_type", "skipped", "reason"])
    table = table.astype({"name": "object", "label": "uint32", "skipped": "bool"})
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    table.insert(3, "n_pixels", counts[table["label"].to_numpy(np.int64)].astype(np.int64))
    table.loc[table["skipped"], "n_pixels"] = 0
    return labels, table
