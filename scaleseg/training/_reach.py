"""How confidently a trained member can predict each class, measured on its validation pixels
(numpy).

A member whose last decoder features can only *switch off* for a class has its probability for
that class capped near the head's bias: with every feature at zero the logit margin is the
bias difference, so the class wins by a hair (p ≈ 0.5) and never with confidence. Its argmax
labels can still look right, but it reads as maximally uncertain on every pixel of that class,
which lifts ``u`` there and flattens the image score ``U`` of the whole ensemble. The *reach* of
class k is a high quantile of ``p_k`` over the validation pixels whose reference is k: about 1
for a healthy member, about 0.5 for a capped one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BINS", "QUANTILE", "SATURATED_BELOW", "class_reach", "reach_histogram", "saturated"]

BINS = 100
"""Histogram bins over [0, 1] for the class probabilities."""

QUANTILE = 0.99
"""The reach of a class: this quantile of its probability on its own reference pixels."""

SATURATED_BELOW = 0.6
"""A class whose reach stays below this is never predicted with confidence (a capped member)."""


def reach_histogram(probabilities: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Histogram of ``p_k`` over the pixels whose reference is ``k``, for each class ``k >= 1``.

    Parameters
    ----------
    probabilities : (B, K, Y, X) ndarray of float
        Softmax probabilities.
    target : (B, Y, X) ndarray of int
        Reference class per pixel; negative values are ignored (padding).

    Returns
    -------
    (K - 1, BINS) ndarray of int64
        Counts over equal bins of [0, 1]; sum them over batches, then :func:`class_reach`.
    """
    p = np.asarray(probabilities)
    t = np.asarray(target)
    if p.ndim != 4 or t.shape != (p.shape[0], *p.shape[2:]):
        raise ValueError(f"probabilities (B, K, Y, X) {p.shape} and target (B, Y, X) {t.shape}")
    edges = np.linspace(0.0, 1.0, BINS + 1)
    out = np.zeros((p.shape[1] - 1, BINS), dtype=np.int64)
    for k in range(1, p.shape[1]):
        values = np.clip(p[:, k][t == k], 0.0, 1.0)
        out[k - 1] = np.histogram(values, bins=edges)[0]
    return out


def class_reach(histogram: np.ndarray, quantile: float = QUANTILE) -> list[float]:
    """The ``quantile`` of each class's probability from :func:`reach_histogram` counts: the
    upper edge of the bin where the cumulative count reaches it (NaN for a class without
    pixels)."""
    h = np.asarray(histogram, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != BINS:
        raise ValueError(f"expected a (classes, {BINS}) histogram, got {h.shape}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    out = []
    for row in h:
        n = row.sum()
        if n == 0:
            out.append(float("nan"))
            continue
        k = int(np.searchsorted(np.cumsum(row), quantile * n - 1e-9 * n))
        out.append(round((k + 1) / BINS, 6))
    return out


def saturated(reach: Sequence[float] | None) -> list[int]:
    """The classes (1-based) whose reach is below :data:`SATURATED_BELOW`."""
    return [k for k, r in enumerate(reach or (), start=1) if r < SATURATED_BELOW]
