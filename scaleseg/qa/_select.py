"""Active learning: choose the most uncertain / out-of-distribution images that nobody has
annotated yet and export them for annotation (orchestration).

Export layout (``OUT``), which ``scaleseg convert OUT/images NEW --masks OUT/masks`` reads back
so corrected masks re-enter ``gt`` / ``train`` as ``labels/expert_<expert>``::

    images/<name>.tif              the input image at full resolution ((C,) Y, X)
    masks/<expert>/<name>.tif      the current prediction ŷ (uint8, 0 = background): correct it
    rois/<name>.zip                ImageJ / Fiji ROI set of its objects, most uncertain first
    selected.csv                   what was selected, in order, by which score and why
    README.md                      the same in words, with the commands to re-import
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._inputs import OOD_SCORES
from ._ranking import review_order

__all__ = ["SELECT_BY", "annotation_candidates", "export_for_annotation", "export_one"]

#: Scores ``select`` can rank by (higher = more worth annotating).
SELECT_BY = OOD_SCORES


def annotation_candidates(
    table: pd.DataFrame,
    *,
    n: int,
    by: str = "U",
    annotated: Iterable[str] = (),
    has_annotation: Callable[[pd.Series], bool] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` images to annotate next: highest ``by`` first, undefined scores first.

    Parameters
    ----------
    table : pandas.DataFrame
        An images table of ``predict`` or ``qa`` (``image``, ``status``, ``by``...).
    n : int
        How many to pick (fewer when fewer are left).
    by : str
        The score column; ``U``, ``U_novel``, ``U_epistemic`` or ``ood_distance`` (or
        ``U_border`` in a ``qa --score U_border`` table).
    annotated : iterable of str
        Image names that are already annotated (skipped).
    has_annotation : callable, optional
        ``has_annotation(row) -> bool``, called in ranking order until ``n`` images are
        found (e.g. "the input image already has expert label groups").

    Returns
    -------
    selected : pandas.DataFrame
        The chosen rows in order, with ``selection_rank`` (1..), ``selected_by``, ``score``
        and ``reason``.
    skipped : pandas.DataFrame
        ``image`` and ``reason`` of higher-ranked images that were passed over.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if by not in table.columns:
        raise ValueError(f"the images table has no column {by!r} (use one of {SELECT_BY})")
    t = table.sort_values("image", kind="stable", ignore_index=True)
    score = pd.to_numeric(t[by], errors="coerce").to_numpy(np.float64)
    ok = (t["status"] == "ok").to_numpy()
    if by != "U" and not np.isfinite(score[ok]).any():
        hint = {
            "ood_distance": ": the ensemble has no encoder-feature statistics (re-run `scaleseg "
            "train` on it to add them, then predict again)",
            "U_novel": ": the ensemble's feature statistics have no per-cell part (re-run "
            "`scaleseg train` on it to add it, then predict again)",
        }.get(by, "")
        raise ValueError(f"score {by!r} is undefined for every image (all NaN){hint}")
    done = set(annotated)
    picked, skipped = [], []
    for i in review_order(score, valid=ok):
        row = t.iloc[i]
        if row["image"] in done:
            skipped.append((row["image"], "listed as annotated"))
            continue
        if has_annotation is not None and has_annotation(row):
            skipped.append((row["image"], "has expert annotations in the input"))
            continue
        picked.append(i)
        if len(picked) == n:
            break
    sel = t.iloc[picked].copy().reset_index(drop=True)
    sel.insert(0, "selection_rank", np.arange(1, len(sel) + 1))
    sel["selected_by"] = by
    sel["score"] = score[picked]
    reason = t["U_reason"].fillna("").iloc[picked].to_numpy() if "U_reason" in t else None
    sel["reason"] = [
        f"{by} undefined ({reason[k] if reason is not None and reason[k] else 'no value'})"
        if np.isnan(s)
        else f"{by} = {s:.4f}, rank {k + 1} among unannotated images"
        for k, s in enumerate(sel["score"])
    ]
    return sel, pd.DataFrame(skipped, columns=["image", "reason"])


def _write_tiff(path: Path, arr: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    meta = {"axes": "CYX" if arr.ndim == 3 else "YX"}
    tifffile.imwrite(path, np.ascontiguousarray(arr), metadata=meta, compression="zlib")


def export_one(job: dict[str, Any]) -> dict[str, Any]:
    """Export one image: input image, prediction mask and ROI set (a picklable job)."""
    from ..instances import export_rois
    from ..io import list_labels, open_image, open_labels, to_cyx
    from ..metrics import label_instances

    out, name = Path(job["out"]), job["name"]
    image = to_cyx(open_image(job["image_url"])).values
    semantic = open_labels(job["output_url"], "semantic").values
    if semantic.shape != image.shape[1:]:
        raise ValueError(
            f"{job['output_url']}: prediction shape {semantic.shape} differs from the input "
            f"image {job['image_url']} {image.shape[1:]}"
        )
    img_file = out / "images" / f"{name}.tif"
    mask_file = out / "masks" / job["expert"] / f"{name}.tif"
    _write_tiff(img_file, image)
    _write_tiff(mask_file, semantic.astype(np.uint8 if semantic.max() < 256 else np.uint16))
    res = {"image": name, "image_file": str(img_file), "mask_file": str(mask_file)}
    if job.get("rois", True):
        if "instances" in list_labels(job["output_url"]):
            inst = open_labels(job["output_url"], "instances").values
        else:
            inst = label_instances(semantic)
        u = to_cyx(open_image(job["output_url"])).values[0].astype(np.float64)
        n = int(inst.max())
        total = np.bincount(inst.ravel(), weights=u.ravel(), minlength=n + 1)
        count = np.bincount(inst.ravel(), minlength=n + 1)
        scores = {i: float(total[i] / count[i]) for i in range(1, n + 1) if count[i]}
        roi_file = out / "rois" / f"{name}.zip"
        if scores:
            export_rois(inst, roi_file, scores=scores, overwrite=True)
            res["roi_file"] = str(roi_file)
        res["n_rois"] = len(scores)
    return res


_README = """# Images selected for annotation

