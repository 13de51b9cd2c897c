"""Evaluate predictions against a reference, image by image, with the expert range.

Work is one task per image: the task reads its prediction, reference(s) and expert masks
itself (:class:`~scaleseg.evaluation.LabelItem` is a small picklable description), scores
them with the :mod:`scaleseg.metrics` kernels and returns plain numbers. With a dask
``Client`` the tasks run on the cluster, else in this process. Tables are assembled here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaleseg.metrics import (
    MAP_THRESHOLDS,
    dice_per_class,
    instance_scores,
    iou_per_class,
    label_instances,
    relative_performance,
)

from ._sources import ALL_EXPERTS, LabelItem, LabelSource, resolve_source

__all__ = ["KINDS", "evaluate", "score_maps", "summarize"]

KINDS = ("semantic", "instance", "both")
_AP_COLUMNS = [f"ap_{t:.2f}" for t in MAP_THRESHOLDS]
_COUNT_COLUMNS = ["n_pred", "n_ref", "tp", "fp", "fn"]
_SCORE_COLUMNS = ["map", "ap50", "precision", "recall", "f1", "error_rate", "pq", "sq", "rq", "aji"]
_INSTANCE_COLUMNS = [*_COUNT_COLUMNS, *_AP_COLUMNS, *_SCORE_COLUMNS]
_EXPERT_COLUMNS = ["expert_metric", "n_experts", "expert_min", "expert_max", "relative_performance"]


# -- per-image kernel (numpy only) -----------------------------------------------------------
def _instances_of(labels: np.ndarray, given: bool) -> np.ndarray:
    return labels if given else label_instances(labels)


def score_maps(
    pred,
    ref,
    *,
    kind: str = "semantic",
    n_classes: int | None = None,
    min_size: int = 0,
    pred_instances: bool = False,
    ref_instances: bool = False,
) -> dict[str, Any]:
    """Semantic and/or instance scores of one prediction against one reference.

    Parameters
    ----------
    pred, ref : (Y, X) ndarray of int
        Label maps of one shape, ``0`` = background: semantic classes, or instance labels
        where ``pred_instances`` / ``ref_instances`` say so.
    kind : {"semantic", "instance", "both"}
    n_classes : int, optional
        Foreground classes K; default the largest class present in either map.
    min_size : int, optional
        Instances with fewer pixels are dropped from both sides before matching.
    pred_instances, ref_instances : bool, optional
        The map already holds instances. Otherwise instances are the connected components
        of each class. When either side holds instances, the semantic comparison is
        foreground against foreground (both maps binarised).

    Returns
    -------
    dict
        ``dice_pc`` and ``iou_pc`` ((K,) arrays, classes 1..K) for semantic kinds, and the
        scalar instance scores (``map``, ``ap50``, ``ap_0.50`` ... ``ap_0.95``,
        ``precision``, ``recall``, ``f1``, ``error_rate``, ``pq``, ``sq``, ``rq``, ``aji``,
        counts) for instance kinds.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out: dict[str, Any] = {}
    if kind in ("semantic", "both"):
        p, r = pred, ref
        if pred_instances or ref_instances:
            p, r, n_classes = p > 0, r > 0, 1
        if n_classes is None:
            n_classes = max(int(p.max()) if p.size else 0, int(r.max()) if r.size else 0, 1)
        out["dice_pc"] = dice_per_class(p, r, n_classes=n_classes)
        out["iou_pc"] = iou_per_class(p, r, n_classes=n_classes)
    if kind in ("instance", "both"):
        s = instance_scores(
            _instances_of(pred, pred_instances),
            _instances_of(ref, ref_instances),
            min_size=min_size,
        )
        out.update({c: s["ap"][i] for i, c in enumerate(_AP_COLUMNS)})
        out.update({c: s[c] for c in _INSTANCE_COLUMNS if c in s})
    return out


# -- one task per image ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    name: str
    pred: LabelItem
    refs: tuple[LabelItem, ...]
    experts: tuple[LabelItem, ...]
    kind: str
    n_classes: int | None
    min_size: int


def _read_checked(item: LabelItem, shape: tuple[int, ...], what: str, pred: LabelItem):
    arr = item.read()
    if arr.shape != shape:
        raise ValueError(
            f"image {item.name!r}: {what} shape {arr.shape} differs from prediction shape "
            f"{shape} ({item.description} vs {pred.description})"
        )
    return arr


