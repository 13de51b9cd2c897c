"""Review ranking and Umin flags (numpy kernels, no I/O).

Images whose score is undefined come first (they need a look: nothing was predicted, or the
prediction failed), then the highest score first. Ties keep the input order, so callers sort
by image name first for a deterministic ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "REVIEW",
    "PASS",
    "UNKNOWN",
    "review_order",
    "rank_scores",
    "review_flags",
    "review_scores",
]

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


def _per_image(u, u_reasons, failed, distance):
    """The per-image inputs of the review rules as arrays / lists of one length."""
    u = np.asarray(u, dtype=np.float64).ravel()
    n = u.size
    u_reasons = list(u_reasons) if u_reasons is not None else [""] * n
    failed = list(failed) if failed is not None else [None] * n
    d = np.full(n, np.nan) if distance is None else np.asarray(distance, np.float64).ravel()
    if len(u_reasons) != n or len(failed) != n or d.size != n:
        raise ValueError("u, u_reasons, failed and distance must have one entry per image")
    return u, u_reasons, failed, d


def review_flags(
    u,
    umin: float | None,
    *,
    u_reasons: Sequence[str] | None = None,
    failed: Sequence[str | None] | None = None,
    umin_reason: str = "",
    distance=None,
    distance_threshold: float | None = None,
    score_name: str = "U",
) -> tuple[np.ndarray, list[str], list[str]]:
    """Flag images for review by the rules that catch what each score is good at.

    Rules (an image is flagged when any fires; each reports itself):

    * ``failed`` -- the prediction failed;
    * ``U undefined`` -- nothing was predicted as foreground;
    * ``U >= Umin`` -- ambiguity within the training domain (deepflash2's rule; Umin from an
      evaluated test set);
    * ``distance`` -- ``ood_distance >= distance_threshold``: the image's encoder features lie
      farther from the training images than any held-out training image did (a foreign image on
      which the members may agree and be confidently wrong, so U stays low).

    An image no rule flags passes when both rules could be checked; when Umin is unknown it is
    :data:`UNKNOWN` (only the distance rule could clear it), and without a distance threshold
    (or a distance) the U rule decides alone.

    Parameters
    ----------
    u : (N,) array_like of float
        The image scores U.
    umin : float or None
        The threshold; ``None`` or NaN when it is unknown.
    u_reasons : sequence of str, optional
        Why U is undefined, per image (e.g. ``"no foreground predicted"``).
    failed : sequence of (str or None), optional
        The error of images whose prediction failed (``None`` / ``""`` = succeeded).
    umin_reason : str, optional
        Why Umin is unknown.
    distance : (N,) array_like of float, optional
        ``ood_distance`` per image (NaN = not measured).
    distance_threshold : float, optional
        The ensemble's calibrated threshold; None or NaN = no distance rule.
    score_name : str
        What ``u`` is (``"U"`` or a variant such as ``"U_border"``): the U rule fires and
        explains itself under this name.

    Returns
    -------
    flags : (N,) ndarray of int8
        :data:`REVIEW` (1), :data:`PASS` (0) or :data:`UNKNOWN` (-1).
    reasons : list of str
        One line per image saying why it is (or may be) flagged; ``""`` for a pass.
    rules : list of str
        The rules that fired, joined by ``"+"`` (``"U"``, ``"distance"``, ``"U+distance"``,
        ``"U undefined"``, ``"failed"``); ``""`` when none did.
    """
    u, u_reasons, failed, d = _per_image(u, u_reasons, failed, distance)
    n = u.size
    known = umin is not None and np.isfinite(umin)
    d_rule = distance_threshold is not None and np.isfinite(distance_threshold)
    flags = np.full(n, UNKNOWN, dtype=np.int8)
    reasons: list[str] = []
    rules: list[str] = []
    for i in range(n):
        if failed[i]:
            flags[i] = REVIEW
            reasons.append(f"prediction failed: {failed[i]}")
            rules.append("failed")
            continue
        fired, why = [], []
        if np.isnan(u[i]):
            fired.append(f"{score_name} undefined")
            why.append(f"{score_name} undefined: {u_reasons[i] or 'no reason recorded'}")
        elif known and u[i] >= umin:
            fired.append(score_name)
            why.append(f"{score_name} {u[i]:.4f} >= Umin {umin:.4f}")
        if d_rule and np.isfinite(d[i]) and d[i] >= distance_threshold:
            fired.append("distance")
            why.append(
                f"feature distance {d[i]:.4g} >= {distance_threshold:.4g} (unlike the training images)"
            )
        if fired:
            flags[i] = REVIEW
        elif known:
            flags[i] = PASS
        else:
            why.append(f"Umin unknown: {umin_reason or 'not given'}")
        reasons.append("; ".join(why))
        rules.append("+".join(fired))
    return flags, reasons, rules


def review_scores(
    u,
    umin: float | None,
    *,
    distance=None,
    distance_threshold: float | None = None,
    failed: Sequence[str | None] | None = None,
) -> np.ndarray:
    """How far each image lies past the review rules' thresholds: one number for both rules.

    ``review_score = max(U / Umin, ood_distance / distance_threshold)`` over the rules that
    can be checked (a rule without its threshold, or an image without a distance, drops
    out). An image is flagged by :func:`review_flags` exactly when its score is >= 1, so
    sorting by it puts every flagged image first, whichever rule fired, and orders the rest
    by how close they come to a threshold. U and the distance are on different scales; the
    ratios make them comparable (1 = at the rule's threshold).

    Undefined U (nothing predicted as foreground) gives ``inf`` (always reviewed, as its
    rule says); a failed prediction or an image no rule can score gives NaN.

    Parameters
    ----------
    u, umin, distance, distance_threshold, failed
        As :func:`review_flags`.

    Returns
    -------
    (N,) ndarray of float64
    """
    u, _, failed, d = _per_image(u, None, failed, distance)

    def past(x, threshold):  # x / threshold, and for a threshold <= 0 the rule's own verdict
        with np.errstate(divide="ignore", invalid="ignore"):
            return x / threshold if threshold > 0 else np.where(x >= threshold, np.inf, 0.0)

    parts = []
    if umin is not None and np.isfinite(umin):
        parts.append(past(u, umin))
    if distance_threshold is not None and np.isfinite(distance_threshold):
        # as review_flags: a distance that is not finite is not measured
        parts.append(np.where(np.isfinite(d), past(d, distance_threshold), np.nan))
    score = np.fmax.reduce(parts) if parts else np.full(u.size, np.nan)
    score = np.where(np.isnan(u), np.inf, score)  # the "U undefined" rule always fires
    return np.where([bool(f) for f in failed], np.nan, score)
