"""Instance segmentation scores: AP@η, mAP, P/R/F1, error rate, PQ, AJI.

Empty inputs
------------
Two maps without any object are a perfect agreement: AP, mAP, precision,
recall, F1, PQ/SQ/RQ and AJI are ``1.0`` and the error rate ``0.0``. When only
one map has objects, every score is ``0.0`` and the error rate is ``inf``
if the reference is the empty one (``(FP + FN) / 0``), else ``1.0``.
"""

from __future__ import annotations

import numpy as np

from ._instances import _check_threshold, _matching, _Overlaps, _overlaps, match_instances

__all__ = [
    "MAP_THRESHOLDS",
    "aggregated_jaccard_index",
    "average_precision",
    "error_rate",
    "instance_scores",
    "mean_average_precision",
    "panoptic_quality",
    "precision_recall_f1",
]

#: IoU thresholds η = 0.50, 0.55, ..., 0.95 of the mAP (rounded to two decimals
#: so that an IoU of exactly 0.6 passes η = 0.6).
MAP_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
MAP_THRESHOLDS.setflags(write=False)


def _thresholds(thresholds) -> np.ndarray:
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {t.shape}")
    for v in t:
        _check_threshold(v)
    return t


def _ap_from(ov: _Overlaps, thresholds: np.ndarray) -> np.ndarray:
    if ov.n_pred == 0 and ov.n_ref == 0:
        return np.ones(thresholds.size)
    tp = np.array([_matching(ov, t).tp for t in thresholds], dtype=np.float64)
    return tp / (ov.n_pred + ov.n_ref - tp)


def average_precision(pred, ref, *, thresholds=MAP_THRESHOLDS, min_size: int = 0) -> np.ndarray:
    """Average precision ``AP = TP / (TP + FP + FN)`` at each IoU threshold.

    This is the "AP" of the cellpose/stardist literature and of the deepflash2
    paper (a detection Jaccard index), not the area under a ranked
    precision-recall curve.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background; labels need not be
        consecutive.
    thresholds : sequence of float, optional
        IoU thresholds η in ``(0, 1]``; default :data:`MAP_THRESHOLDS`.
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    (T,) ndarray of float64
        AP at each threshold (``1.0`` everywhere when both maps are empty).
    """
    t = _thresholds(thresholds)
    return _ap_from(_overlaps(pred, ref, min_size=min_size), t)


def mean_average_precision(pred, ref, *, thresholds=MAP_THRESHOLDS, min_size: int = 0) -> float:
    """Mean of :func:`average_precision` over the IoU thresholds.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    thresholds : sequence of float, optional
        Default :data:`MAP_THRESHOLDS` (η = 0.50 ... 0.95, step 0.05).
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    float
        mAP in ``[0, 1]``.
    """
    return float(np.mean(average_precision(pred, ref, thresholds=thresholds, min_size=min_size)))


def precision_recall_f1(
    pred, ref, *, threshold: float = 0.5, min_size: int = 0
) -> tuple[float, float, float]:
    """Object-level precision, recall and F1 at one IoU threshold.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    threshold : float, optional
        IoU threshold for a match (``>=``).
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    precision, recall, f1 : float
        ``TP/(TP+FP)``, ``TP/(TP+FN)``, ``2TP/(2TP+FP+FN)``. A ratio with a zero
        denominator is ``1.0`` when both maps are empty and ``0.0`` otherwise.
    """
    m = match_instances(pred, ref, threshold=threshold, min_size=min_size)
    return m.precision, m.recall, m.f1


def _error_rate(tp: int, fp: int, fn: int) -> float:
    if tp + fn == 0:
        return 0.0 if fp == 0 else float("inf")
    return (fp + fn) / (tp + fn)


def error_rate(pred, ref, *, threshold: float = 0.5, min_size: int = 0) -> float:
    """Instance error rate ``(FP + FN) / (TP + FN)`` (Cellpose-SAM, Pachitariu et al. 2025).

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    threshold : float, optional
        IoU threshold for a match (``>=``).
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    float
        Errors per reference object, ``>= 0``, unbounded above. ``0.0`` when
        both maps are empty, ``inf`` when only ``pred`` has objects.
    """
    m = match_instances(pred, ref, threshold=threshold, min_size=min_size)
    return _error_rate(m.tp, m.fp, m.fn)


