"""The QA images table: ranking, Umin, review flags, OOD detection and per-class summaries.

Pandas composition of the kernels in :mod:`._ranking`, :mod:`._umin` and :mod:`._ood`; no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._inputs import ood_score_columns
from ._ood import auroc, average_precision
from ._ranking import PASS, REVIEW, rank_scores, review_flags, review_scores
from ._umin import estimate_umin, pearson_r

__all__ = ["QA_COLUMNS", "class_summary", "instance_class_totals", "ood_summary", "qa_table"]

#: Columns :func:`qa_table` adds to a prediction's images table.
QA_COLUMNS = ("qa_rank", "review", "review_rule", "review_reason", "review_score", "qa_test")


def qa_table(
    images: pd.DataFrame,
    *,
    scores: pd.Series | None = None,
    metric: str = "dice",
    tau: float = 0.75,
    umin: float | None = None,
    test_images: list[str] | None = None,
    ood: pd.DataFrame | None = None,
    distance_threshold: float | None = None,
    score: str = "U",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank images by U, estimate Umin and flag images for review (U rule and distance rule,
    see :func:`~scaleseg.qa.review_flags`).

    Parameters
    ----------
    images : pandas.DataFrame
        A prediction's images table (``image``, ``status``, ``U``, ``U_reason``, ``error``...).
    scores : pandas.Series, optional
        Evaluation score per image name (e.g. Dice); images with a score form the test set
        (restricted to ``test_images`` when given) from which Umin is estimated.
    metric : str
        Name of the score (the column added to the table).
    tau : float
        A test image with ``score < tau`` counts as failed.
    umin : float, optional
        Use this Umin instead of the estimate (which is still reported).
    test_images : list of str, optional
        Only these images count as the test set.
    ood : pandas.DataFrame, optional
        From :func:`~scaleseg.qa.read_ood_labels`: adds ``ood`` and ``ood_kind``.
    distance_threshold : float, optional
        Threshold of the distance rule; default the ensemble's calibrated one, which predict
        records in the ``ood_threshold`` column (none for older predictions and ensembles).
    score : str
        The image-score column to rank, estimate Umin, flag and correlate by: ``U`` (default)
        or a variant added by :func:`~scaleseg.qa.add_image_score` (``U_border``); the U rule
        then reports itself under that name.

    Returns
    -------
    table : pandas.DataFrame
        ``images`` plus ``qa_rank`` (Int64; 1 = review first; NA for failed predictions,
        which come last), ``review`` (boolean; NA when no rule fired and Umin is unknown),
        ``review_rule`` (the rules that fired: ``U``, ``distance``, ``U+distance``,
        ``U undefined``, ``failed``), ``review_reason``, ``review_score`` (max of U / Umin
        and distance / threshold, >= 1 exactly when a rule fires; see
        :func:`~scaleseg.qa.review_scores`), ``qa_test`` (bool), ``<metric>``
        when scores are given, ``ood`` / ``ood_kind`` when labels are given; sorted by
        ``qa_rank``.
    info : dict
        ``umin``, ``umin_source`` (``"given"``, ``"estimated"`` or ``"none"``),
        ``umin_reason``, ``umin_estimate``, ``n_test``, ``n_below``, ``tau``, ``metric``,
        ``pearson_r`` / ``pearson_n`` (U vs score on the test set), ``distance_threshold``
        and its ``distance_threshold_source`` (``"given"``, ``"ensemble"``, ``"none"``),
        ``n_review``, ``n_review_u`` / ``n_review_distance`` (images each rule flags),
        ``n_unknown``, ``n_images``, ``n_failed``.
    """
    t = images.sort_values("image", kind="stable", ignore_index=True).copy()
    ok = (t["status"] == "ok").to_numpy()
    if score not in t.columns:
        raise ValueError(f"the images table has no score column {score!r}")
    u = pd.to_numeric(t[score], errors="coerce").to_numpy(np.float64)
    ranks = rank_scores(u, valid=ok)
    t["qa_rank"] = pd.array(np.where(ranks > 0, ranks, 0), dtype="Int64")
    t.loc[~ok, "qa_rank"] = pd.NA
    info: dict[str, Any] = {
        "tau": float(tau),
        "metric": metric,
        "score": score,
        "n_images": len(t),
    }
    info["n_failed"] = int((~ok).sum())
    test = np.zeros(len(t), bool)
    est = {"umin": float("nan"), "n_test": 0, "n_below": 0, "reason": "no evaluation given"}
    info.update(pearson_r=float("nan"), pearson_n=0)
    if scores is not None:
        t[metric] = t["image"].map(scores).astype(np.float64)
        test = ok & t[metric].notna().to_numpy()
        if test_images is not None:
            test &= t["image"].isin(set(test_images)).to_numpy()
        s = t[metric].to_numpy(np.float64)
        est = estimate_umin(u[test], s[test], tau=tau)
        info["pearson_r"], info["pearson_n"] = pearson_r(u[test], s[test])
    t["qa_test"] = test
    info.update(umin_estimate=est["umin"], n_test=est["n_test"], n_below=est["n_below"])
    if umin is not None:
        info.update(umin=float(umin), umin_source="given", umin_reason="")
    elif np.isfinite(est["umin"]):
        info.update(umin=est["umin"], umin_source="estimated", umin_reason="")
    else:
        info.update(umin=float("nan"), umin_source="none", umin_reason=est["reason"])
    if distance_threshold is not None:
        info.update(distance_threshold=float(distance_threshold), distance_threshold_source="given")
    else:
        found = pd.to_numeric(t.get("ood_threshold", pd.Series(dtype=float)), errors="coerce")
        found = found[np.isfinite(found)]
        info.update(
            distance_threshold=float(found.iloc[0]) if len(found) else float("nan"),
            distance_threshold_source="ensemble" if len(found) else "none",
        )
    failed = [None if k else (e or "status not ok") for e, k in zip(t["error"], ok)]
    dist = pd.to_numeric(t.get("ood_distance", pd.Series(np.nan, index=t.index)), errors="coerce")
    flags, reasons, rules = review_flags(
        u,
        info["umin"],
        u_reasons=t["U_reason"].tolist(),
        failed=failed,
        umin_reason=info["umin_reason"],
        distance=dist.to_numpy(np.float64),
        distance_threshold=info["distance_threshold"],
        score_name=score,
    )
    t["review"] = pd.array(
        [True if f == REVIEW else False if f == PASS else pd.NA for f in flags], dtype="boolean"
    )
    t["review_rule"] = rules
    t["review_reason"] = reasons
    t["review_score"] = review_scores(
        u,
        info["umin"],
        distance=dist.to_numpy(np.float64),
        distance_threshold=info["distance_threshold"],
        failed=failed,
    )
    info["n_review"] = int((flags == REVIEW).sum())
    info["n_review_u"] = sum(score in r.split("+") for r in rules)
    info["n_review_distance"] = sum("distance" in r.split("+") for r in rules)
    info["n_unknown"] = int((flags < 0).sum())
    if ood is not None:
        lab = ood.set_index("image")
        t["ood"] = pd.array(t["image"].map(lab["ood"]), dtype="boolean")
        t["ood_kind"] = t["image"].map(lab["ood_kind"]).fillna("").astype(str)
    t = t.sort_values(["qa_rank", "image"], na_position="last", kind="stable", ignore_index=True)
    return t, info


