"""Validated, frozen configuration models for every pipeline stage.

Each stage (``gt``, ``train``, ``predict``, ``instances``, ``qa``) has one frozen pydantic model
carrying the deepflash2 defaults (Griebel et al. 2023, Methods). They compose into one
:class:`RunConfig` that is imported from / exported to JSON, so a deepflash2 user can keep a
configuration file next to the data. Variants are values (``method="staple"``), never subclasses.
Unknown keys and bad values raise :class:`ConfigError` naming the offending key.

Cluster knobs are *not* here: they live in ``dask.config`` under the ``scaleseg`` key
(see :mod:`scaleseg.cluster`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "GTConfig",
    "TrainConfig",
    "PredictConfig",
    "InstancesConfig",
    "QAConfig",
    "ConvertConfig",
    "PREDICT_PRESETS",
    "RunConfig",
    "from_dict",
    "load_config",
    "save_config",
    "STAGES",
]


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key and the problem."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


Shape2D = tuple[int, int]


def _positive_shape(value: tuple[int, ...]) -> tuple[int, ...]:
    if any(int(v) <= 0 for v in value):
        raise ValueError(f"all sizes must be positive, got {value}")
    return value


class ConvertConfig(_Frozen):
    """Conversion of image/mask folders into an OME-Zarr collection."""

    chunks: Shape2D = (512, 512)
    n_levels: int = Field(3, ge=1, le=12, description="multiscale levels including full resolution")
    ngff_version: Literal["0.4", "0.5"] = "0.5"

    _check_chunks = field_validator("chunks")(_positive_shape)


class GTConfig(_Frozen):
    """Ground-truth estimation from several experts' masks."""

    method: Literal["staple", "majority_vote"] = "staple"
    undecided: Literal["best_expert", "background"] = Field(
        "best_expert",
        description="rule for pixels without a decision: the label of the best-scoring expert "
        "(deepflash2) or background",
    )
    staple_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    n_classes: int | None = Field(None, ge=1, description="foreground classes; None = infer")
    min_size: int = Field(0, ge=0, description="instances smaller than this (pixels) are ignored")
    instance_scores: bool = Field(
        True,
        description="score experts by instances too (mAP, AP50) and compute the consensus "
        "bound; False = Dice only (as deepflash2), about 3x faster",
    )


class TrainConfig(_Frozen):
    """Ensemble training (deepflash2 defaults, section Methods)."""

    arch: str = "Unet"
    encoder: str = "tu-convnext_tiny"
    encoder_weights: str | None = Field(
        "imagenet", description="'imagenet' (local cache only), a local file path, or None"
    )
    n_classes: int = Field(2, ge=2, description="including background")
    encoder_depth: int | None = Field(
        None, ge=3, le=5, description="encoder stages; None = smp's 5 (deepflash2's ConvNeXt: 4)"
    )
    decoder_channels: tuple[int, ...] | None = Field(
        None, description="decoder widths, one per stage; None = smp's (deepflash2: 256 128 64 16)"
    )
    loss: Literal["ce_dice", "focal", "tversky", "lovasz", "ce"] = "ce_dice"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(4, ge=1)
    tile_shape: Shape2D = (512, 512)
    frozen_epochs: int = Field(1, ge=0)
    epochs: int = Field(25, ge=1)
    n_folds: int = Field(5, ge=2)
    n_models: int | None = Field(None, ge=1, description="models to train; None = n_folds")
    tiles_per_epoch: int = Field(512, ge=1)
    scale: float = Field(1.0, gt=0, description="zoom-out factor for large structures")
    augmentations: tuple[str, ...] = ("flip", "rotate90", "rotate", "gamma")
    intensity: Literal["data", "dtype", "percentile"] = Field(
        "data",
        description="unit scale of the pixels: divided by the largest training value per "
        "channel ('data': 12-bit data in uint16 fills [0, 1]), by the dtype's range "
        "('dtype', as ensembles before it), or each image's 1st-99.8th percentile mapped to "
        "[0, 1] ('percentile': dim and bright acquisitions look alike)",
    )
    ema: float | None = Field(
        0.99,
        ge=0.0,
        lt=1.0,
        description="decay of an exponential moving average of the weights (with warm-up), "
        "validated and saved instead of the raw weights; None = off",
    )
    threshold: Literal["calibrate", "argmax"] = Field(
        "argmax",
        description="decision rule of binary ensembles: the foreground-probability threshold "
        "with the best pooled Dice on the folds' validation images ('calibrate', stored in "
        "ensemble.json and used by predict), or the argmax (0.5); multi-class: always argmax",
    )
    mixed_precision: bool = True
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0

    _check_tile = field_validator("tile_shape")(_positive_shape)

    @model_validator(mode="after")
    def _decoder_matches_depth(self):
        c = self.decoder_channels
        if c is not None and (len(c) != (self.encoder_depth or 5) or min(c) < 1):
            raise ValueError(
                f"decoder_channels {list(c)} needs one positive width per encoder stage "
                f"({self.encoder_depth or 5})"
            )
        return self

    @field_validator("encoder_weights", mode="before")
    @classmethod
    def _none_weights(cls, v):
        return None if isinstance(v, str) and v.strip().lower() in ("", "none", "null") else v


