"""Sliding-window planning (kernels): a global window grid, Gaussian weights, reflection indices.

The window grid is global to the image: windows start at multiples of the step
``round(tile * (1 - overlap))`` from the image origin, and the last one may overhang the image
end (that part is filled by reflection). A block of the image is processed with exactly the
windows of the global grid that touch its core, read with a halo that covers them, so blocked
and whole-image predictions agree pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "TilePlan",
    "plan_tiles",
    "window_starts",
    "gaussian_weights",
    "reflect_indices",
    "windows_for_region",
]


def window_starts(length: int, tile: int, step: int) -> np.ndarray:
    """Start offsets of windows of size ``tile`` every ``step`` pixels covering ``[0, length)``."""
    if length <= 0 or tile <= 0 or step <= 0:
        raise ValueError(f"length, tile and step must be positive, got {length}, {tile}, {step}")
    n = 1 if length <= tile else math.ceil((length - tile) / step) + 1
    return np.arange(n, dtype=np.int64) * step


@dataclass(frozen=True)
class TilePlan:
    """The global window grid of one image.

    Attributes
    ----------
    shape : (int, int)
        Image shape ``(Y, X)``.
    tile : (int, int)
        Window shape.
    step : (int, int)
        Distance between window starts.
    starts_y, starts_x : tuple of int
        Window start offsets along each axis (the grid is their outer product).
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    step: tuple[int, int]
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]

    @property
    def overlap(self) -> tuple[int, int]:
        """Overlap between neighbouring windows in pixels (``tile - step``)."""
        return (self.tile[0] - self.step[0], self.tile[1] - self.step[1])

    @property
    def n_windows(self) -> int:
        return len(self.starts_y) * len(self.starts_x)

    def windows(self) -> list[tuple[int, int]]:
        """All window origins ``(y, x)`` in row-major order."""
        return [(y, x) for y in self.starts_y for x in self.starts_x]


def plan_tiles(
    shape: tuple[int, int], *, tile_shape: tuple[int, int], overlap: float = 0.5
) -> TilePlan:
    """Plan the sliding windows of an image of ``shape`` ``(Y, X)``.

    Parameters
    ----------
    tile_shape : (int, int)
        Window shape (the model's input size).
    overlap : float in [0, 1)
        Fraction of the window shared with its neighbour; the step is
        ``max(1, round(tile * (1 - overlap)))``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    ty, tx = (int(t) for t in tile_shape)
    step = (max(1, round(ty * (1 - overlap))), max(1, round(tx * (1 - overlap))))
    sy = window_starts(int(shape[0]), ty, step[0])
    sx = window_starts(int(shape[1]), tx, step[1])
    return TilePlan(
        (int(shape[0]), int(shape[1])), (ty, tx), step, tuple(sy.tolist()), tuple(sx.tolist())
    )


@lru_cache(maxsize=16)
def _gaussian(tile: tuple[int, int], sigma_scale: float) -> np.ndarray:
    axes = []
    for n in tile:
        centre = (n - 1) / 2.0
        sigma = n * sigma_scale
        axes.append(np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2))
    w = np.outer(axes[0], axes[1])
    w /= w.max()
    w = np.maximum(w, w[w > 0].min())  # never zero (nnU-Net): every pixel keeps a weight
    out = w.astype(np.float32)
    out.setflags(write=False)
    return out


def gaussian_weights(tile_shape: tuple[int, int], *, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian importance map for one window, σ = tile × ``sigma_scale`` (cached, read-only).

    Returns
    -------
    (H, W) ndarray of float32
        Maximum 1 at the centre; strictly positive everywhere.
    """
    return _gaussian((int(tile_shape[0]), int(tile_shape[1])), float(sigma_scale))


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Source indices of ``[start, stop)`` on an axis of ``length`` with mirror reflection.

    Reflection excludes the edge pixel (numpy's ``"reflect"`` mode) and repeats
    periodically, so any range maps into ``[0, length)``.
    """
    idx = np.arange(start, stop, dtype=np.int64)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def windows_for_region(
    plan: TilePlan, region: tuple[slice, slice]
) -> tuple[list[tuple[int, int]], tuple[slice, slice]]:
    """Windows of ``plan`` that touch ``region`` and the (global) area they read.

    Parameters
    ----------
    region : (slice, slice)
        A block core in image coordinates.

    Returns
    -------
    windows : list of (int, int)
        Window origins, in the plan's row-major order.
    read : (slice, slice)
        The bounding box of those windows in global coordinates; it may extend beyond the
        image (those pixels are reflections). ``read`` minus ``region`` is the block's halo.
    """
    (y0, y1), (x0, x1) = (region[0].start, region[0].stop), (region[1].start, region[1].stop)
    ty, tx = plan.tile
    ys = [s for s in plan.starts_y if s < y1 and s + ty > y0]
    xs = [s for s in plan.starts_x if s < x1 and s + tx > x0]
    if not ys or not xs:
        raise ValueError(f"region {region} lies outside the image {plan.shape}")
    windows = [(y, x) for y in ys for x in xs]
    return windows, (slice(ys[0], ys[-1] + ty), slice(xs[0], xs[-1] + tx))
