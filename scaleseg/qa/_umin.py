"""Umin from an evaluated test set, and the U-versus-score correlation (numpy kernels).

The deepflash2 quality-assurance rule (Griebel et al. 2023, "Quality assurance"): on a test set
with reference annotations, Umin is the smallest image uncertainty U among the test images whose
score is below τ; every image with U ≥ Umin is then flagged for expert review.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_umin", "pearson_r"]


def estimate_umin(u, score, *, tau: float) -> dict:
    """Umin = min U over test images with ``score < tau``.

    Parameters
    ----------
    u : (N,) array_like of float
        U of the test images (NaN where undefined; such images are ignored).
    score : (N,) array_like of float
        Their score against the reference (e.g. Dice; NaN = not scored, ignored).
    tau : float
        Score below which a segmentation counts as failed.

    Returns
    -------
    dict
        ``umin`` (float, NaN when undefined), ``n_test`` (images with both U and score),
        ``n_below`` (of those, scored below ``tau``) and ``reason`` (why ``umin`` is NaN,
        else ``""``).
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if u.shape != score.shape:
        raise ValueError(f"u ({u.size}) and score ({score.size}) differ in length")
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    ok = np.isfinite(u) & ~np.isnan(score)
    below = ok & (score < tau)
    out = {"umin": float("nan"), "n_test": int(ok.sum()), "n_below": int(below.sum())}
    if not ok.any():
        out["reason"] = "no test image has both U and a score"
    elif not below.any():
        out["reason"] = f"no test image scored below tau={tau:g} (all {int(ok.sum())} passed)"
    else:
        out["umin"] = float(u[below].min())
        out["reason"] = ""
    return out


def pearson_r(x, y) -> tuple[float, int]:
    """Pearson correlation over the pairs where both values are finite.

    Parameters
    ----------
    x, y : (N,) array_like of float

    Returns
    -------
    r : float
        NaN with fewer than two pairs or a constant variable.
    n : int
        Pairs used.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x ({x.size}) and y ({y.size}) differ in length")
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 2:
        return float("nan"), n
    dx = x[ok] - x[ok].mean()
    dy = y[ok] - y[ok].mean()
    den = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    if den == 0:
        return float("nan"), n
    return float(np.clip(np.dot(dx, dy) / den, -1.0, 1.0)), n