class PredictConfig(_Frozen):
    """Ensemble inference with Gaussian-weighted sliding windows and test-time augmentation.

    ``batch_size`` and ``retries`` are execution options: they change how units run, not what
    they compute, so a run may resume with other values (they are not part of the run spec).
    """

    tile_shape: Shape2D | None = Field(
        None,
        description="window shape; None = the ensemble's training tile times tile_scale, "
        "fitted to the image (window_for)",
    )
    tile_scale: int = Field(
        4,
        ge=1,
        le=8,
        description="with tile_shape None: windows tile_scale times the ensemble's training "
        "tile, but no larger than the image needs (fully convolutional members; on PV-in-HC "
        "4x kept Dice and r(U, Dice), benchmarks/bench_frontier.py)",
    )
    overlap: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="window overlap as a tile fraction (0.25: equal Dice and r(U, Dice) to 0.5 "
        "on PV-in-HC, benchmarks/bench_frontier.py)",
    )
    block_shape: Shape2D = (2048, 2048)
    chunks: Shape2D = Field((512, 512), description="chunk shape of the output arrays")
    ngff_version: Literal["0.4", "0.5"] = Field(
        "0.5", description="0.5 (zarr v3, the default) or 0.4 (zarr v2) for older readers"
    )
    tta: Literal["none", "flips", "dihedral"] = "flips"
    zeta: float = Field(4.0, gt=0, description="uncertainty scale ζ (u in [0, 1] for ζ = 4)")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="inputs per forward pass; None = 1 on CPU (11-20% faster per window there "
        "than 4) and 4 on GPU",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="foreground-probability threshold of a binary ensemble; None = the "
        "ensemble's calibrated threshold, or the argmax when it has none",
    )
    probabilities_dtype: Literal["float32", "float16"] = "float16"
    write_probabilities: bool = True
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="runs the members: auto = ONNX Runtime on CPU workers (0.6x torch's time "
        "per window) and torch on GPUs; torch; or on CPU workers an ONNX graph of each member "
        "under ONNX Runtime / OpenVINO (exported once per user, cached by the weights' SHA-256; "
        "probabilities equal torch's within 1e-5)",
    )
    precision: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="the members' arithmetic: auto = float16 autocast on GPUs, float32 on "
        "CPUs; bfloat16 runs on CPUs with native support under OpenVINO (auto engine) or "
        "torch autocast; softmax, sums and uncertainty stay float32",
    )
    retries: int = Field(2, ge=0)

    #: fields that change how units run, not what they compute (left out of run specs)
    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("batch_size", "retries")

    _check_block = field_validator("block_shape", "chunks")(_positive_shape)

    @model_validator(mode="after")
    def _engine_runs_precision(self) -> PredictConfig:
        if self.engine in ("onnxruntime", "openvino") and self.precision == "float16":
            raise ValueError(f"engine {self.engine} runs on CPUs, where float16 is not offered")
        if self.engine == "onnxruntime" and self.precision == "bfloat16":
            raise ValueError("engine onnxruntime runs float32 only; use openvino or torch")
        return self

    @classmethod
    def preset(cls, name: str, **values: Any) -> PredictConfig:
        """The config of a named point of the speed-quality frontier (:data:`PREDICT_PRESETS`:
        ``fast``, ``default``, ``thorough``), with ``values`` (fields) applied on top."""
        if name not in PREDICT_PRESETS:
            raise ConfigError(
                f"unknown predict preset {name!r}; expected one of {', '.join(PREDICT_PRESETS)}"
            )
        try:
            return cls.model_validate({**PREDICT_PRESETS[name], **values})
        except ValidationError as exc:
            raise ConfigError(_format_error(exc, f"preset {name!r}")) from None

    def window_for(self, image_shape, ensemble_tile) -> tuple[int, int]:
        """The window shape for an image of ``image_shape`` (..., Y, X).

        ``tile_shape`` when set. Otherwise each side is the ensemble's training tile times
        ``tile_scale``, cut down to what the image needs -- its side rounded up to a multiple
        of 32 (the members' stride) -- but never below the training tile, so that an image
        smaller than the scaled window is not mostly predicted on its mirror image.
        """
        if self.tile_shape is not None:
            return (int(self.tile_shape[0]), int(self.tile_shape[1]))
        sides = []
        for side, tile in zip(tuple(image_shape)[-2:], ensemble_tile, strict=True):
            need = -(-int(side) // 32) * 32
            sides.append(max(int(tile), min(int(tile) * self.tile_scale, need)))
        return (sides[0], sides[1])


#: Named points of the speed-quality frontier of prediction (``benchmarks/bench_frontier.py`` on
#: the PV-in-HC held-out images, README "Speed and quality"): the fields each sets on top of the
#: defaults. ``thorough`` is the frontier's reference (the most complete setting); ``default``
#: keeps its Dice and r(U, Dice) within the bootstrap bounds (larger windows, overlap 0.25);
#: ``fast`` adds bfloat16 (3.2x at equal quality, on GPUs and CPUs with native bf16 only).
PREDICT_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"precision": "bfloat16"},
    "default": {},
    "thorough": {"tile_scale": 1, "overlap": 0.5, "tta": "flips", "precision": "float32"},
}


