"""Place a model's score relative to the range of expert scores."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RELATIVE_PERFORMANCE", "relative_performance"]

#: The three outcomes, worded as in the deepflash2 paper.
RELATIVE_PERFORMANCE = (
    "below the worst expert",
    "within the expert range",
    "above the best expert",
)


def relative_performance(score: float, expert_scores, *, higher_is_better: bool = True) -> str:
    """Compare a score with the scores of the experts on the same images.

    Parameters
    ----------
    score : float
        The model's score (e.g. Dice or mAP against the estimated ground truth).
    expert_scores : sequence of float
        Each expert's score against the same reference (at least one, no NaN).
    higher_is_better : bool, optional
        ``False`` for error-type scores (e.g. error rate), where the best expert
        has the lowest value.

    Returns
    -------
    str
        ``"below the worst expert"``, ``"within the expert range"`` (bounds
        included) or ``"above the best expert"``.

    Examples
    --------
    >>> relative_performance(0.9, [0.8, 0.85])
    'above the best expert'
    >>> relative_performance(0.3, [0.2, 0.5], higher_is_better=False)
    'within the expert range'
    """
    s = float(score)
    experts = np.asarray(expert_scores, dtype=np.float64).ravel()
    if experts.size == 0:
        raise ValueError("expert_scores is empty: need at least one expert score")
    if math.isnan(s):
        raise ValueError("score is NaN")
    if np.isnan(experts).any():
        raise ValueError(f"expert_scores contains NaN: {experts.tolist()}")
    worst, best = (
        (experts.min(), experts.max()) if higher_is_better else (experts.max(), experts.min())
    )
    sign = 1.0 if higher_is_better else -1.0
    if sign * (s - worst) < 0:
        return RELATIVE_PERFORMANCE[0]
    if sign * (s - best) > 0:
        return RELATIVE_PERFORMANCE[2]
    return RELATIVE_PERFORMANCE[1]
