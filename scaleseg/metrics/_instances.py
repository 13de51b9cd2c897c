"""Instance overlap and optimal matching.

All pairwise work goes through :class:`_Overlaps`, a sparse list of the
(pred, ref) object pairs that share at least one pixel, built with a single
``bincount`` (or ``unique``) over the pixel pairs: no per-object loops, and the
cost follows the number of touching pairs rather than ``n_pred * n_ref``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._labels import _compact, remove_small_instances
from ._validate import check_pair

__all__ = ["Matching", "instance_iou", "match_instances"]

# Dense bincount over n_pred * n_ref codes while it stays this small.
_DENSE_PAIRS_LIMIT = 1 << 25


@dataclass(frozen=True, eq=False)
class _Overlaps:
    """Sparse overlap table of two instance label maps (indices are 0-based)."""

    pred_ids: np.ndarray  # (n_pred,) label values
    ref_ids: np.ndarray  # (n_ref,)
    pred_areas: np.ndarray  # (n_pred,) int64
    ref_areas: np.ndarray  # (n_ref,) int64
    pair_pred: np.ndarray  # (n_pairs,) intp index into pred_ids
    pair_ref: np.ndarray  # (n_pairs,) intp index into ref_ids
    pair_inter: np.ndarray  # (n_pairs,) int64 intersection area
    pair_iou: np.ndarray  # (n_pairs,) float64

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def n_ref(self) -> int:
        return int(self.ref_ids.size)


def _overlaps(pred, ref, *, min_size: int = 0) -> _Overlaps:
    pred, ref = check_pair(pred, ref)
    if min_size > 1:
        pred = remove_small_instances(pred, min_size=min_size)
        ref = remove_small_instances(ref, min_size=min_size)
    pred_ids, pidx, pred_areas = _compact(pred.ravel())
    ref_ids, ridx, ref_areas = _compact(ref.ravel())
    n_pred, n_ref = pred_ids.size, ref_ids.size
    both = (pidx > 0) & (ridx > 0)
    code = (pidx[both] - 1).astype(np.int64) * n_ref + (ridx[both] - 1)
    if n_pred * n_ref <= max(_DENSE_PAIRS_LIMIT, 4 * code.size):
        counts = np.bincount(code, minlength=n_pred * n_ref)
        code = np.flatnonzero(counts)
        inter = counts[code]
    else:
        code, inter = np.unique(code, return_counts=True)
    pp = (code // max(n_ref, 1)).astype(np.intp)
    rr = (code % max(n_ref, 1)).astype(np.intp)
    inter = inter.astype(np.int64)
    union = pred_areas[pp] + ref_areas[rr] - inter
    return _Overlaps(
        pred_ids, ref_ids, pred_areas, ref_areas, pp, rr, inter, inter / union.astype(np.float64)
    )


def instance_iou(pred, ref) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise IoU of all predicted and reference instances.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape (any number of dimensions),
        ``0`` = background. Labels need not be consecutive.

    Returns
    -------
    iou : (n_pred, n_ref) ndarray of float64
        ``|P ∩ R| / |P ∪ R|`` for every pair; ``0`` for pairs that do not touch.
    pred_ids : (n_pred,) ndarray
        Sorted label values of the rows (dtype of ``pred``).
    ref_ids : (n_ref,) ndarray
        Sorted label values of the columns (dtype of ``ref``).

    Notes
    -----
    Computed from the touching pairs only (one ``bincount`` over pixel pairs);
    the dense result is ``n_pred * n_ref`` floats, so for very many objects
    prefer :func:`match_instances`, which stays sparse.
    """
    ov = _overlaps(pred, ref)
    out = np.zeros((ov.n_pred, ov.n_ref), dtype=np.float64)
    out[ov.pair_pred, ov.pair_ref] = ov.pair_iou
    return out, ov.pred_ids, ov.ref_ids


