"""Ensemble sliding-window prediction of one region (kernel: numpy + torch, no I/O).

For every model m, test-time transform t and window w the softmax output is mapped back through
the inverse transform and added, Gaussian-weighted, into running sums ``Σ w·p``, ``Σ w·p²`` and
``Σ w`` (DESIGN.md, paper eq. 1): no T×M maps are ever kept. Windows are batched on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ._tiling import gaussian_weights
from ._tta import apply, invert, invert_vectors, tta_transforms

__all__ = ["RegionPrediction", "predict_region"]


@dataclass
class RegionPrediction:
    """Weighted means over windows, augmentations and ensemble members for one region.

    Attributes
    ----------
    mean : (K, h, w) ndarray of float32
        p̄, the ensemble mixture of class probabilities.
    mean_sq : (K, h, w) ndarray of float32
        E[p²] over the same members, augmentations and windows.
    extra : (E, h, w) ndarray of float32 or None
        Mean of the extra (non-softmax) outputs, e.g. flows (vectors inverse-transformed).
    n_forward : int
        Window forward passes run (windows × augmentations × members).
    """

    mean: np.ndarray
    mean_sq: np.ndarray
    extra: np.ndarray | None
    n_forward: int


def _invert_extra(ext, t):
    """Inverse-transform extra outputs: consecutive pairs are (dy, dx) vectors, a last odd
    channel is a scalar map."""
    import torch

    parts = [invert_vectors(ext[:, j : j + 2], t) for j in range(0, ext.shape[1] - 1, 2)]
    if ext.shape[1] % 2:
        parts.append(invert(ext[:, -1:], t))
    return torch.cat(parts, dim=1)


def predict_region(
    models: Sequence[Callable],
    padded: np.ndarray,
    *,
    read_origin: tuple[int, int],
    windows: Sequence[tuple[int, int]],
    region: tuple[slice, slice],
    tile_shape: tuple[int, int],
    n_classes: int,
    n_extra: int = 0,
    tta: str = "flips",
    batch_size: int = 4,
    device=None,
) -> RegionPrediction:
    """Predict ``region`` from the windows that touch it.

    Parameters
    ----------
    models : sequence of callables
        Each maps a float32 tensor ``(B, C, H, W)`` to logits ``(B, K + E, H, W)`` on ``device``.
    padded : (C, Hr, Wr) ndarray of float32
        Normalised pixels of the read area; ``padded[:, 0, 0]`` is global pixel ``read_origin``
        (areas outside the image already filled by reflection).
    windows : sequence of (int, int)
        Global window origins (from :func:`windows_for_region`), all inside the read area.
    region : (slice, slice)
        The global area to return (the block core).
    n_extra : int
        Extra output channels after the K class logits; pairs are treated as vector fields
        ``(dy, dx)`` when inverting augmentations.
    """
    import torch

    ty, tx = tile_shape
    oy, ox = read_origin
    ry, rx = region
    h, w = ry.stop - ry.start, rx.stop - rx.start
    weight = gaussian_weights(tile_shape).astype(np.float64)
    sum_p = np.zeros((n_classes, h, w))
    sum_p2 = np.zeros((n_classes, h, w))
    sum_w = np.zeros((h, w))
    sum_e = np.zeros((n_extra, h, w)) if n_extra else None
    transforms = tta_transforms(tta)
    device = device or torch.device("cpu")

    # per window: where it lands inside the region (output slices) and which part of it does
    places = []
    for y, x in windows:
        y0, y1 = max(y, ry.start), min(y + ty, ry.stop)
        x0, x1 = max(x, rx.start), min(x + tx, rx.stop)
        out = (slice(y0 - ry.start, y1 - ry.start), slice(x0 - rx.start, x1 - rx.start))
        src = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        places.append((out, src))

    n_forward = 0
    with torch.inference_mode():
        for model in models:
            for t in transforms:
                for b0 in range(0, len(windows), batch_size):
                    batch = windows[b0 : b0 + batch_size]
                    x = np.stack(
                        [padded[:, y - oy : y - oy + ty, x_ - ox : x_ - ox + tx] for y, x_ in batch]
                    )
                    raw = model(apply(torch.from_numpy(x).to(device), t)).float()
                    logits = invert(raw[:, :n_classes], t)
                    probs = torch.softmax(logits, dim=1).double().cpu().numpy()
                    extra = None
                    if n_extra:
                        extra = _invert_extra(raw[:, n_classes : n_classes + n_extra], t)
                        extra = extra.double().cpu().numpy()
                    n_forward += len(batch)
                    for i in range(len(batch)):
                        (oys, oxs), (sys_, sxs) = places[b0 + i]
                        wgt = weight[sys_, sxs]
                        p = probs[i][:, sys_, sxs]
                        sum_p[:, oys, oxs] += wgt * p
                        sum_p2[:, oys, oxs] += wgt * p * p
                        sum_w[oys, oxs] += wgt
                        if extra is not None:
                            sum_e[:, oys, oxs] += wgt * extra[i][:, sys_, sxs]
    if not np.all(sum_w > 0):
        raise ValueError("the windows do not cover the whole region (planning error)")
    mean = (sum_p / sum_w).astype(np.float32)
    mean_sq = (sum_p2 / sum_w).astype(np.float32)
    extra_mean = (sum_e / sum_w).astype(np.float32) if sum_e is not None else None
    return RegionPrediction(mean, mean_sq, extra_mean, n_forward)
