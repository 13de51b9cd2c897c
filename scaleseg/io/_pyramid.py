"""Multiscale pyramids (numpy kernels): 2x mean downsampling for intensities, 2x striding for labels."""

from __future__ import annotations

import numpy as np

__all__ = ["downsample_image", "downsample_labels", "build_pyramid", "level_shapes"]


def downsample_image(image: np.ndarray) -> np.ndarray:
    """Halve the last two axes by 2x2 mean (odd edges use the available pixels).

    Parameters
    ----------
    image : (..., Y, X) ndarray
        Any numeric dtype; the result keeps the dtype (integers are rounded).
    """
    y, x = image.shape[-2:]
    ys, xs = (y + 1) // 2, (x + 1) // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(0, ys * 2 - y), (0, xs * 2 - x)]
    work = np.pad(image.astype(np.float64, copy=False), pad, mode="edge")
    out = work.reshape(*image.shape[:-2], ys, 2, xs, 2).mean(axis=(-3, -1))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(image.dtype)


def downsample_labels(labels: np.ndarray) -> np.ndarray:
    """Halve the last two axes by taking every second pixel (labels stay valid ids)."""
    return labels[..., ::2, ::2]


def level_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, ...]]:
    """Shapes of a pyramid whose last two axes halve (rounding up) at every level."""
    shapes = [tuple(shape)]
    for _ in range(n_levels - 1):
        *lead, y, x = shapes[-1]
        shapes.append((*lead, (y + 1) // 2, (x + 1) // 2))
    return shapes


def build_pyramid(data: np.ndarray, n_levels: int, *, labels: bool = False) -> list[np.ndarray]:
    """A list of ``n_levels`` arrays, full resolution first.

    Levels stop early once an axis would drop below 1 pixel (never happens for ``Y, X >= 2**n``).
    """
    down = downsample_labels if labels else downsample_image
    levels = [data]
    for _ in range(n_levels - 1):
        if min(levels[-1].shape[-2:]) <= 1:
            break
        levels.append(down(levels[-1]))
    return levels
