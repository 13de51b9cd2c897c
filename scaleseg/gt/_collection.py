"""Ground-truth estimation over a collection: one Dask task per image (orchestration layer).

Each unit reads the expert label groups of one image (read-only), runs the GT kernel, scores
every expert against the estimate and writes::

    OUT/images/<name>.zarr              root image: expert agreement (fraction of experts whose
                                        label equals the estimate), float32 (c=1, y, x)
      labels/est_gt                     the estimated ground truth (0 = background)

Units return only small results (table rows); the driver aggregates them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import EXPERT_PREFIX, ImageRef

__all__ = ["GT_LABEL", "MaskSet", "estimate_collection", "gt_unit", "mask_sets"]

GT_LABEL = "est_gt"


@dataclass(frozen=True)
class MaskSet:
    """Expert mask files of one image, for GT estimation from mask folders (no OME-Zarr)."""

    name: str
    masks: dict[str, str]

    @property
    def url(self) -> str:
        return ";".join(self.masks.values())


def mask_sets(folder: str | Path, *, suffix: str = "") -> list[MaskSet]:
    """Group ``<folder>/<expert>/<image><suffix>.<ext>`` files by image name."""
    from ..io import IMAGE_SUFFIXES, expert_label, safe_name

    folder = Path(folder)
    experts = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not experts:
        raise FileNotFoundError(f"{folder}: expected one sub-folder of masks per expert")
    by_image: dict[str, dict[str, str]] = {}
    for edir in experts:
        for f in sorted(edir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            stem = f.stem[: -len(suffix)] if suffix and f.stem.endswith(suffix) else f.stem
            by_image.setdefault(safe_name(stem), {})[expert_label(edir.name)] = str(f)
    return [MaskSet(name, masks) for name, masks in sorted(by_image.items())]


def _read_experts(ref: ImageRef | MaskSet) -> dict[str, np.ndarray]:
    from ..io import list_labels, open_labels, read_mask_file

    if isinstance(ref, MaskSet):
        return {e: read_mask_file(p) for e, p in ref.masks.items()}
    names = [n for n in list_labels(ref) if n.startswith(EXPERT_PREFIX)]
    return {n: np.asarray(open_labels(ref, n).data.compute(scheduler="sync")) for n in names}


def _limit_itk_threads() -> None:
    """Inside a dask worker, ITK gets the worker's thread budget (it defaults to every core)."""
    from ..executor import current_worker

    worker = current_worker()
    nthreads = getattr(getattr(worker, "state", None), "nthreads", None)
    if not nthreads:
        return
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(nthreads)))