def _run_job(job: _Job) -> dict[str, list[dict]]:
    """Read and score one image; returns raw rows (per reference) and expert rows."""
    pred = job.pred.read()
    maps = {r.key: _read_checked(r, pred.shape, "reference", job.pred) for r in job.refs}
    for e in job.experts:
        if e.key not in maps:
            maps[e.key] = _read_checked(e, pred.shape, f"expert {e.key!r}", job.pred)
    opts = {"kind": job.kind, "n_classes": job.n_classes, "min_size": job.min_size}
    rows, expert_rows = [], []
    for ref in job.refs:
        key = ref.key
        try:
            s = score_maps(
                pred,
                maps[key],
                pred_instances=job.pred.instances,
                ref_instances=ref.instances,
                **opts,
            )
            for e in job.experts:
                if e.key in (key, job.pred.key):
                    continue  # an expert is never compared with itself
                es = score_maps(maps[e.key], maps[key], ref_instances=ref.instances, **opts)
                expert_rows.append({"image": job.name, "reference": key, "expert": e.key, **es})
        except ValueError as exc:
            raise ValueError(f"image {job.name!r} (reference {key}): {exc}") from None
        height, width = pred.shape
        rows.append({"image": job.name, "reference": key, "height": height, "width": width, **s})
    return {"rows": rows, "experts": expert_rows}


def _run_jobs(jobs: list[_Job], client, progress: Callable[[int], Any] | None) -> list[dict]:
    from ..executor import map_units

    return map_units(
        _run_job, jobs, stage="evaluate", names=[j.name for j in jobs], client=client,
        progress=progress,
    ).results  # fmt: skip


# -- tables ------------------------------------------------------------------------------------
def _per_class_columns(raw: list[dict], k: int, per_class: bool) -> None:
    """Replace the per-class arrays by macro (and per-class) columns, padded to K classes."""
    for row in raw:
        if "dice_pc" not in row:
            continue
        for m in ("dice", "iou"):
            pc = np.ones(k)
            vals = row.pop(f"{m}_pc")
            pc[: vals.size] = vals  # a class absent from both maps scores 1.0
            row[m] = float(pc.mean())
            if per_class:
                row.update({f"{m}_class_{c}": float(pc[c - 1]) for c in range(1, k + 1)})


def _n_classes(raw: list[dict], n_classes: int | None) -> int:
    if n_classes is not None:
        return n_classes
    return max([r["dice_pc"].size for r in raw if "dice_pc" in r] or [1])


def _add_expert_range(rows: list[dict], expert_rows: list[dict], metric: str) -> None:
    by_key: dict[tuple[str, str], list[float]] = {}
    for e in expert_rows:
        by_key.setdefault((e["image"], e["reference"]), []).append(e[metric])
    for row in rows:
        scores = [s for s in by_key.get((row["image"], row["reference"]), []) if np.isfinite(s)]
        row["expert_metric"] = metric
        row["n_experts"] = len(scores)
        row["expert_min"] = min(scores) if scores else np.nan
        row["expert_max"] = max(scores) if scores else np.nan
        score = row.get(metric, np.nan)
        ok = scores and score is not None and np.isfinite(score)
        row["relative_performance"] = relative_performance(score, scores) if ok else None


def _columns(df, k: int, per_class: bool, kind: str) -> list[str]:
    cols = ["image", "reference", "missing", "height", "width"]
    if kind in ("semantic", "both"):
        cols += ["dice", "iou"]
        if per_class:
            cols += [f"{m}_class_{c}" for m in ("dice", "iou") for c in range(1, k + 1)]
    if kind in ("instance", "both"):
        cols += _INSTANCE_COLUMNS
    cols += [c for c in _EXPERT_COLUMNS if c in df.columns]
    return cols


def summarize(per_image) -> Any:
    """Mean, median, std, min and max of each score over the scored images, per reference.

    Parameters
    ----------
    per_image : pandas.DataFrame
        The ``per_image`` table of :func:`evaluate`.

    Returns
    -------
    pandas.DataFrame
        Columns ``reference``, ``metric``, ``n`` (images scored), ``mean``, ``median``,
        ``std`` (``ddof=1``; NaN for one image), ``min``, ``max``. Infinite values (an error
        rate against an empty reference) are kept, so a mean may be ``inf``.
    """
    import pandas as pd

    skip = {"height", "width", "n_pred", "n_ref", "tp", "fp", "fn", "n_experts"}
    metrics = [
        c
        for c in per_image.columns
        if c not in skip and pd.api.types.is_numeric_dtype(per_image[c])
    ]
    rows = []
    for ref, grp in per_image.groupby("reference", sort=False):
        for m in metrics:
            v = grp[m].to_numpy(dtype=np.float64)
            v = v[~np.isnan(v)]
            with np.errstate(invalid="ignore", over="ignore"):
                stats = (
                    (v.mean(), np.median(v), v.std(ddof=1) if v.size > 1 else np.nan)
                    if v.size
                    else (np.nan,) * 3
                )
            lo, hi = (v.min(), v.max()) if v.size else (np.nan, np.nan)
            rows.append([ref, m, v.size, *stats, lo, hi])
    cols = ["reference", "metric", "n", "mean", "median", "std", "min", "max"]
    return pd.DataFrame(rows, columns=cols)


# -- the library entry point -------------------------------------------------------------------
def _as_source(src, label: str) -> LabelSource:
    return src if isinstance(src, LabelSource) else resolve_source(src, label=label)


