"""Work units of prediction: one (image, block) each (orchestration layer).

A unit reads its block plus halo straight from zarr (reflection outside the image), runs the
ensemble kernel over the windows of the global grid that touch the block core, and returns the
core's maps with the partial sums of the image scores. Writing goes chunk-aligned into the
output image, all levels of the pyramid at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io import downsample_image, downsample_labels
from ._tiling import plan_tiles, reflect_indices, windows_for_region

__all__ = [
    "BlockPlan",
    "compute_block",
    "compute_ensemble_block",
    "output_levels",
    "plan_blocks",
    "write_block",
]


@dataclass(frozen=True)
class BlockPlan:
    """Block cores of one image, aligned to the output chunk grid."""

    shape: tuple[int, int]
    block: tuple[int, int]
    chunks: tuple[int, int]

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


def compute_block(
    image,
    core: tuple[slice, slice],
    *,
    models: list,
    normalization,
    tile_shape: tuple[int, int],
    overlap: float,
    n_classes: int,
    n_extra: int = 0,
    tta: str = "flips",
    batch_size: int | None = None,
    zeta: float = 4.0,
    device=None,
    name: str = "",
    feature_stats=None,
) -> dict[str, Any]:
    """Predict one block core of a lazy ``(c, y, x)`` image.

    ``feature_stats`` (one :class:`~scaleseg.uncertainty.FeatureStats` per model) adds the
    encoder-feature distance to the partial sums.

    Returns
    -------
    dict
        ``probabilities`` (K, h, w) float32, ``labels`` (h, w), ``uncertainty`` (3, h, w)
        float32 (u, epistemic, aleatoric), ``extra`` or None, ``partials``
        (:class:`~scaleseg.uncertainty.ScorePartials`), ``n_forward``, ``seconds_read``,
        ``seconds_model``.
    """
    from ..uncertainty import argmax_labels, score_partials, uncertainty_maps
    from ._predict import predict_region

    t0 = time.perf_counter()
    shape = (int(image.shape[1]), int(image.shape[2]))
    plan = plan_tiles(shape, tile_shape=tile_shape, overlap=overlap)
    windows, read = windows_for_region(plan, core)
    raw = read_region(image, read)
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise ValueError(f"{name or image.attrs.get('url')}: image contains NaN or infinite pixels")
    padded = normalization.apply(raw)
    t1 = time.perf_counter()
    pred = predict_region(
        models,
        padded,
        read_origin=(read[0].start, read[1].start),
        windows=windows,
        region=core,
        tile_shape=tile_shape,
        n_classes=n_classes,
        n_extra=n_extra,
        tta=tta,
        batch_size=batch_size,
        device=device,
        feature_stats=feature_stats,
    )
    t2 = time.perf_counter()
    labels = argmax_labels(pred.mean)
    maps = uncertainty_maps(pred.mean, pred.mean_sq, zeta=zeta)
    return {
        "probabilities": pred.mean,
        "labels": labels,
        "uncertainty": np.stack([maps.u, maps.epistemic, maps.aleatoric]),
        "extra": pred.extra,
        "partials": score_partials(labels, maps, n_classes=n_classes, distance=pred.distance),
        "n_forward": pred.n_forward,
        "seconds_read": t1 - t0,
        "seconds_model": t2 - t1,
    }


def compute_ensemble_block(
    image, core: tuple[slice, slice], info, opts: dict[str, Any], *, device, name: str = ""
) -> dict[str, Any]:
    """:func:`compute_block` with the models, normalisation and settings of an ensemble
    (models from the per-process cache)."""
    from ..models import Normalization
    from ._models import get_feature_stats, get_models

    return compute_block(
        image,
        core,
        models=get_models(info, device),
        normalization=Normalization.from_dict(info.normalization),
        tile_shape=tuple(opts["tile_shape"]),
        overlap=opts["overlap"],
        n_classes=info.n_classes,
        n_extra=info.n_extra,
        tta=opts["tta"],
        batch_size=opts["batch_size"],
        zeta=opts["zeta"],
        device=device,
        name=name,
        feature_stats=get_feature_stats(info),
    )


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
