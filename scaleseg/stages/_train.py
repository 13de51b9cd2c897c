"""``scaleseg.train``: a k-fold ensemble, one Dask task per fold, as one run object."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import absolute, progress_bar, torch_threads_setting

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["TrainResult", "train"]

EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    output : Path
        The ensemble folder.
    manifest : EnsembleManifest
        Its ``ensemble.json``.
    folds_trained, folds_resumed : tuple of int
        Folds trained by this call and folds found finished.
    exported : tuple of Path
        Files written by the ``export`` post-step in this call.
    features_completed : bool
        Whether this call completed the feature statistics of an ensemble whose folds were all
        finished (statistics written by an older scaleseg: no calibration or per-cell part).
    warnings : tuple of str
        Things the user should know (images without labels, missing pretrained weights).
    """

    output: Path
    manifest: Any
    folds_trained: tuple[int, ...] = ()
    folds_resumed: tuple[int, ...] = ()
    exported: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    features_completed: bool = False

    def summary(self) -> list[str]:
        """Lines for a person (what the CLI prints)."""
        from ..training import saturation_warnings

        m = self.manifest
        dice = [f.valid_dice for f in m.folds]
        lines = [f"warning: {w}" for w in (*self.warnings, *saturation_warnings(m))]
        if not self.folds_trained and self.folds_resumed:
            lines.append(f"{self.output}: every fold was already trained (same request)")
            if self.features_completed:
                lines.append(
                    "completed the feature statistics (written by an older scaleseg): "
                    "ensemble.json changed; for U_novel, predict again into a new folder (or "
                    "with --overwrite)"
                )
        elif self.folds_resumed:
            lines.append(f"resumed: folds {list(self.folds_resumed)} were finished and kept")
        lines.append(
            f"Ensemble {self.output}: validation Dice per fold "
            + ", ".join(f"{d:.3f}" for d in dice)
            + f" (mean {sum(dice) / len(dice):.3f}); encoder weights: "
            + (m.encoder_weights.describe() if m.encoder_weights else "not recorded")
        )
        if m.decision_threshold is not None:
            d = m.decision_threshold
            lines.append(
                f"decision threshold {d.value:.2f} (foreground probability; pooled validation "
                f"Dice {max(d.dice):.3f}, {d.dice_argmax:.3f} at 0.5)"
            )
        if m.ood_threshold is not None:
            t = m.ood_threshold
            lines.append(
                f"feature-distance threshold for qa's review rule: {t.value:.4g} (the largest of "
                f"{t.n_images} held-out training images; median {t.median:.4g})"
            )
        if m.has_cell_novelty:
            lines.append(
                "cell-novelty thresholds for U_novel: "
                + ", ".join(f"{f.features.novelty.threshold:.4g}" for f in m.folds)
                + " (per fold: the largest cell distance of its validation images)"
            )
        lines += [f"exported {p}" for p in self.exported]
        return lines


