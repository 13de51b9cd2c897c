"""Uncertainty maps (u and its epistemic / aleatoric parts), the image score U and the
encoder-feature distance to the training set."""

from ._features import FeatureStats, fit_feature_stats, ledoit_wolf, mahalanobis
from ._maps import (
    ScorePartials,
    UncertaintyMaps,
    argmax_labels,
    combine_partials,
    image_score,
    object_border,
    score_partials,
    uncertainty_maps,
)

__all__ = [
    "FeatureStats",
    "fit_feature_stats",
    "ledoit_wolf",
    "mahalanobis",
    "ScorePartials",
    "UncertaintyMaps",
    "argmax_labels",
    "combine_partials",
    "image_score",
    "object_border",
    "score_partials",
    "uncertainty_maps",
]
