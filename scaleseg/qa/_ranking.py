"""Review ranking and Umin flags (numpy kernels, no I/O).

Images whose score is undefined come first (they need a look: nothing was predicted, or the
prediction failed), then the highest score first. Ties keep the input order, so callers sort
by image name first for a deterministic ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["REVIEW", "PASS", "UNKNOWN", "review_order", "rank_scores", "review_flags"]

#: Values of the flag array of :func:`review_flags`.
REVIEW, PASS, UNKNOWN = 1, 0, -1


def review_order(scores, *, valid=None) -> np.ndarray:
    """Indices of the ``valid`` images in review order: NaN first, then by decreasing score.

    Parameters
    ----------
    scores : (N,) array_like of float
    valid : (N,) array_like of bool, optional
        Images to rank (default all); the others are left out.

    Returns
    -------
    (M,) ndarray of int64
        Positions into ``scores``, M = number of valid images. Ties keep the input order.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    keep = np.ones(s.size, bool) if valid is None else np.asarray(valid, bool).ravel()
    if keep.shape != s.shape:
        raise ValueError(f"valid ({keep.size}) and scores ({s.size}) differ in length")
    idx = np.flatnonzero(keep)
    key = np.where(np.isnan(s[idx]), -np.inf, -s[idx])  # NaN first, then descending
    return idx[np.argsort(key, kind="mergesort")].astype(np.int64)


def rank_scores(scores, *, valid=None) -> np.ndarray:
    """Review rank (1 = look first) of every image; 0 for images left out by ``valid``.

    Returns
    -------
    (N,) ndarray of int64
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    ranks = np.zeros(s.size, dtype=np.int64)
    order = review_order(s, valid=valid)
    ranks[order] = np.arange(1, order.size + 1)
    return ranks


def review_flags(
    u,
    umin: float | None,
    *,
    u_reasons: Sequence[str] | None = None,
    failed: Sequence[str | None] | None = None,
    umin_reason: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Flag images for review: ``U >= Umin``, undefined U, or a failed prediction.

    Parameters
    ----------
    u : (N,) array_like of float
        The image scores U.
    umin : float or None
        The threshold; ``None`` or NaN when it is unknown (then images with a defined U get
        :data:`UNKNOWN` and ``umin_reason``).
    u_reasons : sequence of str, optional
        Why U is undefined, per image (e.g. ``"no foreground predicted"``).
    failed : sequence of (str or None), optional
        The error of images whose prediction failed (``None`` / ``""`` = succeeded).
    umin_reason : str, optional
        Why Umin is unknown.

    Returns
    -------
    flags : (N,) ndarray of int8
        :data:`REVIEW` (1), :data:`PASS` (0) or :data:`UNKNOWN` (-1).
    reasons : list of str
        One line per image saying why it is (or may be) flagged; ``""`` for a pass.
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    n = u.size
    u_reasons = list(u_reasons) if u_reasons is not None else [""] * n
    failed = list(failed) if failed is not None else [None] * n
    if len(u_reasons) != n or len(failed) != n:
        raise ValueError("u, u_reasons and failed must have one entry per image")
    known = umin is not None and np.isfinite(umin)
    flags = np.full(n, UNKNOWN, dtype=np.int8)
    reasons: list[str] = []
    for i in range(n):
        if failed[i]:
            flags[i] = REVIEW
            reasons.append(f"prediction failed: {failed[i]}")
        elif np.isnan(u[i]):
            flags[i] = REVIEW
            reasons.append(f"U undefined: {u_reasons[i] or 'no reason recorded'}")
        elif not known:
            reasons.append(f"Umin unknown: {umin_reason or 'not given'}")
        elif u[i] >= umin:
            flags[i] = REVIEW
            reasons.append(f"U {u[i]:.4f} >= Umin {umin:.4f}")
        else:
            flags[i] = PASS
            reasons.append("")
    return flags, reasons
