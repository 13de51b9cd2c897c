"""``scaleseg.evaluate``, ``scaleseg.check_quality`` and ``scaleseg.select_for_annotation``:
the stages that read a prediction and write their own folder beside it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import absolute, progress_bar

if TYPE_CHECKING:
    from ..config import QAConfig

__all__ = [
    "EvaluateResult",
    "QAResult",
    "SelectResult",
    "check_quality",
    "evaluate",
    "select_for_annotation",
]


def _owner_run(stage: str, output, spec, *, inputs: dict, overwrite: bool, argv):
    from ..runs import StageRun

    return StageRun(stage, output, spec, inputs=inputs, overwrite=overwrite, argv=argv,
                    keep_failed=False)  # fmt: skip


# -- evaluate ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluateResult:
    """Scores of a prediction against a reference (and the experts): ``per_image``, ``summary``
    (and ``experts``) tables, the headline metric and the files written."""

    output: Path
    per_image: Any = field(repr=False)
    summary_table: Any = field(repr=False)
    headline: str
    warnings: tuple[str, ...] = ()
    written: dict[str, list[Path]] = field(default_factory=dict)

    def summary(self) -> list[str]:
        lines = [f"warning: {w}" for w in self.warnings]
        scored = self.per_image[self.per_image["missing"].isna()]
        for ref_name, grp in scored.groupby("reference", sort=False):
            v = grp[self.headline]
            lines.append(f"{ref_name}: mean {self.headline} {v.mean():.4f} (median "
                         f"{v.median():.4f}, n={len(v)})")  # fmt: skip
        if "relative_performance" in scored:
            rel = scored["relative_performance"].dropna().value_counts().to_dict()
            if rel:
                lines.append(
                    "prediction vs experts: " + "; ".join(f"{n} {k}" for k, n in rel.items())
                )
        lines.append(f"Wrote {', '.join(sorted(self.written))} to {self.output}")
        return lines


def evaluate(
    pred: str | os.PathLike,
    ref: str | os.PathLike,
    output: str | os.PathLike,
    *,
    pred_label: str = "semantic",
    ref_label: str = "est_gt",
    pred_suffix: str = "",
    ref_suffix: str = "",
    kind: str = "semantic",
    instances_given: str | None = None,
    experts: str | os.PathLike | bool | None = None,
    experts_suffix: str = "",
    n_classes: int | None = None,
    min_size: int = 0,
    formats: Sequence[str] = ("parquet", "csv"),
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> EvaluateResult:
    """Score a prediction against a reference per image (Dice, IoU, AP, mAP, PQ, ...), and
    against the experts' range when ``experts`` (a collection or mask folder) is given
    (``False``: never).

    ``pred`` / ``ref``: OME-Zarr collections (label groups ``pred_label`` / ``ref_label``) or
    folders of masks. The output folder holds only this run's tables and figures; it may not
    be, contain or lie inside any input.
    """
    from ..evaluation import ALL_EXPERTS, resolve_source, write_evaluation
    from ..evaluation import evaluate as score
    from ..runs import build_spec, check_output

    exp_path = experts if experts not in (None, False, True) else None
    check_output(output, "evaluate", {"pred": pred, "ref": ref, "experts": exp_path})
    given = instances_given or ""
    pred_src = resolve_source(pred, label=pred_label, suffix=pred_suffix,
                              instances=given in ("pred", "both"))  # fmt: skip
    ref_src = resolve_source(ref, label=ref_label, suffix=ref_suffix,
                             instances=given in ("ref", "both"))  # fmt: skip
    exp_src = False if experts is False else None
    if experts not in (None, False, True):
        exp_src = resolve_source(experts, label=ALL_EXPERTS, suffix=experts_suffix)
    settings = {"pred_label": pred_label, "ref_label": ref_label, "kind": kind,
                "instances_given": given, "n_classes": n_classes, "min_size": min_size,
                "formats": sorted(formats), "experts": experts is not False}  # fmt: skip
    spec = build_spec(
        "evaluate",
        config=settings,
        inputs={
            "pred": absolute(pred),
            "ref": absolute(ref),
            "experts": absolute(experts) if experts not in (None, False, True) else None,
            "pred_suffix": pred_suffix,
            "ref_suffix": ref_suffix,
            "experts_suffix": experts_suffix,
        },
    )
    run = _owner_run("evaluate", output, spec, inputs={"pred": pred, "ref": ref, "experts": exp_path},
                     overwrite=overwrite, argv=argv)  # fmt: skip
    with run:
        n_images = len(set(pred_src.items) & set(ref_src.items))
        with progress_bar(n_images, "evaluate", enabled=progress) as bar:
            result = score(pred_src, ref_src, kind=kind, n_classes=n_classes, min_size=min_size,
                           experts=exp_src, client=client, progress=bar.update)  # fmt: skip
        written = write_evaluation(result, run.output, formats, overwrite=True)
        per_image, summary = result["per_image"], result["summary"]
        scored = per_image[per_image["missing"].isna()]
        means = summary[summary["metric"] == result["headline"]].set_index("reference")["mean"]
        run.record.set_summary(
            images=int(scored["image"].nunique()), missing=int(per_image["missing"].notna().sum()),
            kind=kind, headline=result["headline"], mean=means.to_dict(),
            warnings=result["warnings"],
        )  # fmt: skip
    return EvaluateResult(run.output, per_image, summary, result["headline"],
                          tuple(result["warnings"]), written)  # fmt: skip


# -- quality assurance ---------------------------------------------------------------------------
@dataclass(frozen=True)
class QAResult:
    """Ranking, review flags, OOD scores and the report of a prediction (see
    :func:`scaleseg.qa.run_qa` for ``info``)."""

    output: Path
    images: Any = field(repr=False)
    ood: Any = field(repr=False)
    info: dict[str, Any] = field(repr=False)
    report: Path
    score: str = "U"
    metric: str = "dice"
    tau: float = 0.75

    def summary(self) -> list[str]:
        info = self.info
        lines = []
        if info["umin_source"] == "none":
            lines.append(f"Umin unknown: {info['umin_reason']}; the U rule cannot flag")
        else:
            lines.append(
                f"Umin {info['umin']:.4f} ({info['umin_source']}; {info['n_below']} of "
                f"{info['n_test']} test images with {self.metric} < {self.tau:g}; Pearson r of "
                f"{self.score} {info['pearson_r']:.3f})"
            )
        thr = info["distance_threshold"]
        lines.append("distance rule: " + (
            f"ood_distance >= {thr:.4g} ({info['distance_threshold_source']})" if thr == thr
            else "off (the ensemble has no calibrated threshold)"))  # fmt: skip
        lines.append(
            f"{info['n_review']} of {info['n_images']} images flagged for review "
            f"({self.score} rule {info['n_review_u']}, distance rule {info['n_review_distance']})"
        )
        overall = self.ood[self.ood["ood_kind"] == "all"] if len(self.ood) else self.ood
        for _, r in overall.iterrows():
            lines.append(f"  OOD by {r['score']}: AUROC {r['auroc']:.3f}, AUPRC {r['auprc']:.3f}")
        t = self.images
        cols = list(dict.fromkeys(c for c in ("qa_rank", "image", "U", self.score, "review",
                                              "review_rule", "review_score") if c in t))  # fmt: skip
        lines.append(t[cols].head(10).to_string(index=False))
        lines.append(f"Report: {self.report}")
        return lines


def check_quality(
    prediction: str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: QAConfig | None = None,
    evaluation: str | os.PathLike | None = None,
    reference: str | None = None,
    test_images: str | os.PathLike | Sequence[str] | None = None,
    test_where: str | None = None,
    ood_labels: str | os.PathLike | None = None,
    formats: Sequence[str] = ("parquet", "csv"),
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> QAResult:
    """Quality assurance of a prediction: rank by the image score, estimate Umin from the
    evaluated test images, flag images for review (U rule and feature-distance rule), score
    OOD detection when labels are given, and write the HTML report to ``output``."""
    from ..config import QAConfig
    from ..qa import run_qa
    from ..runs import build_spec, check_output

    check_output(output, "qa", {"prediction": prediction, "evaluation": evaluation})
    config = config if config is not None else QAConfig()
    if test_where and test_images is None:
        raise ValueError("a test filter (test_where) needs test_images")
    if test_images is not None and evaluation is None:
        raise ValueError("test images need an evaluation (the scores of the test images)")
    listed = (
        None
        if test_images is None or isinstance(test_images, str | os.PathLike)
        else sorted(test_images)
    )
    spec = build_spec("qa", config=config, inputs={
        "prediction": absolute(prediction), "evaluation": absolute(evaluation),
        "reference": reference, "test_images": listed if listed is not None else absolute(test_images),
        "test_where": test_where, "ood_labels": absolute(ood_labels), "formats": sorted(formats)})  # fmt: skip
    run = _owner_run("qa", output, spec, inputs={"prediction": prediction, "evaluation": evaluation},
                     overwrite=overwrite, argv=argv)  # fmt: skip
    with run:
        with progress_bar(config.top_n, "thumbnails", enabled=progress) as bar:
            res = run_qa(
                prediction, run.output, evaluation=evaluation, metric=config.metric, tau=config.tau,
                umin=config.umin, ood_threshold=config.ood_threshold, score=config.score,
                reference=reference, test_images=listed if listed is not None else test_images,
                test_where=test_where, ood_labels=ood_labels, top_n=config.top_n, overwrite=True,
                formats=formats, client=client, progress=bar.update,
            )  # fmt: skip
        info, ood = res["info"], res["ood"]
        overall = ood[ood["ood_kind"] == "all"] if len(ood) else ood
        run.record.set_summary(
            images=info["n_images"], review=info["n_review"], unknown=info["n_unknown"],
            umin=info["umin"], umin_source=info["umin_source"], pearson_r=info["pearson_r"],
            ood={r["score"]: {"auroc": r["auroc"], "auprc": r["auprc"]} for _, r in overall.iterrows()},
        )  # fmt: skip
    return QAResult(run.output, res["images"], ood, info, Path(res["report"]), config.score,
                    config.metric, config.tau)  # fmt: skip


# -- active learning -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectResult:
    """The images exported for annotation (``selected``) and those skipped as annotated."""

    output: Path
    selected: Any = field(repr=False)
    skipped: Any = field(repr=False)
    asked: int

    def summary(self) -> list[str]:
        lines = []
        if len(self.selected) < self.asked:
            lines.append(
                f"only {len(self.selected)} unannotated image(s) left (asked for {self.asked})"
            )
        lines.append(
            self.selected[["selection_rank", "image", "score", "reason"]].to_string(index=False)
        )
        lines.append(f"Exported {len(self.selected)} image(s) to {self.output} ({len(self.skipped)} "
                     f"annotated skipped); after correcting: scaleseg convert {self.output}/images "
                     f"NEW --masks {self.output}/masks")  # fmt: skip
        return lines


def select_for_annotation(
    prediction: str | os.PathLike,
    output: str | os.PathLike,
    *,
    n: int,
    by: str = "U",
    annotated: str | os.PathLike | Sequence[str] | None = None,
    expert: str = "prediction",
    rois: bool = True,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> SelectResult:
    """Active learning: export the ``n`` highest-ranked (by ``by``) images of a prediction that
    are not annotated yet -- image, the current prediction as a mask to correct, an ImageJ ROI
    set -- to ``output``."""
    from ..io import EXPERT_PREFIX, list_labels
    from ..qa import annotation_candidates, export_for_annotation, read_prediction_table
    from ..runs import build_spec, check_output
    from ..tables import read_image_list

    check_output(output, "select", {"prediction": prediction})
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    table = read_prediction_table(prediction)
    for col in ("path", "output"):
        if col not in table:
            raise ValueError(f"{prediction}: images table has no {col!r} column")
    if annotated is None:
        done: list[str] = []
    elif isinstance(annotated, str | os.PathLike):
        done = read_image_list(annotated)
    else:
        done = list(annotated)
    spec = build_spec("select", config={"n": n, "by": by, "expert": expert, "rois": rois},
                      inputs={"prediction": absolute(prediction), "annotated": sorted(done)})  # fmt: skip

    def has_experts(row) -> bool:
        try:
            return any(x.startswith(EXPERT_PREFIX) for x in list_labels(row["path"]))
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(
                f"image {row['image']}: cannot read its input {row['path']}: {exc}"
            ) from None

    selected, skipped = annotation_candidates(table, n=n, by=by, annotated=done,
                                              has_annotation=has_experts)  # fmt: skip
    if selected.empty:
        raise ValueError(f"{prediction}: no unannotated image left to select")
    run = _owner_run("select", output, spec, inputs={"prediction": prediction}, overwrite=overwrite,
                     argv=argv)  # fmt: skip
    with run:
        with progress_bar(len(selected), "export", enabled=progress) as bar:
            result = export_for_annotation(selected, run.output, expert=expert, rois=rois,
                                           source=str(prediction), skipped=skipped, client=client,
                                           progress=bar.update)  # fmt: skip
        run.record.set_summary(selected=len(result), skipped=len(skipped), by=by,
                               images=result["image"].tolist())  # fmt: skip
    return SelectResult(run.output, result, skipped, n)
