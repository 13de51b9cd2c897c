"""Expert scores, inter-expert agreement and the human-consensus bound."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations, permutations

import numpy as np

from scaleseg.metrics import (
    average_precision,
    dice,
    iou,
    label_instances,
    match_instances,
    mean_average_precision,
    remove_small_instances,
)
from scaleseg.metrics._instance_scores import _error_rate

from ._estimate import _validate_masks

__all__ = ["consensus_bound", "expert_scores", "inter_expert_agreement"]

_AGREEMENT_METRICS = ("dice", "iou", "map", "ap50")


def _named(masks, what: str) -> Mapping:
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"{what}: masks must be a mapping expert name -> array, got {type(masks).__name__}"
        )
    return masks


def expert_scores(
    masks, gt, *, n_classes: int | None = None, min_size: int = 0, instances: bool = True
) -> list[dict]:
    """Score each expert's mask against an estimated ground truth.

    Parameters
    ----------
    masks : mapping of str to (Y, X) ndarray of int
        Semantic label map of each expert (at least 2), ``0`` = background.
    gt : (Y, X) ndarray of int
        The estimated ground truth (e.g. from :func:`staple`), same shape.
    n_classes : int, optional
        Number of foreground classes K; default the largest label in the masks
        and ``gt``.
    min_size : int, optional
        Instances (connected components per class, see
        :func:`scaleseg.metrics.label_instances`) with fewer pixels are dropped
        from both sides before matching.
    instances : bool, optional
        ``False`` skips the instance matching: ``map`` and ``ap50`` are NaN.

    Returns
    -------
    list of dict
        One dict per expert, in input order: ``expert`` (name), ``dice``
        (macro over classes 1..K), ``map`` (mean AP over η = 0.50..0.95) and
        ``ap50`` (AP at η = 0.5). Instance matching is class-agnostic.
    """
    masks = _named(masks, "expert_scores")
    names, arrays, k = _validate_masks({**masks, "<gt>": gt}, n_classes)
    gt_arr = arrays.pop()
    names.pop()
    gt_inst = label_instances(gt_arr, min_size=min_size) if instances else None
    out = []
    for name, a in zip(names, arrays):
        row = {"expert": name, "dice": dice(a, gt_arr, n_classes=k), "map": np.nan, "ap50": np.nan}
        if instances:
            inst = label_instances(a, min_size=min_size)
            row["map"] = mean_average_precision(inst, gt_inst)
            row["ap50"] = float(average_precision(inst, gt_inst, thresholds=[0.5])[0])
        out.append(row)
    return out


def inter_expert_agreement(
    masks, *, metric: str = "dice", n_classes: int | None = None, min_size: int = 0
):
    """Pairwise agreement between experts.

    Parameters
    ----------
    masks : mapping of str to (Y, X) ndarray of int
        Semantic label map of each expert (at least 2).
    metric : {"dice", "iou", "map", "ap50"}
        Macro Dice or IoU of the semantic maps, or mAP / AP@0.5 of their
        instances (connected components per class after the ``min_size`` filter).
        All four are symmetric in their two arguments.
    n_classes : int, optional
        Number of foreground classes K; default the largest label present.
    min_size : int, optional
        Minimum instance size for ``"map"`` and ``"ap50"``.

    Returns
    -------
    pandas.DataFrame
        Experts x experts, symmetric, float, diagonal 1.0; index and columns
        are the expert names.
    """
    import pandas as pd

    if metric not in _AGREEMENT_METRICS:
        raise ValueError(f"metric must be one of {_AGREEMENT_METRICS}, got {metric!r}")
    names, arrays, k = _validate_masks(_named(masks, "inter_expert_agreement"), n_classes)
    if metric in ("map", "ap50"):
        arrays = [label_instances(a, min_size=min_size) for a in arrays]
    n = len(names)
    mat = np.eye(n)
    for i, j in combinations(range(n), 2):
        a, b = arrays[i], arrays[j]
        if metric == "dice":
            v = dice(a, b, n_classes=k)
        elif metric == "iou":
            v = iou(a, b, n_classes=k)
        elif metric == "map":
            v = mean_average_precision(a, b)
        else:
            v = float(average_precision(a, b, thresholds=[0.5])[0])
        mat[i, j] = mat[j, i] = v
    return pd.DataFrame(mat, index=names, columns=names)


def consensus_bound(
    masks, *, threshold: float = 0.5, min_size: int = 0, instances: bool = False
) -> dict:
    """Human-consensus error bound from inter-annotator disagreement.

    Following Cellpose-SAM (Pachitariu et al. 2025): if two annotators each
    deviate from the (unknown) consensus with error rate ``e``, their mutual
    error rate is about ``2 e``; so the error rate a model would reach by
    matching the consensus is about half the mean pairwise error rate.

    Parameters
    ----------
    masks : mapping of str to (Y, X) ndarray of int
        Each annotator's mask (at least 2): semantic maps (instances are their
        connected components per class) or, with ``instances=True``, instance
        label maps used as they are.
    threshold : float, optional
        IoU threshold of a match.
    min_size : int, optional
        Instances with fewer pixels are dropped before matching.
    instances : bool, optional
        ``True`` when ``masks`` already hold instance labels.

    Returns
    -------
    dict
        ``pairwise_error_rate``: pandas.DataFrame, rows = the annotator taken as
        reference, columns = the one compared, ``(FP + FN) / (TP + FN)``, NaN on
        the diagonal; ``mean_pairwise_error_rate``: mean over all ordered pairs;
        ``consensus_error_rate``: half of it; ``n_pairs``: number of ordered
        pairs. An empty reference facing a non-empty mask gives ``inf``
        (see :func:`scaleseg.metrics.error_rate`), and so does the mean.
    """
    import pandas as pd

    masks = _named(masks, "consensus_bound")
    if instances:
        names = [str(k) for k in masks]
        arrays = [np.asarray(m) for m in masks.values()]
        _check_instance_masks(names, arrays)
        arrays = [remove_small_instances(a, min_size=min_size) for a in arrays]
    else:
        names, arrays, _ = _validate_masks(masks, None)
        arrays = [label_instances(a, min_size=min_size) for a in arrays]
    n = len(names)
    mat = np.full((n, n), np.nan)
    for r, p in permutations(range(n), 2):
        m = match_instances(arrays[p], arrays[r], threshold=threshold)
        mat[r, p] = _error_rate(m.tp, m.fp, m.fn)
    mean = float(np.mean(mat[~np.eye(n, dtype=bool)]))
    return {
        "pairwise_error_rate": pd.DataFrame(mat, index=names, columns=names),
        "mean_pairwise_error_rate": mean,
        "consensus_error_rate": mean / 2,
        "n_pairs": n * (n - 1),
    }


def _check_instance_masks(names, arrays) -> None:
    if len(arrays) < 2:
        raise ValueError(f"need masks from at least 2 annotators, got {len(arrays)}")
    for name, a in zip(names, arrays):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"annotator {name!r}: mask must have an integer dtype, got {a.dtype}")
        if a.shape != arrays[0].shape:
            raise ValueError(
                f"annotator {name!r} has shape {a.shape}, "
                f"but annotator {names[0]!r} has shape {arrays[0].shape}"
            )