Selected by `scaleseg select` from `{source}`: the {n} images with the highest `{by}`
(undefined first) that were not yet annotated ({n_skipped} higher-ranked images skipped:
already annotated). See `selected.csv` for the order, scores and reasons.

* `images/<name>.tif` — the image at full resolution
* `masks/{expert}/<name>.tif` — the current prediction (0 = background, 1.. = classes):
  correct it in place (Fiji, napari, QuPath), keep the file name
* `rois/<name>.zip` — the predicted objects as a Fiji ROI set, most uncertain first

Bring the corrected masks back as expert annotations:

    scaleseg convert {out}/images CORRECTED --masks {out}/masks
    scaleseg gt CORRECTED GT_CORRECTED        # or: scaleseg train CORRECTED ... --label expert_{expert}

An edited ROI set can instead be rasterised into the converted image:

    scaleseg rois import {out}/rois/<name>.zip --image CORRECTED/<name>.zarr --label expert_{expert}
"""


def export_for_annotation(
    selected: pd.DataFrame,
    out_dir: str | Path,
    *,
    expert: str = "prediction",
    rois: bool = True,
    source: str = "",
    skipped: pd.DataFrame | None = None,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> pd.DataFrame:
    """Write the images of :func:`annotation_candidates` into an annotation folder.

    Parameters
    ----------
    selected : pandas.DataFrame
        Rows with ``image``, ``path`` (input OME-Zarr image), ``output`` (prediction image).
    out_dir : path
        Created if needed (see the module docstring for the layout).
    expert : str
        Name of the mask sub-folder: after ``convert`` it becomes ``labels/expert_<expert>``.
    rois : bool
        Also write ImageJ ROI sets.

    Returns
    -------
    pandas.DataFrame
        ``selected`` plus ``image_file``, ``mask_file``, ``roi_file``, ``n_rois``; also
        written as ``selected.csv``.
    """
    from ..executor import map_units
    from ..io import safe_name

    out = Path(out_dir)
    expert = safe_name(expert).removeprefix("expert_")
    for col in ("image", "path", "output"):
        if col not in selected.columns:
            raise ValueError(f"selected images need a {col!r} column")
    jobs = [
        {
            "out": str(out),
            "name": safe_name(str(r["image"])),
            "image_url": r["path"],
            "output_url": r["output"],
            "expert": expert,
            "rois": rois,
        }
        for _, r in selected.iterrows()
    ]
    res = pd.DataFrame(
        map_units(export_one, jobs, stage="select", names=[j["name"] for j in jobs], client=client,
                  progress=progress, threads=2).results
    )  # fmt: skip
    if res.empty:
        res = pd.DataFrame(columns=["image", "image_file", "mask_file"])
    table = selected.merge(res, on="image", how="left").sort_values("selection_rank")
    keep = [
        c
        for c in (
            "selection_rank",
            "image",
            "selected_by",
            "score",
            "reason",
            "U",
            "U_epistemic",
            "ood_distance",
            "path",
            "output",
            "image_file",
            "mask_file",
            "roi_file",
            "n_rois",
        )
        if c in table.columns
    ]
    out.mkdir(parents=True, exist_ok=True)
    table[keep].to_csv(out / "selected.csv", index=False)
    by = selected["selected_by"].iloc[0] if len(selected) else "U"
    (out / "README.md").write_text(
        _README.format(
            source=source,
            n=len(table),
            by=by,
            n_skipped=0 if skipped is None else len(skipped),
            expert=expert,
            out=out,
        )
    )
    return table[keep].reset_index(drop=True)
