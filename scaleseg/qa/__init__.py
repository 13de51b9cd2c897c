"""Quality assurance: review ranking by U, Umin from an evaluated test set, review flags,
out-of-distribution detection scores (AUROC / AUPRC), the HTML report with thumbnails from
pyramid levels, review records for the triage notebook and active-learning selection.

Kernels (numpy): :func:`rank_scores`, :func:`review_flags`, :func:`review_scores`,
:func:`estimate_umin`, :func:`pearson_r`, :func:`auroc`, :func:`average_precision`, the
thumbnail helpers.
Orchestration: :func:`run_qa`, :func:`annotation_candidates`, :func:`export_for_annotation`.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "BORDER_WIDTH": "._variants",
        "IMAGE_SCORES": "._variants",
        "OOD_SCORES": "._inputs",
        "PASS": "._ranking",
        "QA_COLUMNS": "._table",
        "QA_OUTPUTS": "._run",
        "REVIEW": "._ranking",
        "REVIEW_STATUSES": "._review",
        "SELECT_BY": "._select",
        "UNKNOWN": "._ranking",
        "add_image_score": "._variants",
        "annotation_candidates": "._select",
        "auroc": "._ood",
        "average_precision": "._ood",
        "average_ranks": "._ood",
        "border_score": "._variants",
        "check_qa_output": "._run",
        "class_summary": "._table",
        "estimate_umin": "._umin",
        "export_for_annotation": "._select",
        "ood_score_columns": "._inputs",
        "ood_summary": "._table",
        "outline": "._thumbnails",
        "pearson_r": "._umin",
        "pick_level": "._thumbnails",
        "plot_u_histogram": "._report",
        "plot_u_vs_score": "._report",
        "qa_table": "._table",
        "rank_scores": "._ranking",
        "read_evaluation": "._inputs",
        "read_ood_labels": "._inputs",
        "read_prediction_table": "._inputs",
        "read_reviews": "._review",
        "read_thumbnail": "._thumbnails",
        "record_review": "._review",
        "render_thumbnail": "._thumbnails",
        "resize_nearest": "._thumbnails",
        "review_flags": "._ranking",
        "review_scores": "._ranking",
        "review_order": "._ranking",
        "run_qa": "._run",
        "shrink": "._thumbnails",
        "to_display": "._thumbnails",
        "write_html_report": "._report",
    },
)