def gt_unit(ref: ImageRef | MaskSet, out_root: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Estimate, score and write the GT of one image; returns its table rows."""
    from ..io import join_url, write_image, write_labels
    from ._estimate import estimate_gt
    from ._scores import consensus_bound, expert_scores, inter_expert_agreement

    _limit_itk_threads()
    t0 = time.perf_counter()
    row: dict[str, Any] = {"image": ref.name, "source": ref.url, "status": "ok", "reason": ""}
    experts = _read_experts(ref)
    row["n_experts"] = len(experts)
    row["experts"] = ";".join(sorted(experts))
    if len(experts) < 2:
        row.update(
            status="skipped", reason=f"{len(experts)} expert mask(s); STAPLE / vote need >= 2"
        )
        return {"image": row, "scores": [], "agreement": [], "pairwise_error": []}
    kw: dict[str, Any] = {"n_classes": opts["n_classes"]}
    if opts["method"] == "staple":
        kw["threshold"] = opts["staple_threshold"]
    try:
        gt, info = estimate_gt(experts, method=opts["method"], undecided=opts["undecided"], **kw)
    except ValueError as exc:
        raise ValueError(f"{ref.url}: {exc}") from None
    stack = np.stack([experts[k] for k in sorted(experts)])
    agreement = (stack == gt[None]).mean(axis=0, dtype=np.float64).astype(np.float32)
    url = join_url(out_root, "images", f"{ref.name}.zarr")
    chunks = opts["chunks"]
    write_image(
        url,
        agreement[None],
        chunks=chunks,
        n_levels=opts["n_levels"],
        channel_names=["expert_agreement"],
        attrs={"source": ref.url, "experts": sorted(experts), "method": opts["method"]},
    )
    write_labels(
        url, GT_LABEL, gt, chunks=chunks, source={"image": ref.url, "method": opts["method"]}
    )
    instances = opts.get("instance_scores", True)
    scores = expert_scores(
        experts, gt, n_classes=opts["n_classes"], min_size=opts["min_size"], instances=instances
    )
    for s in scores:
        s["image"] = ref.name
    agree = inter_expert_agreement(experts, metric="dice", n_classes=opts["n_classes"])
    pairs = [
        {"image": ref.name, "expert_a": a, "expert_b": b, "dice": float(agree.loc[a, b])}
        for a in agree.index
        for b in agree.columns
        if a < b
    ]
    pairwise_error = []
    if instances:
        perr = consensus_bound(experts, min_size=opts["min_size"])["pairwise_error_rate"]
        pairwise_error = [
            {"image": ref.name, "expert_a": a, "expert_b": b, "error_rate": float(perr.loc[a, b])}
            for a in perr.index
            for b in perr.columns
            if a != b
        ]
    n_fg = int(np.count_nonzero(gt))
    row.update(
        method=opts["method"],
        foreground_fraction=n_fg / gt.size,
        n_undecided=int(info.get("n_undecided", 0)),
        mean_agreement=float(agreement.mean()),
        shape="x".join(map(str, gt.shape)),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return {"image": row, "scores": scores, "agreement": pairs, "pairwise_error": pairwise_error}


def estimate_collection(
    refs: list[ImageRef | MaskSet],
    out_root: str,
    *,
    method: str = "staple",
    undecided: str = "best_expert",
    staple_threshold: float = 0.5,
    n_classes: int | None = None,
    min_size: int = 0,
    instance_scores: bool = True,
    chunks: tuple[int, int] = (512, 512),
    n_levels: int = 2,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Run :func:`gt_unit` for every image (one task each on ``client``; else in-process).

    Returns
    -------
    dict of pandas.DataFrame
        ``images`` (one row per image), ``scores`` (per expert and image), ``agreement``
        (pairwise expert Dice per image) and ``pairwise_error`` (ordered expert pairs; empty
        without ``instance_scores``, which also leaves ``map`` / ``ap50`` NaN); and the flag
        ``instance_scores``.
    """
    import pandas as pd

    opts = {
        "method": method,
        "undecided": undecided,
        "staple_threshold": staple_threshold,
        "n_classes": n_classes,
        "min_size": min_size,
        "instance_scores": instance_scores,
        "chunks": tuple(chunks),
        "n_levels": n_levels,
    }
    from ..executor import map_units

    results = map_units(
        gt_unit, refs, stage="gt", names=[r.name for r in refs], client=client, progress=progress,
        out_root=out_root, opts=opts,
    ).results  # fmt: skip
    images = pd.DataFrame([r["image"] for r in results]).sort_values("image", ignore_index=True)
    if (images["status"] != "ok").all():
        raise ValueError(
            "no image has at least 2 expert masks (labels/expert_*); cannot estimate a ground truth"
        )

    def frame(key: str, columns: list[str]) -> pd.DataFrame:
        rows = [x for r in results for x in r[key]]
        return pd.DataFrame(rows, columns=columns).sort_values(columns[:2], ignore_index=True)

    return {
        "images": images,
        "scores": frame("scores", ["image", "expert", "dice", "map", "ap50"]),
        "agreement": frame("agreement", ["image", "expert_a", "expert_b", "dice"]),
        "pairwise_error": frame("pairwise_error", ["image", "expert_a", "expert_b", "error_rate"]),
        "instance_scores": instance_scores,
    }