def _expert_maps(experts, ref: LabelSource) -> dict[str, dict[str, LabelItem]]:
    if experts is False:
        return {}
    src = ref
    if experts is not None:
        src = experts
        if not isinstance(src, LabelSource):
            src = resolve_source(experts, label=ALL_EXPERTS)
    return {name: found for name, found in src.experts.items() if found}


def evaluate(
    pred_source,
    ref_source,
    *,
    kind: str = "semantic",
    n_classes: int | None = None,
    min_size: int = 0,
    experts=None,
    client=None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Score every predicted image against its reference (and place it in the expert range).

    Parameters
    ----------
    pred_source, ref_source : LabelSource or path
        From :func:`resolve_source`; a plain path is resolved with the label groups
        ``semantic`` (prediction) and ``est_gt`` (reference). A reference resolved with
        label ``"experts"`` gives one row per image and expert.
    kind : {"semantic", "instance", "both"}
        Dice/IoU, instance scores (AP per threshold, mAP, P/R/F1, error rate, PQ, AJI), or both.
    n_classes : int, optional
        Foreground classes K; default the largest class found in any map.
    min_size : int, optional
        Minimum instance size (pixels) for the instance scores.
    experts : LabelSource, path, None or False, optional
        Where expert masks come from: a collection (``labels/expert_*``) or a folder of
        expert sub-folders (resolved with label ``"experts"``); ``None`` (default) uses the
        reference's experts when it has any; ``False`` none. Each expert is scored against
        the same reference (never against itself, and never when it is the prediction).
    client : distributed.Client, optional
        Run one task per image on this cluster; default in this process.
    progress : callable, optional
        Called with ``1`` after each image.

    Returns
    -------
    dict
        ``per_image`` (DataFrame, one row per image and reference), ``summary``
        (see :func:`summarize`), ``experts`` (DataFrame, one row per image, reference and
        expert), ``warnings`` (list of str: images missing on one side) and ``headline``
        (the metric of the expert range: ``"dice"``, or ``"map"`` for ``kind="instance"``).

    Raises
    ------
    ValueError
        A prediction and its reference (or an expert) differ in shape, labels exceed
        ``n_classes``, or no image has both a prediction and a reference.
    """
    import pandas as pd

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    pred = _as_source(pred_source, "semantic")
    ref = _as_source(ref_source, "est_gt")
    expert_maps = _expert_maps(experts, ref)
    ref_label = ref.label or "masks"
    warnings, jobs, missing_rows = [], [], []
    for name in sorted({*pred.names, *ref.names}):
        why = None
        if name not in pred.items:
            why = f"prediction: {pred.missing.get(name, f'not in {pred.location}')}"
        elif name not in ref.items:
            why = f"reference: {ref.missing.get(name, f'not in {ref.location}')}"
        if why is not None:
            warnings.append(f"{name}: {why}")
            refs = [r.key for r in ref.items.get(name, [])] or [ref_label]
            missing_rows += [{"image": name, "reference": r, "missing": why} for r in refs]
            continue
        jobs.append(
            _Job(
                name,
                pred.items[name][0],
                tuple(ref.items[name]),
                tuple(expert_maps.get(name, {}).values()),
                kind,
                n_classes,
                min_size,
            )
        )
    if not jobs:
        raise ValueError(
            f"no image has both a prediction and a reference; first: {'; '.join(warnings[:3])}"
        )
    results = _run_jobs(jobs, client, progress)
    rows = [r for res in results for r in res["rows"]]
    expert_rows = [r for res in results for r in res["experts"]]
    binary = any(j.pred.instances or any(r.instances for r in j.refs) for j in jobs)
    k = 1 if binary else _n_classes(rows + expert_rows, n_classes)
    per_class = k > 1 and kind != "instance"
    _per_class_columns(rows + expert_rows, k, per_class)
    headline = "map" if kind == "instance" else "dice"
    if expert_maps:
        _add_expert_range(rows, expert_rows, headline)
    per_image = pd.DataFrame(rows + missing_rows)
    if per_image.empty:
        per_image = pd.DataFrame(columns=["image", "reference", "missing"])
    if "missing" not in per_image.columns:
        per_image["missing"] = None
    per_image = per_image.reindex(columns=_columns(per_image, k, per_class, kind))
    per_image = per_image.sort_values(["image", "reference"], kind="stable", ignore_index=True)
    expert_cols = ["image", "reference", "expert"]
    expert_table = pd.DataFrame(expert_rows)
    if not expert_table.empty:
        keep = [c for c in _columns(expert_table, k, per_class, kind) if c in expert_table]
        expert_table = expert_table[expert_cols + [c for c in keep if c not in expert_cols]]
    return {
        "per_image": per_image,
        "summary": summarize(per_image),
        "experts": expert_table,
        "warnings": warnings,
        "headline": headline,
    }