def _pq_from(ov: _Overlaps, threshold: float) -> dict[str, float]:
    if ov.n_pred == 0 and ov.n_ref == 0:
        return {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    m = _matching(ov, threshold)
    den = m.tp + 0.5 * m.fp + 0.5 * m.fn
    sq = float(m.ious.mean()) if m.tp else 0.0
    rq = m.tp / den
    return {"pq": float(m.ious.sum() / den), "sq": sq, "rq": float(rq)}


def panoptic_quality(pred, ref, *, threshold: float = 0.5, min_size: int = 0) -> dict[str, float]:
    """Panoptic quality of one class of instances (Kirillov et al. 2019).

    ``PQ = Σ_matched IoU / (TP + FP/2 + FN/2) = SQ × RQ``.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    threshold : float, optional
        IoU threshold for a match; ``0.5`` is the standard one (at ``> 0.5``
        matches are unique; here ``>=`` is used, as everywhere in this module).
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    dict
        ``{"pq": float, "sq": float, "rq": float}``: panoptic, segmentation
        (mean IoU of the matches, ``0.0`` without matches) and recognition
        (``TP / (TP + FP/2 + FN/2)``) quality. All ``1.0`` when both maps are empty.
    """
    t = _check_threshold(threshold)
    return _pq_from(_overlaps(pred, ref, min_size=min_size), t)


def _aji_from(ov: _Overlaps) -> float:
    if ov.n_pred == 0 and ov.n_ref == 0:
        return 1.0
    # Best prediction of each reference object: highest IoU, ties -> lowest label.
    order = np.lexsort((ov.pair_pred, -ov.pair_iou, ov.pair_ref))
    refs_sorted = ov.pair_ref[order]
    first = (
        np.flatnonzero(np.r_[True, refs_sorted[1:] != refs_sorted[:-1]]) if order.size else order
    )
    best = order[first]
    inter = ov.pair_inter[best]
    bp, br = ov.pair_pred[best], ov.pair_ref[best]
    c = int(inter.sum())
    u = int((ov.pred_areas[bp] + ov.ref_areas[br] - inter).sum())
    ref_unpaired = np.ones(ov.n_ref, dtype=bool)
    ref_unpaired[br] = False
    pred_unused = np.ones(ov.n_pred, dtype=bool)
    pred_unused[bp] = False
    u += int(ov.ref_areas[ref_unpaired].sum()) + int(ov.pred_areas[pred_unused].sum())
    return c / u


def aggregated_jaccard_index(pred, ref, *, min_size: int = 0) -> float:
    """Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017).

    Each reference object ``G_i`` is paired with the prediction ``S_j`` of
    highest IoU (ties: lowest label; a prediction may serve several references);
    ``C += |G_i ∩ S_j|``, ``U += |G_i ∪ S_j|``. A reference touching no
    prediction adds its area to ``U`` only. Every prediction never chosen adds
    its area to ``U``. ``AJI = C / U``.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    min_size : int, optional
        Objects with fewer pixels are removed from both maps before matching.

    Returns
    -------
    float
        AJI in ``[0, 1]``; ``1.0`` when both maps are empty, ``0.0`` when one is.
    """
    return _aji_from(_overlaps(pred, ref, min_size=min_size))


def instance_scores(
    pred, ref, *, thresholds=MAP_THRESHOLDS, threshold: float = 0.5, min_size: int = 0
) -> dict:
    """All instance scores of a prediction against a reference, in one pass.

    The overlap table is built once and shared by every score.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background.
    thresholds : sequence of float, optional
        IoU thresholds of the AP curve and mAP (default :data:`MAP_THRESHOLDS`).
    threshold : float, optional
        IoU threshold of precision, recall, F1, error rate and PQ.
    min_size : int, optional
        Objects with fewer pixels are removed from both maps first.

    Returns
    -------
    dict
        ``thresholds`` (T,) and ``ap`` (T,) arrays; floats ``map``, ``ap50``
        (AP at η = 0.5), ``precision``, ``recall``, ``f1``, ``error_rate``,
        ``pq``, ``sq``, ``rq``, ``aji``; ints ``n_pred``, ``n_ref``, ``tp``,
        ``fp``, ``fn`` (at ``threshold``).
    """
    ts = _thresholds(thresholds)
    t = _check_threshold(threshold)
    ov = _overlaps(pred, ref, min_size=min_size)
    ap = _ap_from(ov, ts)
    m = _matching(ov, t)
    return {
        "thresholds": ts,
        "ap": ap,
        "map": float(ap.mean()),
        "ap50": float(_ap_from(ov, np.array([0.5]))[0]),
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "error_rate": _error_rate(m.tp, m.fp, m.fn),
        **_pq_from(ov, t),
        "aji": _aji_from(ov),
        "n_pred": ov.n_pred,
        "n_ref": ov.n_ref,
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
    }
