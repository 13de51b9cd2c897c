"""``scaleseg.export_roi_sets`` and ``scaleseg.import_roi_set``: ImageJ / Fiji ROI sets for
review and correction."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._common import absolute

__all__ = ["ROIExportResult", "ROIImportResult", "export_roi_sets", "import_roi_set"]

ROIS_SPEC = "rois_spec.json"
ROIS_RECORD = "run_rois.json"


@dataclass(frozen=True)
class ROIExportResult:
    output: Path
    files: tuple[Path, ...]

    def summary(self) -> list[str]:
        return [f"wrote {len(self.files)} ROI sets to {self.output}"]


def export_roi_sets(
    prediction: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    argv: Sequence[str] | None = None,
) -> ROIExportResult:
    """One ROI zip per image of a prediction with instances, most uncertain instances first.

    Written to ``<prediction>/rois`` (the prediction folder gains only that folder) or to
    ``output`` (a folder of its own, outside the prediction).
    """
    import pandas as pd

    from ..instances import export_rois, has_instances, read_instances
    from ..io import open_labels, safe_name
    from ..runs import StageRun, build_spec

    pred = Path(prediction)
    if not has_instances(pred):
        raise FileNotFoundError(
            f"{pred}: no instance table (run `scaleseg instances` or predict --instances)"
        )
    spec = build_spec("rois", inputs={"prediction": absolute(pred)})
    if output is None:
        run = StageRun("rois", pred, spec, kind="addon", host_stage="predict",
                       record_name=ROIS_RECORD, spec_name=ROIS_SPEC, overwrite=True,
                       argv=argv)  # fmt: skip
        out = pred / "rois"
    else:
        run = StageRun("rois", output, spec, inputs={"prediction": pred}, overwrite=overwrite,
                       argv=argv)  # fmt: skip
        out = Path(output)
    with run:
        images = pd.read_parquet(pred / "images.parquet")
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for _, row in images[images["status"] == "ok"].iterrows():
            labels = open_labels(pred / "images" / f"{row['image']}.zarr", "instances").values
            sub = read_instances(pred, images=[row["image"]], columns=["label", "mean_uncertainty"])
            scores = dict(zip(sub["label"].astype(int), sub["mean_uncertainty"].astype(float)))
            path = out / f"{safe_name(row['image'])}.zip"
            export_rois(labels, path, scores=scores, overwrite=True)
            files.append(path)
        run.record.set_summary(images=len(files))
    return ROIExportResult(out, tuple(files))


@dataclass(frozen=True)
class ROIImportResult:
    target: str
    imported: int
    skipped: int

    def summary(self) -> list[str]:
        return [f"imported {self.imported} ROIs ({self.skipped} skipped) -> {self.target}"]


def import_roi_set(
    zip_file: str | os.PathLike,
    image: str | os.PathLike,
    *,
    label: str | None = None,
    tiff: str | os.PathLike | None = None,
    semantic: bool = False,
    overwrite: bool = False,
) -> ROIImportResult:
    """Rasterise an (edited) ROI zip into instance labels: the label group ``label`` of the
    OME-Zarr ``image`` (e.g. ``expert_<you>`` for :func:`scaleseg.estimate_gt`) or a TIFF.

    This is the one stage that writes into an image archive, and only because it is asked to
    (``label``); an existing label group or TIFF is replaced only with ``overwrite``.
    """
    import numpy as np

    from ..instances import import_rois
    from ..io import open_image, to_cyx, write_labels

    if (label is None) == (tiff is None):
        raise ValueError("give exactly one of label (a label group of the image) or tiff (a file)")
    shape = tuple(int(s) for s in to_cyx(open_image(image)).shape[1:])
    labels, table = import_rois(zip_file, shape)
    if semantic:
        labels = (labels > 0).astype(np.uint8)
    if label is not None:
        write_labels(image, label, labels, overwrite=overwrite)
        target = f"{image}/labels/{label}"
    else:
        import tifffile

        from ..files import atomic_write

        path = Path(tiff)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists (use --overwrite to replace it)")
        atomic_write(path, lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib"))
        target = str(path)
    skipped = int(table["skipped"].sum()) if "skipped" in table else 0
    return ROIImportResult(target, len(table) - skipped, skipped)
