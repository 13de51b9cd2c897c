"""Detection scores for known out-of-distribution images (numpy kernels).

Every score is "higher = more suspicious". An undefined score (NaN, e.g. U of an image with no
predicted foreground) counts as the most suspicious value, as in the review ranking.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_ranks", "auroc", "average_precision"]


def _validate(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    if y.dtype != np.bool_:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"labels must be boolean or 0/1, got values {sorted(values)[:5]}")
        y = y.astype(bool)
    s = np.where(np.isnan(s), np.inf, s)  # undefined = most suspicious
    return s, y


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), ties sharing their average rank.

    Parameters
    ----------
    values : (N,) array_like of float

    Returns
    -------
    (N,) ndarray of float64
        As ``scipy.stats.rankdata(values, method="average")``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    starts = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], v.size] - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for separating ``labels`` (True = OOD).

    Computed as the Mann-Whitney U statistic over average ranks, so ties count one half:
    the probability that a random OOD image scores higher than a random in-distribution one.

    Parameters
    ----------
    scores : (N,) array_like of float
        Higher = more suspicious; NaN counts as the highest value.
    labels : (N,) array_like of bool or {0, 1}

    Returns
    -------
    float
        In [0, 1]; NaN when one of the two classes is empty.
    """
    s, y = _validate(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(scores, labels) -> float:
    """Area under the precision-recall curve as the step-wise sum ``Σ (R_n - R_{n-1}) P_n``.

    Thresholds are the distinct score values (tied images enter together), as
    ``sklearn.metrics.average_precision_score``. A random score gives about the OOD fraction.

    Parameters
    ----------
    scores : (N,) array_like of float
        Higher = more suspicious; NaN counts as the highest value.
    labels : (N,) array_like of bool or {0, 1}

    Returns
    -------
    float
        In [0, 1]; NaN without any OOD image.
    """
    s, y = _validate(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.r_[s[1:] != s[:-1], True]  # last index of each group of tied scores
    tp = np.cumsum(y)[ends]
    fp = np.cumsum(~y)[ends]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