class InstancesConfig(_Frozen):
    """Instance separation of the semantic prediction."""

    method: Literal["none", "components", "watershed", "flows", "cellpose"] = Field(
        "none", description="none (predict only), or the instance method run after predict"
    )
    min_size: int = Field(15, ge=0, description="instances smaller than this (pixels) are removed")
    flow_threshold: float = Field(0.4, ge=0, description="cellpose flow-error threshold")
    cellpose_model: str | None = Field(None, description="local path or cellpose cache model name")
    diameter: float | None = Field(None, gt=0, description="object diameter for the cellpose model")
    halo: int = Field(32, ge=0, description="context around each block (pixels)")


class QAConfig(_Frozen):
    """Quality assurance: ranking, Umin, OOD flags, report."""

    metric: Literal["dice", "map", "ap50"] = "dice"
    tau: float = Field(
        0.75, ge=0, le=1, description="score below which a test image counts as failed"
    )
    umin: float | None = Field(None, ge=0, le=1, description="fixed Umin; None = estimate")
    ood_threshold: float | None = Field(
        None,
        gt=0,
        description="fixed threshold of the feature-distance rule; None = the ensemble's "
        "calibrated one (the largest distance of a held-out training image)",
    )
    score: Literal["U", "U_border", "U_novel"] = Field(
        "U",
        description="image score to rank, flag (U >= Umin) and correlate by: U (mean u over "
        "predicted foreground), U_border (mean u over object borders, computed by qa) or "
        "U_novel (mean of max(u, novelty) over predicted foreground, recorded by predict)",
    )
    top_n: int = Field(24, ge=0)


STAGES = ("convert", "gt", "train", "predict", "instances", "qa")


class RunConfig(_Frozen):
    """All stages in one document (exported as JSON beside every output)."""

    convert: ConvertConfig = ConvertConfig()
    gt: GTConfig = GTConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    instances: InstancesConfig = InstancesConfig()
    qa: QAConfig = QAConfig()

    def updated(self, stage: str, **values: Any) -> RunConfig:
        """Return a copy with ``values`` applied to ``stage`` (validated)."""
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        current = getattr(self, stage).model_dump()
        current.update({k: v for k, v in values.items() if v is not None})
        data = self.model_dump()
        data[stage] = current
        return from_dict(data)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def from_dict(data: dict[str, Any], *, source: str = "<dict>") -> RunConfig:
    """Validate a (possibly partial) dict into a :class:`RunConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a JSON object")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: str | Path | None) -> RunConfig:
    """Load a JSON run configuration; ``None`` gives the defaults. Missing keys take defaults."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return from_dict(data, source=str(path))


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON and return the path."""
    path = Path(path)
    path.write_text(config.to_json() + "\n")
    return path
