"""Generic block machinery shared by prediction, instances and training (numpy only).

An image is cut into blocks aligned to its output chunk grid (:func:`plan_blocks`); a unit
reads its block plus a halo straight from the store with mirror reflection outside the image
(:func:`read_region`) and writes its core into every pyramid level of the outputs
(:func:`write_block`). Nothing here imports dask, zarr or torch: callers hand in lazy image
objects and opened arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inference._tiling import reflect_indices

__all__ = [
    "BlockPlan",
    "output_levels",
    "plan_blocks",
    "read_region",
    "reflect_indices",
    "write_block",
]


@dataclass(frozen=True)
class BlockPlan:
    """Block cores of one image, aligned to the output chunk grid."""

    shape: tuple[int, int]
    block: tuple[int, int]
    chunks: tuple[int, int]

    @property
    def chunks_per_block(self) -> tuple[int, int]:
        """Output chunks along ``(y, x)`` in one block: the shard shape, in chunks, of sharded
        (zarr v3) outputs, so that one unit writes every shard it touches whole."""
        return (self.block[0] // self.chunks[0], self.block[1] // self.chunks[1])

    def cores(self) -> list[tuple[int, int, slice, slice]]:
        """``(by, bx, ys, xs)`` for every block, row-major."""
        out = []
        for by, y0 in enumerate(range(0, self.shape[0], self.block[0])):
            for bx, x0 in enumerate(range(0, self.shape[1], self.block[1])):
                ys = slice(y0, min(self.shape[0], y0 + self.block[0]))
                xs = slice(x0, min(self.shape[1], x0 + self.block[1]))
                out.append((by, bx, ys, xs))
        return out


def output_levels(
    chunks: tuple[int, int], shape: tuple[int, int], *, min_chunk: int = 32, max_levels: int = 4
) -> int:
    """Pyramid levels for outputs whose chunks halve per level.

    The most levels (up to ``max_levels``) such that each level's chunks stay at least
    ``min_chunk`` pixels and, along every axis cut into several blocks, the chunk side divides
    by ``2**(levels - 1)`` -- so block cores, which start at chunk multiples, downsample exactly
    like the whole image.
    """
    for levels in range(max_levels, 1, -1):
        f = 1 << (levels - 1)
        if all(
            (c >= n or c % f == 0) and min(c, n) // f >= min_chunk for c, n in zip(chunks, shape)
        ):
            return levels
    return 1


def plan_blocks(
    shape: tuple[int, int], *, block_shape: tuple[int, int], chunks: tuple[int, int]
) -> BlockPlan:
    """Blocks of about ``block_shape``, rounded to whole output chunks (a small image: one block).

    Chunks are clipped to the image; blocks are multiples of the chunks, so no two blocks ever
    write the same chunk, at any pyramid level.
    """
    ch = tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape))
    blk = tuple(max(c, (int(b) // c) * c) for b, c in zip(block_shape, ch))
    return BlockPlan((int(shape[0]), int(shape[1])), blk, ch)


def read_region(image, read: tuple[slice, slice]) -> np.ndarray:
    """Pixels of the global area ``read`` of a lazy ``(c, y, x)`` image, reflected outside it.

    Only the in-image bounding box of the needed rows / columns is read from the store.
    """
    _, ny, nx = image.shape
    iy = reflect_indices(read[0].start, read[0].stop, ny)
    ix = reflect_indices(read[1].start, read[1].stop, nx)
    y0, y1, x0, x1 = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    box = np.asarray(image.data[:, y0:y1, x0:x1].compute(scheduler="sync"))
    return box[:, iy - y0][:, :, ix - x0]


def _level_region(
    core: tuple[slice, slice], level: int, shape_l: tuple[int, ...]
) -> tuple[slice, slice]:
    f = 1 << level
    return tuple(slice(s.start // f, min(-(-s.stop // f), n)) for s, n in zip(core, shape_l[-2:]))


def write_block(arrays: list, data: np.ndarray, core: tuple[slice, slice], *, labels: bool) -> None:
    """Write ``data`` (``(..., h, w)`` for the block core) into every pyramid level.

    Level ``l + 1`` is computed from level ``l`` of this block only, which equals the whole-
    image pyramid because block cores start at multiples of ``2**levels`` pixels.
    """
    from .io._pyramid import downsample_image, downsample_labels

    down = downsample_labels if labels else downsample_image
    level_data = data
    for level, arr in enumerate(arrays):
        if level:
            level_data = down(level_data)
        ys, xs = _level_region(core, level, arr.shape)
        lead = (slice(None),) * (arr.ndim - 2)
        arr[(*lead, ys, xs)] = level_data[..., : ys.stop - ys.start, : xs.stop - xs.start].astype(
            arr.dtype, copy=False
        )
