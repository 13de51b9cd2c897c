"""Thumbnails of an image, its prediction and its uncertainty map, read from pyramid levels.

Kernels (:func:`pick_level`, :func:`shrink`, :func:`resize_nearest`, :func:`to_display`,
:func:`outline`) work on numpy arrays; :func:`read_thumbnail` reads one coarse level of each
OME-Zarr array (never full resolution when the array has a pyramid), so a report over
thousands of images reads a few kilobytes per image. :func:`render_thumbnail` draws the three
panels with matplotlib's object API (Agg, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "outline",
    "pick_level",
    "read_thumbnail",
    "render_thumbnail",
    "resize_nearest",
    "shrink",
    "to_display",
]


def pick_level(shapes: Sequence[Sequence[int]], *, min_side: int = 96) -> int:
    """The coarsest pyramid level whose larger side is still at least ``min_side``.

    Parameters
    ----------
    shapes : sequence of (Y, X)
        Level shapes, full resolution first, each level smaller than the one before.
    min_side : int
        Smallest acceptable larger side of a thumbnail source.

    Returns
    -------
    int
        A level index, never ``0`` (full resolution) when the array has a pyramid: level 1
        is used even when it is smaller than ``min_side``.
    """
    if not shapes:
        raise ValueError("no pyramid levels")
    sides = [max(int(s) for s in shape[-2:]) for shape in shapes]
    ok = [i for i, side in enumerate(sides) if side >= min_side]
    level = ok[-1] if ok else 0  # all too small: the largest usable
    return max(level, min(1, len(sides) - 1))


def shrink(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Stride the last two axes by one integer step so the larger side is <= ``max_side``.

    Works on numpy and dask arrays alike (a dask array stays lazy).
    """
    step = max(1, -(-max(arr.shape[-2:]) // max_side))
    return arr[..., ::step, ::step]


def resize_nearest(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes to ``shape`` (labels stay valid)."""
    y, x = arr.shape[-2:]
    iy = np.minimum((np.arange(shape[0]) + 0.5) * y / shape[0], y - 1).astype(np.intp)
    ix = np.minimum((np.arange(shape[1]) + 0.5) * x / shape[1], x - 1).astype(np.intp)
    return arr[..., iy[:, None], ix[None, :]]


def to_display(image: np.ndarray, *, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """A ``(C, Y, X)`` image as ``(Y, X)`` gray or ``(Y, X, 3)`` RGB float32 in [0, 1].

    Each channel is stretched between its ``low`` and ``high`` percentiles (non-finite pixels
    ignored). One channel: gray; two: red and green; three or more: the first three as RGB.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"expected a (C, Y, X) image, got shape {img.shape}")
    out = np.zeros(img.shape, np.float32)
    for c in range(img.shape[0]):
        ch = img[c]
        fin = ch[np.isfinite(ch)]
        if not fin.size:
            continue
        lo, hi = np.percentile(fin, [low, high])
        if hi <= lo:
            hi = lo + 1.0
        out[c] = np.clip((np.nan_to_num(ch, nan=lo) - lo) / (hi - lo), 0, 1)
    if img.shape[0] == 1:
        return out[0]
    rgb = np.zeros((3, *img.shape[1:]), np.float32)
    rgb[: min(3, img.shape[0])] = out[:3]
    return np.moveaxis(rgb, 0, -1)


def outline(labels: np.ndarray) -> np.ndarray:
    """Boolean ``(Y, X)`` mask of pixels whose right or lower neighbour has another label."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    dy = lab[1:, :] != lab[:-1, :]
    dx = lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (lab != 0) if lab.any() else edge


def _level_shapes(url: str) -> list[tuple[int, ...]]:
    from ..io import image_info

    return [tuple(lv["shape"]) for lv in image_info(url)["levels"]]


def _read_level(url: str, *, min_side: int, max_side: int, label: str | None = None):
    from ..io import join_url, open_image, open_labels, to_cyx

    src = join_url(url, "labels", label) if label else url
    level = pick_level(_level_shapes(src), min_side=min_side)
    if label:
        arr = open_labels(url, label, level=level)
    else:
        arr = to_cyx(open_image(url, level=level))
    return np.asarray(shrink(arr.data, max_side)), level  # strided lazily, then read


def read_thumbnail(
    image_url: str | None,
    output_url: str | None,
    *,
    min_side: int = 96,
    max_side: int = 256,
) -> dict[str, Any]:
    """Read the thumbnail arrays of one predicted image from coarse pyramid levels.

    Parameters
    ----------
    image_url : str or None
        The input OME-Zarr image (the images table's ``path``); ``None``: no image panel.
    output_url : str or None
        The prediction image (``output``): root = uncertainty, ``labels/semantic``.
    min_side, max_side : int
        See :func:`pick_level`; the result is strided to at most ``max_side`` pixels.

    Returns
    -------
    dict
        ``image`` ((Y, X) or (Y, X, 3) float32 in [0, 1], or None), ``labels`` ((Y, X) ints or
        None), ``u`` ((Y, X) float32 or None), all resized to one shape, and ``levels``
        (the pyramid level read for each). Missing pieces are None with ``errors`` saying why.
    """
    out: dict[str, Any] = {"image": None, "labels": None, "u": None, "levels": {}, "errors": []}
    kw = {"min_side": min_side, "max_side": max_side}
    parts = []
    if image_url:
        parts.append(("image", image_url, None))
    if output_url:
        parts += [("u", output_url, None), ("labels", output_url, "semantic")]
    for key, url, label in parts:
        try:
            arr, level = _read_level(url, label=label, **kw)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            out["errors"].append(f"{key}: {exc}")
            continue
        out["levels"][key] = level
        if key == "image":
            out[key] = to_display(arr)
        elif key == "u":
            out[key] = np.asarray(arr[0], np.float32)
        else:
            out[key] = arr
    shapes = [out[k].shape[:2] for k in ("image", "u", "labels") if out[k] is not None]
    if shapes:
        target = max(shapes, key=lambda s: s[0] * s[1])
        for k in ("image", "u", "labels"):
            a = out[k]
            if a is None or a.shape[:2] == target:
                continue
            if a.ndim == 3:  # (Y, X, 3) RGB
                out[k] = np.moveaxis(resize_nearest(np.moveaxis(a, -1, 0), target), 0, -1)
            else:
                out[k] = resize_nearest(a, target)
    return out


def render_thumbnail(
    thumb: dict[str, Any], path: str | Path, *, title: str = "", dpi: int = 80
) -> Path:
    """Draw image, image with prediction outline, and the uncertainty map side by side.

    Parameters
    ----------
    thumb : dict
        From :func:`read_thumbnail`.
    path : path
        The PNG to write.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.8))
    axes = fig.subplots(1, 3)
    img, lab, u = thumb.get("image"), thumb.get("labels"), thumb.get("u")
    base = img if img is not None else (u if u is not None else None)
    if img is not None:
        axes[0].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if base is not None:
        shown = np.array(base if base.ndim == 3 else np.stack([base] * 3, -1), dtype=np.float32)
        if lab is not None:
            shown[outline(lab)] = (1.0, 0.2, 0.1)
        axes[1].imshow(shown, interpolation="nearest")
    if u is not None:
        im = axes[2].imshow(u, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    for ax, name in zip(axes, ("image", "prediction outline", "uncertainty u")):
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if thumb.get("errors"):
        axes[0].text(0, 0, "\n".join(thumb["errors"])[:200], fontsize=6, color="red", va="top")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)
