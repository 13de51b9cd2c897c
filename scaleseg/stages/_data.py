"""``scaleseg.convert``, ``scaleseg.demo_data`` and ``scaleseg.estimate_gt``: stages whose
result appears whole or not at all (built beside the output, published at the end)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import absolute, progress_bar

if TYPE_CHECKING:
    from ..config import ConvertConfig, GTConfig

__all__ = [
    "ConvertResult",
    "DemoDataResult",
    "GTResult",
    "convert",
    "demo_data",
    "estimate_gt",
]


def _atomic_stage(stage: str, output, spec, *, inputs: dict, overwrite: bool, argv,
                  build: Callable[[Path], Any], load: Callable[[Path], Any]) -> tuple[Any, bool]:  # fmt: skip
    """Run ``build(folder)`` into a fresh hidden sibling of ``output`` and publish it, or
    ``load(output)`` when ``output`` already holds the result of the same request."""
    from ..files import is_remote
    from ..runs import StageRun

    if is_remote(output):  # object stores: no lock, no rename -- written in place
        from ..files import remove_location
        from ..io import location_exists

        if location_exists(str(output)):
            if not overwrite:
                raise FileExistsError(f"{output} already exists (use --overwrite to replace it)")
            remove_location(output)
        return build(output), False
    run = StageRun(stage, output, spec, inputs=inputs, kind="atomic", overwrite=overwrite,
                   argv=argv)  # fmt: skip
    with run:
        if run.status == "resume":
            result = load(Path(output))
            run.record.set_summary(reused=True)
            return result, True
        target = run.fresh_path()
        result = build(target)
        run.publish(target)
        run.record.set_summary(**result.record_summary())
    return result, False


# -- convert -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote: the collection and one row per image (``conversion.csv``)."""

    output: str
    images: list[dict[str, Any]]
    warnings: tuple[str, ...] = ()
    reused: bool = False

    @property
    def experts(self) -> list[str]:
        return sorted({e for r in self.images for e in str(r["experts"]).split(";") if e})

    def record_summary(self) -> dict[str, Any]:
        return {
            "images": len(self.images),
            "experts": self.experts,
            "warnings": list(self.warnings),
        }

    def summary(self) -> list[str]:
        lines = [f"warning: {w}" for w in self.warnings]
        again = " (already converted, same request)" if self.reused else ""
        lines.append(f"Wrote {len(self.images)} images to {self.output}{again} "
                     f"(experts: {', '.join(self.experts) or 'none'})")  # fmt: skip
        return lines


