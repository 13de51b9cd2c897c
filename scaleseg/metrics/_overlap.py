"""Semantic overlap measures: Dice and IoU (Jaccard) per class and averaged.

Conventions
-----------
Label maps hold integer class ids with ``0`` = background. Classes ``1..K`` are
scored; background is never a class of its own. A class that is absent from
*both* maps is a perfect agreement and scores ``1.0`` (a prediction that
correctly finds nothing is not penalised); a class present in only one map
scores ``0.0``.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_pair

__all__ = ["dice", "dice_per_class", "iou", "iou_per_class"]

_AVERAGES = ("macro", "micro")


def _resolve_n_classes(pred: np.ndarray, ref: np.ndarray, n_classes: int | None) -> int:
    pmax = int(pred.max()) if pred.size else 0
    rmax = int(ref.max()) if ref.size else 0
    if n_classes is None:
        return max(pmax, rmax, 1)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer):
        raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1 (foreground classes), got {n_classes}")
    for name, vmax in (("pred", pmax), ("ref", rmax)):
        if vmax > n_classes:
            raise ValueError(f"{name} holds label {vmax}, outside 0..n_classes ({n_classes})")
    return int(n_classes)


def _class_counts(pred, ref, n_classes):
    """Per-class (tp, fp, fn) for classes 1..K, each of shape (K,) int64."""
    pred, ref = check_pair(pred, ref)
    k = _resolve_n_classes(pred, ref, n_classes)
    n = k + 1
    # Labels are <= K here, so the cast to intp (needed by bincount for uint64) is safe.
    p = pred.ravel().astype(np.intp, copy=False)
    r = ref.ravel().astype(np.intp, copy=False)
    # Three bincounts (O(K) memory, unlike a (K+1)^2 confusion matrix).
    tp = np.bincount(p[p == r], minlength=n)[1:]
    fp = np.bincount(p, minlength=n)[1:] - tp
    fn = np.bincount(r, minlength=n)[1:] - tp
    return tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 / 0 read as a perfect score (1.0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.ones_like(den)
    np.divide(num, den, out=out, where=den > 0)
    return out


def dice_per_class(pred, ref, *, n_classes: int) -> np.ndarray:
    """Dice coefficient of each foreground class.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Semantic label maps (any shape, equal for both), ``0`` = background,
        classes ``1..n_classes``. Boolean maps are read as 0/1.
    n_classes : int
        Number of foreground classes K. Labels above K raise ``ValueError``.

    Returns
    -------
    (K,) ndarray of float64
        ``2 TP / (2 TP + FP + FN)`` for classes ``1..K``; ``1.0`` for a class
        absent from both maps.
    """
    tp, fp, fn = _class_counts(pred, ref, n_classes)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou_per_class(pred, ref, *, n_classes: int) -> np.ndarray:
    """IoU (Jaccard index) of each foreground class.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Semantic label maps, ``0`` = background, classes ``1..n_classes``.
    n_classes : int
        Number of foreground classes K.

    Returns
    -------
    (K,) ndarray of float64
        ``TP / (TP + FP + FN)`` for classes ``1..K``; ``1.0`` for a class
        absent from both maps.
    """
    tp, fp, fn = _class_counts(pred, ref, n_classes)
    return _ratio(tp, tp + fp + fn)


def _averaged(pred, ref, n_classes, average, *, dice_form: bool) -> float:
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    tp, fp, fn = _class_counts(pred, ref, n_classes)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    scores = _ratio(2 * tp, 2 * tp + fp + fn) if dice_form else _ratio(tp, tp + fp + fn)
    return float(np.mean(scores))


def dice(pred, ref, *, n_classes: int | None = None, average: str = "macro") -> float:
    """Dice coefficient (F1 score) between two semantic label maps.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Semantic label maps of one shape (any number of dimensions),
        ``0`` = background. Boolean maps are read as 0/1.
    n_classes : int, optional
        Number of foreground classes K. When omitted, K is the largest label in
        either map (at least 1), so 0/1 maps give the binary Dice. Pass it when
        a class may be missing from both maps.
    average : {"macro", "micro"}
        ``"macro"``: mean of the per-class Dice over classes ``1..K``
        (see :func:`dice_per_class`). ``"micro"``: Dice of the TP/FP/FN pooled
        over the foreground classes.

    Returns
    -------
    float
        Dice in ``[0, 1]``. Two maps without any foreground score ``1.0``.

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))
    0.6666666666666666
    """
    return _averaged(pred, ref, n_classes, average, dice_form=True)


def iou(pred, ref, *, n_classes: int | None = None, average: str = "macro") -> float:
    """Intersection over union (Jaccard index) between two semantic label maps.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Semantic label maps of one shape, ``0`` = background.
    n_classes : int, optional
        Number of foreground classes K; inferred as in :func:`dice` when omitted.
    average : {"macro", "micro"}
        Mean of the per-class IoU (``"macro"``) or IoU of the pooled counts
        (``"micro"``).

    Returns
    -------
    float
        IoU in ``[0, 1]``. Two maps without any foreground score ``1.0``.

    Examples
    --------
    >>> import numpy as np
    >>> iou(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))
    0.5
    """
    return _averaged(pred, ref, n_classes, average, dice_form=False)
