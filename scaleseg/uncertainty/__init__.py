"""Uncertainty maps (u and its epistemic / aleatoric parts) and the image score U."""

from ._maps import (
    ScorePartials,
    UncertaintyMaps,
    argmax_labels,
    combine_partials,
    image_score,
    score_partials,
    uncertainty_maps,
)

__all__ = [
    "ScorePartials",
    "UncertaintyMaps",
    "argmax_labels",
    "combine_partials",
    "image_score",
    "score_partials",
    "uncertainty_maps",
]