@dataclass(frozen=True, eq=False)
class Matching:
    """One-to-one matching of predicted to reference instances at an IoU threshold.

    Attributes
    ----------
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched references.
    n_pred, n_ref : int
        Number of predicted and reference instances.
    threshold : float
        IoU threshold; a pair can match when its IoU is ``>= threshold``.
    pairs : (tp, 2) ndarray of int64
        Matched ``(pred_label, ref_label)`` values, sorted by reference label.
    ious : (tp,) ndarray of float64
        IoU of each matched pair.
    """

    tp: int
    fp: int
    fn: int
    n_pred: int
    n_ref: int
    threshold: float
    pairs: np.ndarray
    ious: np.ndarray

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``; 1.0 when both inputs are empty, 0.0 when only ref has objects."""
        return _safe(self.tp, self.tp + self.fp, self)

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)``; 1.0 when both inputs are empty, 0.0 when only pred has objects."""
        return _safe(self.tp, self.tp + self.fn, self)

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)``; 1.0 when both inputs are empty."""
        return _safe(2 * self.tp, 2 * self.tp + self.fp + self.fn, self)


def _safe(num: float, den: float, m: Matching) -> float:
    """Ratio with 0/0 read as 1.0 when both inputs are empty, else 0.0."""
    if den > 0:
        return float(num / den)
    return 1.0 if m.n_pred == 0 and m.n_ref == 0 else 0.0


def _check_threshold(threshold) -> float:
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
    return t


def _assign(ov: _Overlaps, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality matching among pairs with IoU >= threshold.

    Ties in cardinality are broken by the larger summed IoU, as in
    ``cellpose.metrics._true_positive`` (cost ``-[iou >= t] - iou / (2 n)``).
    Returns the indices (into the pair arrays) of the matched pairs.
    """
    cand = np.flatnonzero(ov.pair_iou >= threshold)
    pp, rr = ov.pair_pred[cand], ov.pair_ref[cand]
    deg_p = np.bincount(pp, minlength=ov.n_pred)
    deg_r = np.bincount(rr, minlength=ov.n_ref)
    simple = (deg_p[pp] == 1) & (deg_r[rr] == 1)
    chosen = [cand[simple]]
    if not simple.all():
        # Ambiguous candidates (possible below IoU 0.5): solve each connected
        # component of the bipartite candidate graph on its own.
        from scipy.optimize import linear_sum_assignment
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        hard = cand[~simple]
        hp, hr = ov.pair_pred[hard], ov.pair_ref[hard] + ov.n_pred
        n_nodes = ov.n_pred + ov.n_ref
        graph = coo_matrix((np.ones(hard.size), (hp, hr)), shape=(n_nodes, n_nodes))
        _, comp = connected_components(graph, directed=False)
        edge_comp = comp[hp]
        order = np.argsort(edge_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
        for group in np.split(hard[order], bounds):
            rows, ri = np.unique(ov.pair_pred[group], return_inverse=True)
            cols, ci = np.unique(ov.pair_ref[group], return_inverse=True)
            n_min = min(rows.size, cols.size)
            cost = np.zeros((rows.size, cols.size))
            cost[ri, ci] = -1.0 - ov.pair_iou[group] / (2 * n_min)
            edge = np.full((rows.size, cols.size), -1, dtype=np.intp)
            edge[ri, ci] = group
            r_sel, c_sel = linear_sum_assignment(cost)
            sel = edge[r_sel, c_sel]
            chosen.append(sel[sel >= 0])
    return np.concatenate(chosen)


def _matching(ov: _Overlaps, threshold: float) -> Matching:
    idx = _assign(ov, threshold)
    idx = idx[np.argsort(ov.pair_ref[idx], kind="stable")]
    tp = int(idx.size)
    pairs = np.stack(
        [
            ov.pred_ids[ov.pair_pred[idx]].astype(np.int64),
            ov.ref_ids[ov.pair_ref[idx]].astype(np.int64),
        ],
        axis=1,
    ).reshape(tp, 2)
    return Matching(
        tp=tp,
        fp=ov.n_pred - tp,
        fn=ov.n_ref - tp,
        n_pred=ov.n_pred,
        n_ref=ov.n_ref,
        threshold=threshold,
        pairs=pairs,
        ious=ov.pair_iou[idx].copy(),
    )


def match_instances(pred, ref, *, threshold: float = 0.5, min_size: int = 0) -> Matching:
    """Optimal one-to-one matching of predicted to reference instances.

    A predicted and a reference object can be paired when their IoU is
    ``>= threshold``. Among such pairs the matching with the most pairs is
    chosen (``scipy.optimize.linear_sum_assignment``), ties broken by the
    larger total IoU, the rule of ``cellpose.metrics.average_precision``. For
    ``threshold > 0.5`` every object has at most one candidate and no
    assignment problem is solved at all.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Instance label maps of one shape, ``0`` = background. Labels need not
        be consecutive.
    threshold : float, optional
        IoU threshold in ``(0, 1]``.
    min_size : int, optional
        Objects with fewer pixels are removed from *both* maps before matching
        (deepflash2 excludes small objects on both sides).

    Returns
    -------
    Matching
        Counts ``tp``, ``fp``, ``fn`` and the matched label pairs with their IoU.
        Empty inputs give zero counts (``tp = fp = fn = 0`` when both are empty).
    """
    t = _check_threshold(threshold)
    return _matching(_overlaps(pred, ref, min_size=min_size), t)
