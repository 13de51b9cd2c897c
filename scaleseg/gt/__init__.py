"""Ground-truth estimation from several experts and expert scoring.

Kernels only (numpy + SimpleITK, imported when first used): :func:`staple`,
:func:`majority_vote`, :func:`estimate_gt`; expert comparison with
:func:`expert_scores`, :func:`inter_expert_agreement`, :func:`consensus_bound`.
"""

from ._estimate import estimate_gt, majority_vote, staple
from ._scores import consensus_bound, expert_scores, inter_expert_agreement

__all__ = [
    "consensus_bound",
    "estimate_gt",
    "expert_scores",
    "inter_expert_agreement",
    "majority_vote",
    "staple",
]
