"""Encoder-feature distance to the training set (kernels, numpy): Ledoit–Wolf covariance,
Mahalanobis distance.

For out-of-distribution ranking every window's deepest encoder feature map is average-pooled to
one vector ``f`` (D values); the training set's vectors give a mean ``μ`` and a shrunk
covariance ``Σ``; a window's score is ``d = sqrt((f - μ)ᵀ Σ⁻¹ (f - μ))``. Images far from the
training data in feature space get large distances even where the members agree with each other
(where the epistemic part of u is blind).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureStats", "fit_feature_stats", "ledoit_wolf", "mahalanobis"]


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf shrunk covariance of the rows of ``x``.

    Parameters
    ----------
    x : (N, D) ndarray
        Samples (rows); centred here.

    Returns
    -------
    cov : (D, D) ndarray of float64
        ``(1 - a) S + a (tr S / D) I`` with ``S`` the empirical (1/N) covariance.
    shrinkage : float
        ``a`` in [0, 1], the Ledoit & Wolf (2004) estimate of the optimal shrinkage.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples as rows of a 2-D array, got shape {x.shape}")
    n, d = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    x2 = xc * xc
    # ||S - mu I||_F^2 / d and the variance of the entries of S, both per dimension
    delta = (np.sum(s * s) - 2.0 * mu * np.trace(s) + d * mu * mu) / d
    beta = (np.sum(x2.T @ x2) / n - np.sum(s * s)) / (d * n)
    beta = min(beta, delta)
    a = 0.0 if delta <= 0 else float(beta / delta)
    cov = (1.0 - a) * s
    cov[np.diag_indices(d)] += a * mu
    return cov, a


@dataclass(frozen=True)
class FeatureStats:
    """Training-set statistics of pooled encoder features of one ensemble member.

    Attributes
    ----------
    mean : (D,) ndarray of float64
    precision : (D, D) ndarray of float64
        Inverse of the shrunk covariance.
    n_samples : int
        Windows the statistics were measured on.
    shrinkage : float
    """

    mean: np.ndarray
    precision: np.ndarray
    n_samples: int
    shrinkage: float

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": np.ascontiguousarray(self.mean, dtype=np.float64),
            "precision": np.ascontiguousarray(self.precision, dtype=np.float64),
            "n_samples": np.array([self.n_samples], dtype=np.int64),
            "shrinkage": np.array([self.shrinkage], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureStats:
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        precision = np.asarray(arrays["precision"], dtype=np.float64)
        if mean.ndim != 1 or precision.shape != (mean.size, mean.size):
            raise ValueError(
                f"feature statistics: mean {mean.shape} and precision {precision.shape} disagree"
            )
        return cls(
            mean,
            precision,
            int(np.asarray(arrays["n_samples"]).ravel()[0]),
            float(np.asarray(arrays["shrinkage"]).ravel()[0]),
        )


def fit_feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and Ledoit–Wolf precision of ``features`` ``(N, D)`` (N ≥ 2 windows)."""
    features = np.asarray(features, dtype=np.float64)
    if not np.isfinite(features).all():
        raise ValueError("feature statistics: the features contain NaN or infinite values")
    cov, a = ledoit_wolf(features)
    # the shrunk covariance is positive definite unless every feature is constant
    precision = np.linalg.pinv(cov, hermitian=True)
    return FeatureStats(features.mean(axis=0), precision, int(features.shape[0]), a)


def mahalanobis(features: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """Distances ``sqrt((f - μ)ᵀ P (f - μ))`` of the rows of ``features`` ``(N, D)``.

    Returns
    -------
    (N,) ndarray of float64
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != stats.dim:
        raise ValueError(f"features of shape {f.shape} do not match statistics of dim {stats.dim}")
    diff = f - stats.mean
    d2 = np.einsum("nd,de,ne->n", diff, stats.precision, diff)
    return np.sqrt(np.clip(d2, 0.0, None))
