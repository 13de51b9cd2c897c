"""``scaleseg.predict`` and ``scaleseg.segment_instances``: ensemble inference and instance
separation over an archive, as run objects."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import absolute, progress_bar, torch_threads_setting

if TYPE_CHECKING:
    from ..config import InstancesConfig, PredictConfig

__all__ = ["InstancesResult", "PredictResult", "predict", "segment_instances"]

COMPLETE = "complete"
INSTANCES_SPEC = "instances_spec.json"
INSTANCES_RECORD = "run_instances.json"


@dataclass(frozen=True)
class InstancesResult:
    """What :func:`segment_instances` did: the ``images`` table (per image, with
    ``n_instances``), the method, whether it only found the finished result of an identical
    request, and the instance table -- a folder of one Parquet part per image, read with
    :meth:`read` (only the images / columns asked for) or ``pandas.read_parquet(result.table)``.
    """

    output: Path
    method: str
    images: Any
    reused: bool = False

    @property
    def table(self) -> Path:
        """The partitioned instance table (``instances/part-<image>.parquet``)."""
        from ..instances._run import INSTANCES_TABLE

        return Path(self.output) / INSTANCES_TABLE

    def read(self, images: Sequence[str] | None = None, columns: Sequence[str] | None = None):
        """Instance rows (a pandas frame) of ``images`` (default: all; mind the size of an
        archive) with ``columns`` (default: all)."""
        from ..instances import read_instances

        return read_instances(self.output, images=images, columns=columns)

    def summary(self) -> list[str]:
        ok = self.images[self.images["status"] == "ok"]
        n = int(ok["n_instances"].sum())
        done = " (already done, same request)" if self.reused else ""
        return [f"{n} instances in {len(ok)} images ({self.method}){done} -> "
                f"{self.table}/"]  # fmt: skip


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` did.

    Attributes
    ----------
    output : Path
    images : pandas.DataFrame
        The images table (one row per image: status, U, scores, timings, rank).
    units_run, units_resumed : int
        Work units run by this call, and found finished.
    instances : InstancesResult or None
        The instance post-step, when asked for.
    """

    output: Path
    images: Any
    units_run: int
    units_resumed: int
    instances: InstancesResult | None = None

    @property
    def failed(self):
        return self.images[self.images["status"] != "ok"]

    def summary(self) -> list[str]:
        t = self.images
        n_failed = len(self.failed)
        lines = [
            f"Predicted {len(t) - n_failed} / {len(t)} images -> {self.output} "
            f"({self.units_run} units run, {self.units_resumed} resumed)"
        ]
        lines += [f"  failed {r['image']}: {r['error']}" for _, r in self.failed.iterrows()]
        cols = [c for c in ("rank", "image", "U", "U_epistemic", "foreground_fraction", "seconds")
                if c in t]  # fmt: skip
        lines.append(t[cols].head(10).to_string(index=False))
        if self.instances is not None:
            lines += self.instances.summary()
        return lines