def ood_summary(table: pd.DataFrame, *, thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """AUROC and AUPRC of each OOD score for the images with a known OOD label.

    Uses the ``ood`` / ``ood_kind`` columns of :func:`qa_table` and the scores of
    :func:`~scaleseg.qa.ood_score_columns` (U, U_epistemic, ood_distance; higher = more
    suspicious, undefined = most suspicious). Failed predictions are left out. ``thresholds``
    (score -> value) gives the operating point of ``flagged_ood`` / ``flagged_in``. One row per
    score for all OOD images together (``ood_kind == "all"``) and, with several kinds, one per
    kind against the same in-distribution images.

    The review flag itself is scored as one more row, ``score == "review"`` (flagged = 1; an
    unknown flag counts as not flagged), and the continuous ``review_score`` behind it (both
    rules on one scale, threshold 1) as another, with ``flagged_ood`` (recall: the share of OOD
    images flagged) and ``flagged_in`` (in-distribution images flagged); both columns are
    filled for the continuous scores too, at the distance rule's threshold for
    ``ood_distance`` and at Umin for ``U`` when known.

    Returns
    -------
    pandas.DataFrame
        ``score``, ``ood_kind``, ``n_ood``, ``n_in``, ``n_undefined`` (images whose score is
        NaN), ``auroc``, ``auprc``, ``prevalence`` (the AUPRC of a random score),
        ``flagged_ood`` and ``flagged_in``.
    """
    cols = [
        "score",
        "ood_kind",
        "n_ood",
        "n_in",
        "n_undefined",
        "auroc",
        "auprc",
        "prevalence",
        "flagged_ood",
        "flagged_in",
    ]
    if "ood" not in table:
        return pd.DataFrame(columns=cols)
    lab = table[(table["status"] == "ok") & table["ood"].notna()]
    is_ood = lab["ood"].to_numpy(bool)
    kinds = sorted(set(lab.loc[is_ood, "ood_kind"]) - {""})
    groups = [("all", np.ones(len(lab), bool))]
    if len(kinds) > 1:
        groups += [(k, ~is_ood | (lab["ood_kind"] == k).to_numpy()) for k in kinds]
    scores = {c: pd.to_numeric(lab[c], errors="coerce").to_numpy(np.float64) for c in
              ood_score_columns(lab)}  # fmt: skip
    rs = pd.to_numeric(lab.get("review_score", pd.Series(dtype=float)), errors="coerce")
    rs = rs.to_numpy(np.float64)
    if np.isfinite(rs).any():  # (none: no rule had a threshold, nothing to score)
        # NaN = no rule could score the image, which the flag leaves unknown (= not flagged)
        scores["review_score"] = np.where(np.isnan(rs), 0.0, rs)
    if "review" in lab:
        scores["review"] = lab["review"].fillna(False).to_numpy(bool).astype(np.float64)
    thresholds = {"review": 0.5, "review_score": 1.0, **(thresholds or {})}
    rows = []
    for score, s in scores.items():
        thr = thresholds.get(score)
        for kind, sel in groups:
            y = is_ood[sel]
            hit = (s[sel] >= thr) | np.isnan(s[sel]) if thr is not None and thr == thr else None
            rows.append(
                [
                    score,
                    kind,
                    int(y.sum()),
                    int((~y).sum()),
                    int(np.isnan(s[sel]).sum()),
                    auroc(s[sel], y),
                    average_precision(s[sel], y),
                    float(y.mean()) if y.size else float("nan"),
                    float(hit[y].mean()) if hit is not None and y.any() else float("nan"),
                    int(hit[~y].sum()) if hit is not None else pd.NA,
                ]
            )
    return pd.DataFrame(rows, columns=cols)


def instance_class_totals(frames) -> pd.DataFrame:
    """Per class: instance ``count``, ``u_sum`` and ``u_count`` (of the defined
    ``mean_uncertainty`` values), reduced over frames of instance rows as they stream in
    (memory bounded by one frame)."""
    totals: dict[int, list[float]] = {}
    for df in frames:
        if "class" not in df or not len(df):
            continue
        cls = df["class"].astype(int)
        mu = (
            pd.to_numeric(df["mean_uncertainty"], errors="coerce")
            if "mean_uncertainty" in df
            else pd.Series(np.nan, index=df.index)
        )
        grouped = pd.DataFrame({"class": cls, "u": mu}).groupby("class")["u"]
        for k, (n, u_sum, u_n) in pd.concat(
            [grouped.size(), grouped.sum(), grouped.count()], axis=1
        ).iterrows():
            t = totals.setdefault(int(k), [0, 0.0, 0])
            t[0] += int(n)
            t[1] += float(u_sum)
            t[2] += int(u_n)
    return pd.DataFrame(
        [(k, n, s, c) for k, (n, s, c) in sorted(totals.items())],
        columns=["class", "count", "u_sum", "u_count"],
    )


def class_summary(
    table: pd.DataFrame,
    *,
    per_image: pd.DataFrame | None = None,
    instances: pd.DataFrame | None = None,
    metric: str = "dice",
) -> pd.DataFrame:
    """Per class: how often it is predicted, how much of the images, and how uncertain.

    Parameters
    ----------
    table : pandas.DataFrame
        The QA images table (``fraction_<class>`` columns, ``U``, ``review``).
    per_image : pandas.DataFrame, optional
        Evaluation rows (index image) with ``<metric>_class_<k>`` columns (k = 1..K).
    instances : pandas.DataFrame, optional
        Per-class totals of the instance table (:func:`instance_class_totals`), or the rows of
        an instance table (``class``, ``mean_uncertainty``).

    Returns
    -------
    pandas.DataFrame
        ``class_id``, ``class``, ``images`` (predicted in), ``mean_fraction``,
        ``median_fraction``, ``mean_U`` (of the images it is predicted in), ``review``
        (of those, flagged), and when available ``mean_<metric>`` (test images) and
        ``instances`` / ``mean_instance_u``.
    """
    ok = table[table["status"] == "ok"]
    names = [c.removeprefix("fraction_") for c in table.columns if c.startswith("fraction_")]
    rows = []
    for k, name in enumerate(names):
        frac = pd.to_numeric(ok[f"fraction_{name}"], errors="coerce")
        present = frac > 0
        row: dict[str, Any] = {
            "class_id": k,
            "class": name,
            "images": int(present.sum()),
            "mean_fraction": float(frac.mean()) if len(frac) else np.nan,
            "median_fraction": float(frac.median()) if len(frac) else np.nan,
            "mean_U": float(pd.to_numeric(ok.loc[present, "U"], errors="coerce").mean()),
            "review": int(ok.loc[present, "review"].fillna(False).sum()),
        }
        col = f"{metric}_class_{k}"
        if per_image is not None and k > 0 and col in per_image:
            test = ok.loc[ok["qa_test"], "image"] if "qa_test" in ok else ok["image"]
            row[f"mean_{metric}"] = float(per_image.reindex(test)[col].mean())
        if instances is not None and k > 0:
            if "count" not in instances:  # a whole instance table: reduce it here
                instances = instance_class_totals([instances])
            hit = instances[instances["class"] == k]
            n = int(hit["count"].sum())
            u_n = float(hit["u_count"].sum())
            row["instances"] = n
            row["mean_instance_u"] = float(hit["u_sum"].sum()) / u_n if u_n else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