def convert(
    images: str | os.PathLike,
    output: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    mask_suffix: str = "",
    config: ConvertConfig | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> ConvertResult:
    """Convert a folder of TIFF/PNG images (and expert mask folders) to an OME-Zarr collection.

    The collection is built beside ``output`` and moved into place when every image succeeded;
    an identical earlier conversion is reused; other settings need ``overwrite`` (and replace
    only a folder scaleseg wrote).
    """
    import csv

    from ..config import ConvertConfig
    from ..io import convert_folder, plan_conversion
    from ..runs import build_spec, check_output

    check_output(output, "convert", {"images": images, "masks": masks})
    config = config if config is not None else ConvertConfig()
    items, _ = plan_conversion(images, masks=masks, mask_suffix=mask_suffix)
    spec = build_spec("convert", config=config, inputs={
        "images": absolute(images), "masks": absolute(masks), "mask_suffix": mask_suffix,
        "files": sorted(str(i.image) for i in items)})  # fmt: skip

    def build(target) -> ConvertResult:
        with progress_bar(len(items), "convert", enabled=progress) as bar:
            res = convert_folder(images, target, masks=masks, mask_suffix=mask_suffix,
                                 chunks=config.chunks, n_levels=config.n_levels,
                                 ngff_version=config.ngff_version, client=client,
                                 progress=bar.update)  # fmt: skip
        return ConvertResult(str(output), res["images"], tuple(res["warnings"]))

    def load(out: Path) -> ConvertResult:
        with (out / "conversion.csv").open(newline="") as fh:
            return ConvertResult(str(output), list(csv.DictReader(fh)), reused=True)

    result, _ = _atomic_stage("convert", output, spec, inputs={"images": images,
                              "masks": masks}, overwrite=overwrite, argv=argv,
                              build=build, load=load)  # fmt: skip
    return result


# -- demo data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoDataResult:
    """The synthetic demo archive: its collection, ``demo.csv`` and that table."""

    output: str
    collection: str
    csv: str
    table: Any = field(repr=False)
    reused: bool = False

    def record_summary(self) -> dict[str, Any]:
        return {"images": len(self.table), "splits": self.table["split"].value_counts().to_dict()}

    def summary(self) -> list[str]:
        counts = ", ".join(
            f"{k}: {v}" for k, v in self.table["split"].value_counts().sort_index().items()
        )
        again = " (already written, same request)" if self.reused else ""
        return [f"Wrote {len(self.table)} images to {self.collection}{again} ({counts}); "
                f"table {self.csv}"]  # fmt: skip


def demo_data(
    output: str | os.PathLike,
    *,
    n_images: int = 12,
    n_ood: int = 4,
    shape: tuple[int, int] = (256, 256),
    n_experts: int = 3,
    seed: int = 0,
    snr: tuple[float, float] = (8.0, 8.0),
    test_fraction: float = 1 / 3,
    ngff_version: str = "0.5",
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> DemoDataResult:
    """Write the deterministic synthetic demo archive (see :func:`scaleseg.datasets.
    write_demo_archive`) as a run: reused when identical, replaced only with ``overwrite``."""
    import pandas as pd

    from ..datasets import write_demo_archive
    from ..runs import build_spec, check_output

    settings = {"n_images": n_images, "n_ood": n_ood, "shape": list(shape), "n_experts": n_experts,
                "seed": seed, "snr": list(snr), "test_fraction": test_fraction,
                "ngff_version": ngff_version}  # fmt: skip
    check_output(output, "demo-data", {})
    spec = build_spec("demo-data", config=settings)

    def build(target) -> DemoDataResult:
        with progress_bar(n_images + n_ood, "demo-data", enabled=progress) as bar:
            res = write_demo_archive(target, n_images=n_images, n_ood=n_ood, shape=tuple(shape),
                                     n_experts=n_experts, seed=seed, snr=tuple(snr),
                                     test_fraction=test_fraction, ngff_version=ngff_version,
                                     client=client, progress=bar.update)  # fmt: skip
        return _demo_result(output, res["table"])

    def load(out: Path) -> DemoDataResult:
        return _demo_result(out, pd.read_csv(out / "demo.csv", keep_default_na=False), reused=True)

    result, _ = _atomic_stage("demo-data", output, spec, inputs={}, overwrite=overwrite, argv=argv,
                              build=build, load=load)  # fmt: skip
    return result


def _demo_result(output, table, reused: bool = False) -> DemoDataResult:
    out = Path(output)
    return DemoDataResult(str(out), str(out / "images"), str(out / "demo.csv"), table, reused)


# -- ground truth --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GTResult:
    """The estimated ground truth: per-dataset figures (``dataset``), the expert summary table
    and the folder (``images/<name>.zarr`` with ``labels/est_gt``, tables, plots)."""

    output: str
    method: str
    dataset: dict[str, Any]
    expert_summary: Any = field(repr=False)
    reused: bool = False

    def record_summary(self) -> dict[str, Any]:
        ds = self.dataset
        return {**{k: v for k, v in ds.items() if k != "skipped"}, "skipped": len(ds["skipped"])}

    def summary(self) -> list[str]:
        ds = self.dataset
        again = " (already estimated, same request)" if self.reused else ""
        lines = [f"Estimated the GT ({self.method}) of {ds['estimated']} / {ds['images']} images "
                 f"-> {self.output}{again}"]  # fmt: skip
        lines += [f"  skipped {s['image']}: {s['reason']}" for s in ds["skipped"]]
        mrange = ds["expert_map_range"]
        lines.append(
            f"  mean pairwise expert Dice {ds['mean_pairwise_expert_dice']:.3f}; expert Dice range "
            f"{ds['expert_dice_range'][0]:.3f}-{ds['expert_dice_range'][1]:.3f}; "
            + (f"mAP range {mrange[0]:.3f}-{mrange[1]:.3f}" if mrange else "no instance scores")
        )
        cb = ds["consensus_bound"]
        if cb is not None:
            lines.append(f"  consensus bound: mean pairwise error rate "
                         f"{cb['mean_pairwise_error_rate']:.3f} -> consensus error ~ "
                         f"{cb['consensus_error_rate']:.3f}")  # fmt: skip
        lines.append(self.expert_summary.to_string(index=False))
        return lines


def estimate_gt(
    input: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    mask_suffix: str = "",
    config: GTConfig | None = None,
    formats: Sequence[str] = ("parquet", "csv"),
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> GTResult:
    """Estimate the ground truth (STAPLE / majority vote) from several experts' masks and score
    every expert against it.

    Give an OME-Zarr collection with ``labels/expert_*`` (``input``) or a mask folder
    ``<masks>/<expert>/<image>.<ext>`` (``masks``), not both.
    """
    import json

    import pandas as pd

    from ..config import GTConfig
    from ..gt._collection import mask_sets
    from ..gt._outputs import run_gt
    from ..io import open_collection
    from ..runs import build_spec, check_output

    if (input is None) == (masks is None):
        raise ValueError("give either an input collection or a mask folder (not both)")
    check_output(output, "gt", {"collection": input, "masks": masks})
    config = config if config is not None else GTConfig()
    sources = mask_sets(masks, suffix=mask_suffix) if masks is not None else open_collection(input)
    names = [s.name for s in sources]
    spec = build_spec("gt", config=config, inputs={
        "input": absolute(input), "masks": absolute(masks), "mask_suffix": mask_suffix,
        "images": sorted(map(str, names)), "formats": sorted(formats)})  # fmt: skip

    def build(target) -> GTResult:
        with progress_bar(len(sources), "gt", enabled=progress) as bar:
            res = run_gt(sources, target, formats=formats, client=client, progress=bar.update,
                         method=config.method, undecided=config.undecided,
                         staple_threshold=config.staple_threshold, n_classes=config.n_classes,
                         min_size=config.min_size, instance_scores=config.instance_scores)  # fmt: skip
        return GTResult(str(output), config.method, res["dataset"], res["expert_summary"])

    def load(out: Path) -> GTResult:
        return GTResult(str(output), config.method, json.loads((out / "gt_summary.json").read_text()),
                        pd.read_csv(out / "expert_summary.csv"), reused=True)  # fmt: skip

    result, _ = _atomic_stage("gt", output, spec, inputs={"collection": input,
                              "masks": masks}, overwrite=overwrite, argv=argv,
                              build=build, load=load)  # fmt: skip
    return result
