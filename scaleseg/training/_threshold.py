"""Decision threshold of a binary ensemble, chosen on the folds' validation images (numpy).

Each fold counts, on its own validation tiles and with its kept weights, the foreground
intersection and size sum at every candidate threshold of the foreground probability
(:func:`threshold_counts`). The ensemble pools those counts over all folds (every training
image is a validation image of exactly one fold) and keeps the threshold with the highest
pooled Dice (:func:`choose_threshold`). No test image is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["THRESHOLDS", "choose_threshold", "decision_threshold", "threshold_counts"]

THRESHOLDS: tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(11))
"""Candidate foreground-probability thresholds, 0.20 to 0.70 in steps of 0.05 (0.5 = argmax)."""


def threshold_counts(
    foreground: np.ndarray, target: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground intersection and size sum at each threshold.

    Parameters
    ----------
    foreground : ndarray of float
        Foreground probability per pixel.
    target : ndarray of int, same shape
        Reference labels: 1 foreground, 0 background; negative values are ignored (padding).
    thresholds : sequence of float
        A pixel is foreground when its probability is ``>= t``.

    Returns
    -------
    inter, total : ndarray of float64, shape (T,)
        ``|P ∩ R|`` and ``|P| + |R|`` per threshold (Dice = ``2 inter / total``).
    """
    p = np.asarray(foreground, dtype=np.float64)
    r = np.asarray(target)
    if p.shape != r.shape:
        raise ValueError(f"probabilities {p.shape} and target {r.shape} differ in shape")
    known = r >= 0
    p, ref = p[known], r[known] == 1
    t = np.asarray(thresholds, dtype=np.float64)[:, None]
    pred = p[None, :] >= t
    inter = (pred & ref[None, :]).sum(axis=1).astype(np.float64)
    total = pred.sum(axis=1).astype(np.float64) + float(ref.sum())
    return inter, total


def choose_threshold(
    inter: Sequence[float], total: Sequence[float], thresholds: Sequence[float] = THRESHOLDS
) -> tuple[float, np.ndarray]:
    """The threshold with the highest Dice ``2 inter / total``; ties go to the one nearest 0.5.

    Returns
    -------
    threshold : float
    dice : ndarray of float64, shape (T,)
        Dice per threshold (1 where both prediction and reference are empty).
    """
    inter = np.asarray(inter, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if not (inter.shape == total.shape == t.shape) or t.size == 0:
        raise ValueError("inter, total and thresholds need the same, non-zero length")
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1e-12), 1.0)
    best = dice.max()
    candidates = np.flatnonzero(np.isclose(dice, best, rtol=0, atol=1e-12))
    pick = candidates[np.argmin(np.abs(t[candidates] - 0.5))]
    return float(t[pick]), dice


def decision_threshold(folds: Sequence[dict]) -> dict | None:
    """The ensemble's decision threshold from its folds' ``threshold_counts`` (``fold.json``):
    counts pooled over the folds, then :func:`choose_threshold`. None when a fold has none (a
    multi-class ensemble)."""
    counts = [f.get("threshold_counts") for f in folds]
    if not counts or any(c is None for c in counts):
        return None
    thresholds = counts[0]["thresholds"]
    if any(c["thresholds"] != thresholds for c in counts):
        raise ValueError("the folds counted at different thresholds")
    inter = np.sum([c["inter"] for c in counts], axis=0)
    total = np.sum([c["total"] for c in counts], axis=0)
    value, dice = choose_threshold(inter, total, thresholds)
    return {
        "value": value,
        "rule": f"best pooled Dice on the {len(counts)} folds' validation images",
        "thresholds": [float(t) for t in thresholds],
        "dice": [round(float(d), 6) for d in dice],
        "dice_argmax": round(float(dice[list(thresholds).index(0.5)]), 6)
        if 0.5 in thresholds
        else float("nan"),
    }
