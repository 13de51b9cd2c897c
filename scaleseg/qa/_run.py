"""``qa`` over a prediction output: read tables, rank and flag, score OOD detection, draw the
report (orchestration). The prediction folder is only read; everything goes to ``out_dir``.

Output (``QA_DIR``)::

    images.parquet, images.csv   the prediction's images table + qa_rank, review, review_reason,
                                 qa_test, <metric>, ood, ood_kind
    ood.csv                      AUROC / AUPRC per OOD score (when OOD labels are known)
    classes.csv                  per-class summary
    qa.json                      Umin, its source, τ, metric, Pearson r, counts
    report.html                  self-contained report (figures and thumbnails embedded)
    report/                      the same figures and thumbnails as PNG files
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..instances._run import has_instances, iter_instances
from ..tables import read_image_list
from ._inputs import read_evaluation, read_ood_labels, read_prediction_table
from ._report import plot_u_histogram, plot_u_vs_score, write_html_report
from ._table import class_summary, instance_class_totals, ood_summary, qa_table
from ._thumbnails import read_thumbnail, render_thumbnail
from ._variants import IMAGE_SCORES, add_image_score, check_score

__all__ = ["QA_OUTPUTS", "check_qa_output", "run_qa", "thumbnail_task"]

#: What :func:`run_qa` writes into its output folder.
QA_OUTPUTS = (
    "images.parquet",
    "images.csv",
    "ood.csv",
    "classes.csv",
    "qa.json",
    "report.html",
    "report",
)


def check_qa_output(out_dir: str | Path, prediction: str | Path, *, overwrite: bool) -> Path:
    """Refuse a non-empty ``out_dir`` (unless ``overwrite``) and any folder inside or equal to
    the prediction (its outputs are inputs here and are never modified)."""
    out = Path(out_dir).resolve()
    pred = Path(prediction).resolve()
    if out == pred or pred in out.parents:
        raise ValueError(f"{out_dir}: the QA folder must lie outside the prediction {prediction}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out.is_dir() and any(p.name != "run.json" for p in out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: QA folder exists and is not empty (use --overwrite)")
    return out


def thumbnail_task(job: dict[str, Any]) -> str | None:
    """Read and draw one thumbnail (a picklable job: urls, png path, title, sizes)."""
    thumb = read_thumbnail(
        job.get("image_url"),
        job.get("output_url"),
        min_side=job.get("min_side", 96),
        max_side=job.get("max_side", 256),
    )
    if all(thumb[k] is None for k in ("image", "labels", "u")):
        return None
    return str(render_thumbnail(thumb, job["png"], title=job.get("title", "")))


def _null_nan(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _null_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_null_nan(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _url(v: Any) -> str | None:
    return str(v) if isinstance(v, str) and v else None


def run_qa(
    prediction: str | Path,
    out_dir: str | Path,
    *,
    evaluation: str | Path | None = None,
    metric: str = "dice",
    tau: float = 0.75,
    umin: float | None = None,
    ood_threshold: float | None = None,
    score: str = "U",
    reference: str | None = None,
    test_images: str | Path | list[str] | None = None,
    test_where: str | None = None,
    ood_labels: str | Path | None = None,
    top_n: int = 24,
    overwrite: bool = False,
    formats: Iterable[str] = ("parquet", "csv"),
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Quality assurance of a ``scaleseg predict`` output.

    Parameters
    ----------
    prediction : path
        The prediction folder (``images.parquet``, ``images/<name>.zarr``); read only.
    out_dir : path
        The QA folder to create (see the module docstring for its files).
    evaluation : path, optional
        A ``scaleseg evaluate`` output (or its ``per_image`` table): Umin is estimated from it.
    metric, tau : str, float
        Test images with ``metric < tau`` count as failed (deepflash2: Umin = their smallest U).
    umin : float, optional
        A fixed Umin (overrides the estimate). Without either, the U rule is unknown.
    ood_threshold : float, optional
        A fixed threshold of the feature-distance rule (default: the ensemble's calibrated
        threshold recorded by predict).
    score : str
        The image score to rank, flag and correlate by: ``U`` or ``U_novel`` (what predict
        recorded) or ``U_border`` (computed here from the stored maps, see
        :mod:`scaleseg.qa._variants`, one task per image; added as a column).
    reference : str, optional
        The evaluation's reference when it holds several.
    test_images : path or list of str, optional
        Restrict the test set to these images (a list file, e.g. ``demo.csv``).
    test_where : str, optional
        ``column=value`` filter of a CSV ``test_images`` (``split=test``).
    ood_labels : path, optional
        Known OOD images (see :func:`~scaleseg.qa.read_ood_labels`): adds ``ood.csv``.
    top_n : int
        Thumbnails of the ``top_n`` highest-ranked images in the report.
    client : distributed.Client, optional
        Draw thumbnails as tasks on this cluster; default a small local thread pool.

    Returns
    -------
    dict
        ``images`` (the QA table), ``info`` (see :func:`~scaleseg.qa.qa_table`), ``ood``,
        ``classes``, ``report`` (path of report.html) and ``written`` (name -> path).
    """
    from ..executor import map_units
    from ..tables import write_table

    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    if score not in IMAGE_SCORES:
        raise ValueError(
            f"unknown image score {score!r}; expected one of {', '.join(IMAGE_SCORES)}"
        )
    pred = Path(prediction)
    images = read_prediction_table(pred)
    check_score(images, score, str(pred))
    out = check_qa_output(out_dir, pred, overwrite=overwrite)
    scores = per_image = None
    info_extra: dict[str, Any] = {}
    if evaluation is not None:
        per_image, ref_name = read_evaluation(evaluation, metric=metric, reference=reference)
        scores = per_image[metric]
        info_extra["reference"] = ref_name
        unknown = sorted(set(per_image.index) - set(images["image"]))
        if len(unknown) == len(per_image):
            raise ValueError(
                f"{evaluation}: none of its images is in the prediction {pred} "
                f"(first: {', '.join(unknown[:3])})"
            )
    names = None
    if isinstance(test_images, (str, Path)):
        names = read_image_list(test_images, where=test_where)
    elif test_images is not None:
        names = list(test_images)
    ood = read_ood_labels(ood_labels, images["image"].tolist()) if ood_labels else None
    images = add_image_score(images, score, client=client)
    table, info = qa_table(
        images,
        scores=scores,
        metric=metric,
        tau=tau,
        umin=umin,
        test_images=names,
        ood=ood,
        distance_threshold=ood_threshold,
        score=score,
    )
    info.update(info_extra, prediction=str(pred), evaluation=str(evaluation or ""))
    ood_df = ood_summary(
        table, thresholds={score: info["umin"], "ood_distance": info["distance_threshold"]}
    )
    inst = None
    if has_instances(pred):  # per class: count and summed uncertainty, streamed part by part
        inst = instance_class_totals(iter_instances(pred, columns=["class", "mean_uncertainty"]))
    classes = class_summary(table, per_image=per_image, instances=inst, metric=metric)

    for name in QA_OUTPUTS:  # overwrite: replace only our own files
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    figdir = out / "report"
    (figdir / "thumbnails").mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    for p in write_table(table, out / "images", formats):
        written[p.name] = p
    ood_df.to_csv(out / "ood.csv", index=False)
    classes.to_csv(out / "classes.csv", index=False)
    written.update({"ood.csv": out / "ood.csv", "classes.csv": out / "classes.csv"})
    (out / "qa.json").write_text(  # strict JSON: an undefined value is null, not NaN
        json.dumps(_null_nan(info), indent=2, default=str, allow_nan=False) + "\n"
    )
    written["qa.json"] = out / "qa.json"

    figures = {
        "u_histogram": plot_u_histogram(
            table, figdir / "u_histogram.png", umin=info["umin"], score=score
        )
    }
    if int(table["qa_test"].sum()):
        figures["u_vs_score"] = plot_u_vs_score(
            table,
            figdir / "u_vs_score.png",
            metric=metric,
            tau=tau,
            umin=info["umin"],
            r=info["pearson_r"],
            n=info["pearson_n"],
            score=score,
        )
    top = table[table["qa_rank"].notna()].head(top_n)
    jobs = [
        {
            "image_url": _url(r.get("path")),
            "output_url": _url(r.get("output")),
            "png": str(figdir / "thumbnails" / f"{int(r['qa_rank']):05d}_{r['image']}.png"),
            "title": f"#{int(r['qa_rank'])} {r['image']}  {score}={r[score]:.4f}",
        }
        for _, r in top.iterrows()
    ]
    res = map_units(_thumb_keyed, jobs, stage="thumbnail", client=client, progress=progress,
                    threads=2)  # fmt: skip
    done = dict(res.results)
    thumbs = [
        (r.to_dict(), Path(done[j["png"]]) if done.get(j["png"]) else None)
        for (_, r), j in zip(top.iterrows(), jobs)
    ]
    report = write_html_report(
        out / "report.html",
        table=table,
        info=info,
        figures=figures,
        thumbnails=thumbs,
        ood=ood_df,
        classes=classes,
        prediction=str(pred),
    )
    written["report.html"] = report
    return {
        "images": table,
        "info": info,
        "ood": ood_df,
        "classes": classes,
        "report": report,
        "written": written,
    }


def _thumb_keyed(job: dict[str, Any]) -> tuple[str, str | None]:
    return job["png"], thumbnail_task(job)