def predict(
    input: str | os.PathLike,
    ensemble: str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: PredictConfig | None = None,
    images: Sequence[str] | None = None,
    images_file: str | os.PathLike | None = None,
    where: str | None = None,
    instances: InstancesConfig | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> PredictResult:
    """Predict every image of an archive with an ensemble: probabilities, labels, uncertainty
    maps and the image scores, written to ``output``.

    Parameters
    ----------
    input : path or URL
        OME-Zarr image, collection or HCS plate (opened read-only).
    ensemble : path
        Ensemble folder of :func:`scaleseg.train` (weights checked against their checksums).
    output : path
        Prediction folder: created, resumed (same request: only unfinished units run) or --
        with ``overwrite`` -- replaced (only a folder scaleseg wrote, never one that is, holds
        or lies inside the input or the ensemble).
    config : PredictConfig, optional
        Tile (default: the ensemble's), overlap, block, chunks, TTA, ... ``batch_size`` and
        ``retries`` may differ on a resume.
    images, images_file, where
        Predict only these images (a list, or a text / CSV list with a ``where`` filter).
    instances : InstancesConfig, optional
        Post-step: instance separation after prediction (may be added to a finished run).
    client : distributed.Client, optional
        Run units as tasks on this cluster; default: in this process.
    overwrite, progress, argv
        See :func:`scaleseg.train`.

    Returns
    -------
    PredictResult
    """
    import pandas as pd

    from ..config import PredictConfig
    from ..inference import predict_collection, read_ensemble, verify_ensemble
    from ..io import open_collection
    from ..runs import StageRun, build_spec, check_output, image_selection
    from ..tables import write_table
    from ..training import select_images

    check_output(output, "predict", {"input": input, "ensemble": ensemble})
    config = config if config is not None else PredictConfig()
    info = read_ensemble(ensemble)
    verify_ensemble(info)
    config = config.for_ensemble(info.tile_shape)
    if info.scale != 1.0:
        raise ValueError(
            f"{ensemble}: ensembles trained with scale {info.scale} cannot be applied by predict "
            "yet (only scale 1)"
        )
    refs = select_images(
        open_collection(input), None if images_file is None else str(images_file), where,
        names=None if images is None else list(images),
    )  # fmt: skip
    out = Path(output)
    spec = build_spec(
        "predict",
        config=config,
        exclude=PredictConfig.EXECUTION_FIELDS,
        inputs={
            "input": absolute(input),
            "images": image_selection(r.name for r in refs),
            "ensemble": absolute(ensemble),
        },  # fmt: skip
        model={"checksums": list(info.checksums)},
        post_steps=["instances"] if _wants(instances) else [],
    )
    run = StageRun("predict", out, spec, inputs={"input": input, "ensemble": ensemble},
                   overwrite=overwrite, argv=argv)  # fmt: skip
    with run:
        for f in info.folds:
            run.record.add_model(f"fold_{f.fold}", f.sha256)
        if run.status == "resume" and (out / COMPLETE).is_file():
            table = pd.read_parquet(out / "images.parquet")
            res = {"images": table, "units_run": 0, "units_resumed": int(table["n_blocks"].sum())}
        else:
            (out / COMPLETE).unlink(missing_ok=True)
            with progress_bar(0, "predict", enabled=progress, unit="block") as bar:
                res = predict_collection(
                    refs, info, out, config=config, client=client,
                    torch_threads=torch_threads_setting(), progress=bar.update,
                    set_total=lambda n: setattr(bar, "total", n),
                )  # fmt: skip
            write_table(res["images"], out / "images", ["parquet", "csv"])
        table = res["images"]
        failed = table[table["status"] != "ok"]
        run.record.set_summary(
            images=len(table), failed=len(failed), units_run=res["units_run"],
            units_resumed=res["units_resumed"], mean_U=float(table["U"].mean()),
        )  # fmt: skip
        if failed.empty:
            (out / COMPLETE).write_text("")
    inst = None
    if _wants(instances):
        inst = segment_instances(out, config=instances, client=client, overwrite=False,
                                 progress=progress, argv=argv)  # fmt: skip
    return PredictResult(out, table, res["units_run"], res["units_resumed"], inst)


def _wants(instances) -> bool:
    return instances is not None and getattr(instances, "method", "none") != "none"


def segment_instances(
    prediction: str | os.PathLike,
    *,
    config: InstancesConfig | None = None,
    block_shape: tuple[int, int] | None = None,
    formats: Sequence[str] | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> InstancesResult:
    """Separate touching objects in every image of a finished prediction.

    Adds ``labels/instances`` to each output image, the partitioned table ``instances/`` (one
    Parquet part per image, one row per instance; ``instances.csv`` too while it has at most
    :data:`~scaleseg.tables.CSV_ROW_LIMIT` rows) and ``instances_images.parquet`` (per image)
    to the prediction folder; nothing
    else there is changed. A finished run with the same settings is reused; other settings
    need ``overwrite`` (which replaces only these files).

    Parameters
    ----------
    prediction : path
        Output folder of :func:`scaleseg.predict`.
    config : InstancesConfig
        Method (``components``, ``watershed``, ``flows``, ``cellpose``) and its settings.
    block_shape : (int, int), optional
        Blocks of the stitching (default: the prediction's).
    formats : sequence of {"parquet", "csv"}, optional
        Table formats: the Parquet parts are always written; with ``"csv"`` also
        ``instances.csv`` whatever its size, without it never. Default: the CSV only while the
        table has at most :data:`~scaleseg.tables.CSV_ROW_LIMIT` rows.
    """
    import pandas as pd

    from ..config import InstancesConfig
    from ..inference import read_ensemble
    from ..instances import has_instances, run_instances
    from ..runs import StageRun, build_spec, read_spec

    config = config if config is not None else InstancesConfig(method="components")
    if config.method == "none":
        raise ValueError("choose an instance method (components, watershed, flows, cellpose)")
    pred = Path(prediction)
    host = read_spec(pred)
    if host is None or host.stage != "predict" or not (pred / COMPLETE).is_file():
        raise ValueError(
            f"{pred}: not a finished `scaleseg predict` output (run or resume predict first)"
        )
    block = tuple(block_shape or host.config.get("block_shape") or (2048, 2048))
    inputs: dict[str, Any] = {"prediction": absolute(pred), "block_shape": list(block)}
    csv = None  # the default: a CSV copy while the table is small
    if formats is not None:
        unknown = sorted(set(formats) - {"parquet", "csv"})
        if unknown:
            raise ValueError(f"unknown table format(s) {unknown}; choose parquet and/or csv")
        csv = "csv" in formats
        inputs["formats"] = sorted({"parquet", *formats})  # recorded: a change needs overwrite
    spec = build_spec("instances", config=config, inputs=inputs)
    run = StageRun("instances", pred, spec, kind="addon", host_stage="predict",
                   record_name=INSTANCES_RECORD, spec_name=INSTANCES_SPEC, overwrite=overwrite,
                   argv=argv, owns=("instances", "instances.parquet", "instances.csv",
                                               "instances_images.parquet"))  # fmt: skip
    with run:
        done = (pred / "instances_images.parquet").is_file() and has_instances(pred)
        if run.status == "resume" and done:
            images = pd.read_parquet(pred / "images.parquet").merge(
                pd.read_parquet(pred / "instances_images.parquet"), on="image", how="left"
            )
            result = InstancesResult(pred, config.method, images, reused=True)
        else:
            info = read_ensemble(host.inputs["ensemble"])
            with progress_bar(None, "instances", enabled=progress) as bar:
                res = run_instances(
                    pred, config=config, n_classes=info.n_classes, has_flows=info.n_extra >= 2,
                    block_shape=block, csv=csv, overwrite=True, client=client,
                    progress=bar.update,
                )  # fmt: skip
            result = InstancesResult(pred, config.method, res["images"])
        ok = result.images[result.images["status"] == "ok"]
        run.record.set_summary(instances=int(ok["n_instances"].sum()), images=len(ok),
                               method=config.method)  # fmt: skip
    return result
