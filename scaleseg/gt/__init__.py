"""Ground-truth estimation from several experts and expert scoring.

Kernels only (numpy + SimpleITK, imported when first used): :func:`staple`,
:func:`majority_vote`, :func:`estimate_gt`; expert comparison with
:func:`expert_scores`, :func:`inter_expert_agreement`, :func:`consensus_bound`.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "consensus_bound": "._scores",
        "estimate_gt": "._estimate",
        "expert_scores": "._scores",
        "inter_expert_agreement": "._scores",
        "majority_vote": "._estimate",
        "staple": "._estimate",
    },
)
