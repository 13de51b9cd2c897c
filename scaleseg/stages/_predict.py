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
    in_pass: int = 0

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
        same = f", {self.in_pass} of them in the prediction pass" if self.in_pass else ""
        return [f"{n} instances in {len(ok)} images ({self.method}{same}){done} -> "
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
        The instance step, when asked for and every image was predicted.
    instances_waiting : bool
        Instances were asked for but wait for the failed images (a re-run of the same
        request finishes them, keeping what the prediction pass did).
    """

    output: Path
    images: Any
    units_run: int
    units_resumed: int
    instances: InstancesResult | None = None
    instances_waiting: bool = False

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
        cols = [c for c in ("rank", "image", "U", "U_epistemic", "U_novel", "foreground_fraction",
                            "seconds")
                if c in t and (c != "U_novel" or t[c].notna().any())]  # fmt: skip
        lines.append(t[cols].head(10).to_string(index=False))
        if self.instances is not None:
            lines += self.instances.summary()
        if self.instances_waiting:
            lines.append(
                f"Instances wait for the {n_failed} failed image(s): fix or leave them out and "
                "run the same command again (what this pass did is kept)"
            )
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
        Instance separation: an image predicted in one block gets its instances in its own
        unit (the same pass: nothing is read twice), larger images after prediction, stitched
        across blocks. May be added to a finished run (then all after prediction).
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
        # the feature statistics decide ood_distance and U_novel: a changed file is a new run
        model={
            "checksums": list(info.checksums),
            "features": [None if f.features is None else f.features.sha256 for f in info.folds],
        },
        post_steps=["instances"] if _wants(instances) else [],
    )
    run = StageRun("predict", out, spec, inputs={"input": input, "ensemble": ensemble},
                   overwrite=overwrite, argv=argv)  # fmt: skip
    irun = None
    if _wants(instances):
        irun = _instances_run(out, instances, spec.config.get("block_shape"), argv=argv)
        if run.check() == "resume":  # another instance request is refused before anything runs
            irun.check(host_known=True)
    with run:
        for f in info.folds:
            run.record.add_model(f"fold_{f.fold}", f.sha256)
            if f.features is not None:
                run.record.add_model(f"fold_{f.fold}_features", f.features.sha256)
        if run.status == "resume" and (out / COMPLETE).is_file():
            table = pd.read_parquet(out / "images.parquet")
            res = {"images": table, "units_run": 0, "units_resumed": int(table["n_blocks"].sum())}
        else:
            (out / COMPLETE).unlink(missing_ok=True)
            in_pass = _begin_in_pass(irun, run, instances, info.n_classes)
            with progress_bar(0, "predict", enabled=progress, unit="block") as bar:
                res = predict_collection(
                    refs, info, out, config=config, client=client,
                    torch_threads=torch_threads_setting(), progress=bar.update,
                    set_total=lambda n: setattr(bar, "total", n), instances=in_pass,
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
    if _wants(instances) and failed.empty:
        inst = segment_instances(out, config=instances, client=client, overwrite=False,
                                 progress=progress, argv=argv)  # fmt: skip
    return PredictResult(out, table, res["units_run"], res["units_resumed"], inst,
                         instances_waiting=_wants(instances) and not failed.empty)  # fmt: skip


def _begin_in_pass(irun, run, instances, n_classes: int):
    """Store the instance request before predict's units run and hand them its token (the
    same pass), unless that request is finished already. Runs under predict's lock."""
    from ..instances import INSTANCES_TABLE, InPass, begin_in_pass

    if irun is None:
        return None
    status = irun.check(host_known=True) if run.status == "resume" else "new"
    out = run.output
    if status == "resume" and (out / "instances_images.parquet").is_file():
        return None  # done: nothing to add (predict's own resume rewrites no image)
    irun.write_spec()
    token = begin_in_pass(out, fresh=status != "resume")
    return InPass(instances, token, str(out / INSTANCES_TABLE), n_classes)


def _instances_run(pred: Path, config, block, *, formats=None, overwrite=False, argv=None):
    """The instance stage's run on a prediction folder (its spec: method, blocks, formats)."""
    from ..instances import PASS_FILE
    from ..runs import StageRun, build_spec

    inputs: dict[str, Any] = {"prediction": absolute(pred),
                              "block_shape": list(block or (2048, 2048))}  # fmt: skip
    if formats is not None:
        inputs["formats"] = sorted({"parquet", *formats})  # recorded: a change needs overwrite
    spec = build_spec("instances", config=config, inputs=inputs)
    return StageRun("instances", pred, spec, kind="addon", host_stage="predict",
                    record_name=INSTANCES_RECORD, spec_name=INSTANCES_SPEC, overwrite=overwrite,
                    argv=argv, owns=("instances", "instances.parquet", "instances.csv",
                                     "instances_images.parquet", PASS_FILE))  # fmt: skip


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
    from ..instances import has_instances, in_pass_results, run_instances
    from ..runs import read_spec

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
    csv = None  # the default: a CSV copy while the table is small
    if formats is not None:
        unknown = sorted(set(formats) - {"parquet", "csv"})
        if unknown:
            raise ValueError(f"unknown table format(s) {unknown}; choose parquet and/or csv")
        csv = "csv" in formats
    run = _instances_run(pred, config, block, formats=formats, overwrite=overwrite, argv=argv)
    with run:
        done = (pred / "instances_images.parquet").is_file() and has_instances(pred)
        if run.status == "resume" and done:
            images = pd.read_parquet(pred / "images.parquet").merge(
                pd.read_parquet(pred / "instances_images.parquet"), on="image", how="left"
            )
            result = InstancesResult(pred, config.method, images, reused=True)
        else:
            info = read_ensemble(host.inputs["ensemble"])
            # images predict's units already did for this very request (the same pass)
            in_pass = in_pass_results(pred) if run.status == "resume" else {}
            with progress_bar(None, "instances", enabled=progress) as bar:
                res = run_instances(
                    pred, config=config, n_classes=info.n_classes, has_flows=info.n_extra >= 2,
                    block_shape=block, csv=csv, overwrite=True, client=client,
                    progress=bar.update, in_pass=in_pass,
                )  # fmt: skip
            result = InstancesResult(pred, config.method, res["images"], in_pass=res["in_pass"])
        ok = result.images[result.images["status"] == "ok"]
        run.record.set_summary(instances=int(ok["n_instances"].sum()), images=len(ok),
                               method=config.method, in_pass=result.in_pass)  # fmt: skip
    return result
