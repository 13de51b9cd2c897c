"""Uncertainty maps and the image score U (kernels; paper eqs. 3-5, DESIGN.md).

For every class k, with p the per-member, per-augmentation probability and p̄ its mean::

    E[p - p²] + E[(p - p̄)²] = p̄ (1 - p̄)

so the map ``u = ζ/K Σ_k p̄_k (1 - p̄_k)`` (ζ = 4 puts u in [0, 1]) splits exactly into

* ``epistemic = ζ/K Σ_k E[(p - p̄)²]`` -- spread between members / augmentations (model
  disagreement, the signal out-of-distribution ranking needs), and
* ``aleatoric = ζ/K Σ_k E[p (1 - p)]`` -- the expected per-member uncertainty.

U is the mean of u over predicted foreground (ŷ ≠ 0), computed from partial sums so any blocking
gives the whole-image value.

``U_novel`` is the same mean with every foreground pixel's u raised to the novelty ν of its
pixel (:class:`~scaleseg.uncertainty.CellNovelty`: the weighted share of members and flips
whose deepest encoder cell there lies beyond every held-out training cell)::

    U_novel = mean over ŷ ≠ 0 of max(u, ν)

It equals U where nothing is novel and stays in [0, 1]. Members that agree on foreign
structures (confident errors) give low u there; ν counts those pixels as uncertain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "UncertaintyMaps",
    "uncertainty_maps",
    "argmax_labels",
    "object_border",
    "ScorePartials",
    "score_partials",
    "combine_partials",
    "image_score",
]


@dataclass
class UncertaintyMaps:
    """``u`` and its two parts, each ``(Y, X)`` float32."""

    u: np.ndarray
    epistemic: np.ndarray
    aleatoric: np.ndarray


def uncertainty_maps(
    mean: np.ndarray, mean_sq: np.ndarray, *, zeta: float = 4.0
) -> UncertaintyMaps:
    """Uncertainty from the ensemble moments.

    Parameters
    ----------
    mean : (K, Y, X) ndarray
        p̄ per class.
    mean_sq : (K, Y, X) ndarray
        E[p²] per class over the same members and augmentations.
    zeta : float
        Scale ζ (4 maps the binary maximum p̄ = 0.5 to u = 1).
    """
    mean = np.asarray(mean, dtype=np.float64)
    mean_sq = np.asarray(mean_sq, dtype=np.float64)
    k = mean.shape[0]
    scale = zeta / k
    spread = np.clip(mean_sq - mean * mean, 0.0, None)  # E[(p - p̄)²]; clip rounding below 0
    expected = np.clip(mean - mean_sq, 0.0, None)  # E[p (1 - p)]
    u = scale * (mean * (1.0 - mean)).sum(axis=0)
    return UncertaintyMaps(
        u=u.astype(np.float32),
        epistemic=(scale * spread.sum(axis=0)).astype(np.float32),
        aleatoric=(scale * expected.sum(axis=0)).astype(np.float32),
    )


def argmax_labels(mean: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """ŷ = argmax_k p̄_k as uint8 (uint16 beyond 255 classes); 0 = background.

    With ``threshold`` (two classes only) a pixel is foreground where ``p̄_1 >= threshold``
    (an ensemble's calibrated decision threshold; 0.5 is the argmax up to exact ties).
    """
    dtype = np.uint8 if mean.shape[0] <= 256 else np.uint16
    if threshold is None:
        return np.argmax(mean, axis=0).astype(dtype)
    if mean.shape[0] != 2:
        raise ValueError(f"a decision threshold needs 2 classes, got {mean.shape[0]}")
    return (mean[1] >= threshold).astype(dtype)


def object_border(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Predicted-foreground pixels within ``width`` pixels (city-block distance) of background
    or of the image edge: ``fg & ~binary_erosion(fg, iterations=width)`` with the 4-connected
    structuring element. ``U_border`` is the mean of u over these pixels (object borders are
    where experts and members disagree; the mean over all foreground dilutes that with object
    interiors).

    Parameters
    ----------
    labels : (Y, X) ndarray
        Semantic labels, 0 = background.
    width : int
        Border width in pixels (>= 1).
    """
    from scipy import ndimage as ndi

    if width < 1:
        raise ValueError(f"border width must be >= 1, got {width}")
    fg = np.asarray(labels) != 0
    return fg & ~ndi.binary_erosion(fg, iterations=int(width), border_value=0)


@dataclass(frozen=True)
class ScorePartials:
    """Partial sums of one block: Σu and Σ epistemic over predicted foreground, its pixel count,
    per-class pixel counts, the total pixel count, Σ of the feature-distance map over all
    pixels (NaN when the ensemble has no feature statistics) and Σ max(u, ν) over predicted
    foreground (NaN without a novelty map)."""

    sum_u: float
    sum_epistemic: float
    n_foreground: int
    class_counts: tuple[int, ...]
    n_pixels: int
    sum_distance: float = float("nan")
    sum_u_novel: float = float("nan")


def score_partials(
    labels: np.ndarray,
    maps: UncertaintyMaps,
    *,
    n_classes: int,
    distance: np.ndarray | None = None,
    novelty: np.ndarray | None = None,
) -> ScorePartials:
    """Partial sums for U (the feature distance and ``U_novel``, given their ``(Y, X)`` maps)
    over one block (``labels`` and maps of the block core)."""
    fg = labels != 0
    u_novel = float("nan")
    if novelty is not None:
        raised = np.maximum(maps.u[fg], np.asarray(novelty, dtype=np.float32)[fg])
        u_novel = float(raised.sum(dtype=np.float64))
    counts = np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
    return ScorePartials(
        sum_u=float(maps.u[fg].sum(dtype=np.float64)),
        sum_epistemic=float(maps.epistemic[fg].sum(dtype=np.float64)),
        n_foreground=int(fg.sum()),
        class_counts=tuple(int(c) for c in counts),
        n_pixels=int(labels.size),
        sum_distance=(float("nan") if distance is None else float(distance.sum(dtype=np.float64))),
        sum_u_novel=u_novel,
    )


def combine_partials(parts: list[ScorePartials]) -> ScorePartials:
    """Add the partial sums of the blocks of one image."""
    if not parts:
        raise ValueError("no partial sums to combine")
    k = max(len(p.class_counts) for p in parts)
    counts = np.zeros(k, dtype=np.int64)
    for p in parts:
        counts[: len(p.class_counts)] += p.class_counts
    return ScorePartials(
        sum_u=math.fsum(p.sum_u for p in parts),
        sum_epistemic=math.fsum(p.sum_epistemic for p in parts),
        n_foreground=sum(p.n_foreground for p in parts),
        class_counts=tuple(int(c) for c in counts),
        n_pixels=sum(p.n_pixels for p in parts),
        sum_distance=math.fsum(p.sum_distance for p in parts),  # NaN if any block lacks it
        sum_u_novel=math.fsum(p.sum_u_novel for p in parts),
    )


def image_score(p: ScorePartials) -> dict[str, float | str]:
    """U (mean u over predicted foreground), the epistemic score, ``U_novel`` (mean of
    max(u, ν) over predicted foreground; NaN without a novelty map), the feature distance
    (``ood_distance``: mean of the distance map over all pixels) and class fractions.

    Returns NaN for U with a reason when nothing is predicted as foreground.
    """
    out: dict[str, float | str] = {
        "foreground_fraction": p.n_foreground / p.n_pixels if p.n_pixels else float("nan"),
        "ood_distance": p.sum_distance / p.n_pixels if p.n_pixels else float("nan"),
    }
    for k, c in enumerate(p.class_counts):
        out[f"class_{k}_fraction"] = c / p.n_pixels if p.n_pixels else float("nan")
    if p.n_foreground == 0:
        out.update(
            U=float("nan"),
            U_epistemic=float("nan"),
            U_novel=float("nan"),
            U_reason="no foreground predicted",
        )
    else:
        out.update(
            U=p.sum_u / p.n_foreground,
            U_epistemic=p.sum_epistemic / p.n_foreground,
            U_novel=p.sum_u_novel / p.n_foreground,
            U_reason="",
        )
    return out
