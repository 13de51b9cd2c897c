"""Dataset-level GT results: expert summaries, agreement matrix, consensus bound, files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._collection import estimate_collection

__all__ = ["summarise_gt", "write_gt_outputs", "run_gt"]


def summarise_gt(result: dict[str, Any]) -> dict[str, Any]:
    """Aggregate per-image tables into per-expert and per-dataset figures.

    The consensus bound follows Cellpose-SAM (Pachitariu et al. 2025): the error rate of a
    consensus of annotators is about half the mean pairwise inter-annotator error rate
    (instances matched at IoU 0.5; infinite rates, an empty annotator facing a non-empty
    one, are left out and counted). Without instance scores (``result["instance_scores"]``
    false) the mAP range and the consensus bound are ``None``.
    """
    import pandas as pd

    scores = result["scores"]
    summary = (
        scores.groupby("expert")[["dice", "map", "ap50"]]
        .agg(["mean", "std", "min", "max"])
        .round(4)
    )
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary.insert(0, "n_images", scores.groupby("expert").size())
    summary = summary.reset_index()

    pairs = result["agreement"]
    experts = sorted(set(pairs["expert_a"]) | set(pairs["expert_b"]))
    mat = pd.DataFrame(np.eye(len(experts)), index=experts, columns=experts)
    mean_pairs = pairs.groupby(["expert_a", "expert_b"])["dice"].mean()
    for (a, b), v in mean_pairs.items():
        mat.loc[a, b] = mat.loc[b, a] = v

    instances = bool(result.get("instance_scores", True))
    consensus = None
    if instances:
        err = result["pairwise_error"]["error_rate"].to_numpy(dtype=float)
        finite = err[np.isfinite(err)]
        mean_err = float(finite.mean()) if finite.size else float("nan")
        consensus = {
            "mean_pairwise_error_rate": mean_err,
            "consensus_error_rate": mean_err / 2,
            "n_pairs": int(err.size),
            "n_infinite_pairs": int(err.size - finite.size),
            "iou_threshold": 0.5,
            "definition": "consensus error ~= 1/2 mean pairwise inter-annotator error rate "
            "(FP+FN)/(TP+FN), Cellpose-SAM",
        }
    images = result["images"]
    ok = images[images["status"] == "ok"]
    dataset = {
        "images": int(len(images)),
        "estimated": int(len(ok)),
        "skipped": images.loc[images["status"] != "ok", ["image", "reason"]].to_dict("records"),
        "mean_pairwise_expert_dice": float(pairs["dice"].mean()) if len(pairs) else float("nan"),
        "expert_dice_range": [float(scores["dice"].min()), float(scores["dice"].max())],
        "instance_scores": instances,
        "expert_map_range": (
            [float(scores["map"].min()), float(scores["map"].max())] if instances else None
        ),
        "consensus_bound": consensus,
    }
    return {"expert_summary": summary, "agreement_matrix": mat, "dataset": dataset}


def write_gt_outputs(
    result: dict[str, Any], summary: dict[str, Any], out: Path, formats
) -> list[Path]:
    """Write tables, plots and ``consensus.json`` into ``out``."""
    from ..tables import write_table
    from ._plots import plot_agreement, plot_expert_scores

    written = []
    written += write_table(result["images"], out / "gt_images", formats)
    written += write_table(result["scores"], out / "expert_scores", [*formats, "xlsx"])
    written += write_table(summary["expert_summary"], out / "expert_summary", ["csv", "xlsx"])
    written += write_table(result["agreement"], out / "expert_agreement_pairs", ["csv"])
    mat = summary["agreement_matrix"]
    mat.to_csv(out / "expert_agreement.csv")
    written.append(out / "expert_agreement.csv")
    (out / "gt_summary.json").write_text(json.dumps(summary["dataset"], indent=2) + "\n")
    written.append(out / "gt_summary.json")
    if len(result["scores"]):
        metrics = ("dice", "map") if result.get("instance_scores", True) else ("dice",)
        written.append(plot_expert_scores(result["scores"], out / "expert_scores.png", metrics))
        written.append(plot_agreement(mat, out / "expert_agreement.png"))
    return written


def run_gt(
    sources: list,
    out: str | Path,
    *,
    formats=("parquet", "csv"),
    overwrite: bool = False,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Estimate the GT of every source and write all outputs to ``out`` atomically.

    The folder is written as a temporary sibling and renamed when complete; an existing
    ``out`` is kept unless ``overwrite``. ``options`` go to :func:`estimate_collection`.
    """
    from ..files import atomic_directory

    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        result = estimate_collection(sources, str(tmp), client=client, progress=progress, **options)
        summary = summarise_gt(result)
        write_gt_outputs(result, summary, tmp, formats)
    return {"out": str(out), **result, **summary}