def train(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: TrainConfig | None = None,
    gt: str | os.PathLike | None = None,
    label: str | None = None,
    images: Sequence[str] | None = None,
    images_file: str | os.PathLike | None = None,
    where: str | None = None,
    instance_label: str | None = None,
    flows: bool = False,
    export: Iterable[str] = (),
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> TrainResult:
    """Train a k-fold ensemble on the labelled images of an OME-Zarr collection.

    Parameters
    ----------
    input : path
        OME-Zarr collection (or plate) with the training images.
    output : path
        The ensemble folder: created, resumed (same request) or -- with ``overwrite`` --
        replaced (only a folder scaleseg wrote).
    config : TrainConfig, optional
        Model and schedule (default: the deepflash2 defaults).
    gt : path, optional
        Output folder of :func:`scaleseg.estimate_gt` holding the labels (``est_gt``).
    label : str, optional
        A label group of the input images to train on (instead of ``gt``).
    images, images_file, where
        Which images train: a list of names, or a text / CSV list (``where``: ``column=value``
        filter of the CSV). Default: every image with labels.
    instance_label : str, optional
        Label group with instance ids for the flow targets.
    flows : bool
        Two extra outputs trained on cellpose flows (for ``instances`` method ``flows``).
    export : iterable of {"torchscript", "onnx"}
        Post-step: export every fold (may be added to a finished ensemble).
    client : distributed.Client, optional
        Run the folds as tasks on this cluster; default: in this process.
    overwrite : bool
    progress : bool
        Progress bars on stderr.
    argv : list of str, optional
        The command line, recorded in ``run.json``.

    Returns
    -------
    TrainResult
    """
    from ..config import TrainConfig
    from ..gt._outputs import run_gt
    from ..io import open_image, to_cyx
    from ..models import EnsembleManifest, ModelSpec, resolve_encoder_weights
    from ..runs import StageRun, build_spec, check_output, image_selection
    from ..training import finished_folds, items_from_gt, train_ensemble, training_items
    from ..training._export import export_ensemble

    check_output(output, "train", {"input": input, "gt": gt})
    config = config if config is not None else TrainConfig()
    export = tuple(sorted(set(export)))
    bad = sorted(set(export) - set(EXPORT_FORMATS))
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; use {', '.join(EXPORT_FORMATS)}")
    if gt is not None and label is not None:
        raise ValueError("give gt or label, not both")
    out = Path(output)
    items, needs_vote, warnings = training_items(
        str(input), gt=None if gt is None else str(gt), label=label,
        names_file=None if images_file is None else str(images_file), where=where,
        instance_label=instance_label, names=None if images is None else list(images),
    )  # fmt: skip
    names = [i.name for i in items] + [r.name for r in needs_vote]
    if not names:
        raise ValueError(f"{input}: no labelled images to train on")
    first = items[0].image_url if items else needs_vote[0].url
    model = ModelSpec(
        arch=config.arch,
        encoder=config.encoder,
        in_channels=int(to_cyx(open_image(first)).sizes["c"]),
        n_classes=config.n_classes,
        n_extra=2 if flows else 0,
        encoder_weights=config.encoder_weights,
        encoder_depth=config.encoder_depth,
        decoder_channels=config.decoder_channels,
    )
    if len(names) < config.n_folds:
        raise ValueError(
            f"{len(names)} labelled images cannot make {config.n_folds} folds (use fewer folds)"
        )
    spec = build_spec(
        "train",
        config=config,
        inputs={"input": absolute(input), "images": image_selection(names)},
        labels={
            "gt": absolute(gt),
            "label": label,
            "instance_label": instance_label,
            "majority_vote": sorted(r.name for r in needs_vote),
        },  # fmt: skip
        model=model.to_dict(),
        post_steps=[f"export:{f}" for f in export],
    )
    weights, _ = resolve_encoder_weights(model, warn=False)
    if weights.requested and weights.source == "random":
        warnings.append(
            f"no local {weights.requested!r} weights for encoder {model.encoder!r}: the encoder "
            "starts from random initialisation (recorded as such in ensemble.json)"
        )
    run = StageRun("train", out, spec, inputs={"input": input, "gt": gt},
                   overwrite=overwrite, argv=argv)  # fmt: skip
    with run:
        done = tuple(finished_folds(out))
        manifest = None
        complete = _complete(out)
        completing = bool(done) and (out / "ensemble.json").is_file() and not complete
        if complete:
            manifest = EnsembleManifest.read(out)
        else:
            if needs_vote:
                run_gt(
                    needs_vote, out / "gt", method="majority_vote", client=client, overwrite=True
                )
                items = items + items_from_gt(needs_vote, out / "gt")
            n_models = config.n_models or config.n_folds
            with progress_bar(n_models, "folds", enabled=progress) as bar:
                manifest = train_ensemble(
                    items, out, model=model, config=config, client=client,
                    torch_threads=torch_threads_setting(), progress=bar.update,
                    data_description=f"Images from {input}; labels from "
                    f"{gt or label or 'est_gt / single expert / majority vote'}.",
                    spec=spec.model_dump(mode="json"),
                )  # fmt: skip
        exported: list[Path] = []
        missing = [f for f in export if not _exported(out, manifest, f)]
        if missing:
            exported = export_ensemble(out, formats=missing)
        trained = tuple(f.fold for f in manifest.folds if f.fold not in done)
        for f in manifest.folds:
            run.record.add_model(f"fold_{f.fold}", f.sha256)
        run.record.set_summary(
            folds=len(manifest.folds), folds_trained=list(trained),
            valid_dice=[f.valid_dice for f in manifest.folds],
            encoder_weights=manifest.encoder_weights.model_dump(mode="json")
            if manifest.encoder_weights else None,
            exported=[str(p) for p in exported],
        )  # fmt: skip
    return TrainResult(out, manifest, trained, tuple(f for f in done), tuple(exported),
                       tuple(warnings), features_completed=completing and not trained)  # fmt: skip


def _complete(out: Path) -> bool:
    """A finished ensemble whose folds all carry feature statistics, their calibration and
    (folds with validation images) the per-cell part; a re-run completes an older one."""
    from ..models import EnsembleManifest

    try:
        m = EnsembleManifest.read(out)
    except (FileNotFoundError, ValueError):
        return False
    return all(
        f.features is not None
        and f.features.calibration is not None
        and (f.features.novelty is not None or not f.valid_images)
        for f in m.folds
    )


def _exported(out: Path, manifest, fmt: str) -> bool:
    ext = {"torchscript": "torchscript.pt", "onnx": "onnx"}[fmt]
    return all((out / "export" / f"fold_{f.fold}.{ext}").is_file() for f in manifest.folds)
