"""Uncertainty maps (u and its epistemic / aleatoric parts), the image score U and the
encoder-feature distance to the training set."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "CellNovelty": "._features",
        "FeatureStats": "._features",
        "ScorePartials": "._maps",
        "UncertaintyMaps": "._maps",
        "argmax_labels": "._maps",
        "cell_distances": "._features",
        "cell_rows": "._features",
        "combine_partials": "._maps",
        "fit_feature_stats": "._features",
        "image_score": "._maps",
        "ledoit_wolf": "._features",
        "mahalanobis": "._features",
        "object_border": "._maps",
        "score_partials": "._maps",
        "uncertainty_maps": "._maps",
    },
)
