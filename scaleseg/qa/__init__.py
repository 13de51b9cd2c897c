"""Quality assurance: review ranking by U, Umin from an evaluated test set, review flags,
out-of-distribution detection scores (AUROC / AUPRC), the HTML report with thumbnails from
pyramid levels, review records for the triage notebook and active-learning selection.

Kernels (numpy): :func:`rank_scores`, :func:`review_flags`, :func:`estimate_umin`,
:func:`pearson_r`, :func:`auroc`, :func:`average_precision`, the thumbnail helpers.
Orchestration: :func:`run_qa`, :func:`annotation_candidates`, :func:`export_for_annotation`.
"""

from ._inputs import (
    OOD_SCORES,
    ood_score_columns,
    read_evaluation,
    read_ood_labels,
    read_prediction_table,
)
from ._ood import auroc, average_precision, average_ranks
from ._ranking import PASS, REVIEW, UNKNOWN, rank_scores, review_flags, review_order
from ._report import plot_u_histogram, plot_u_vs_score, write_html_report
from ._review import REVIEW_STATUSES, read_reviews, record_review
from ._run import QA_OUTPUTS, check_qa_output, run_qa, thumbnail_task
from ._select import SELECT_BY, annotation_candidates, export_for_annotation, export_one
from ._table import QA_COLUMNS, class_summary, ood_summary, qa_table
from ._thumbnails import (
    outline,
    pick_level,
    read_thumbnail,
    render_thumbnail,
    resize_nearest,
    shrink,
    to_display,
)
from ._umin import estimate_umin, pearson_r
from ._variants import BORDER_WIDTH, IMAGE_SCORES, add_image_score, border_score

__all__ = [
    "BORDER_WIDTH",
    "IMAGE_SCORES",
    "OOD_SCORES",
    "PASS",
    "QA_COLUMNS",
    "QA_OUTPUTS",
    "REVIEW",
    "REVIEW_STATUSES",
    "SELECT_BY",
    "UNKNOWN",
    "add_image_score",
    "annotation_candidates",
    "auroc",
    "average_precision",
    "average_ranks",
    "border_score",
    "check_qa_output",
    "class_summary",
    "estimate_umin",
    "export_for_annotation",
    "export_one",
    "ood_score_columns",
    "ood_summary",
    "outline",
    "pearson_r",
    "pick_level",
    "plot_u_histogram",
    "plot_u_vs_score",
    "qa_table",
    "rank_scores",
    "read_evaluation",
    "read_ood_labels",
    "read_prediction_table",
    "read_reviews",
    "read_thumbnail",
    "record_review",
    "render_thumbnail",
    "resize_nearest",
    "review_flags",
    "review_order",
    "run_qa",
    "shrink",
    "thumbnail_task",
    "to_display",
    "write_html_report",
]
