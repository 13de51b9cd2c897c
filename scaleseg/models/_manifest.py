"""The ensemble manifest (``ensemble.json``) as one typed model, shared by writer and readers.

``scaleseg train`` writes it through :meth:`EnsembleManifest.write`; predict, the lazy API,
export, the model card and the demo summary read it through :meth:`EnsembleManifest.read`, as
nnU-Net reads its plans through one manager. Unknown keys are an error; manifests written
before a field existed read with that field's documented default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ENSEMBLE_FILE",
    "EncoderWeights",
    "EnsembleManifest",
    "CellNoveltyEntry",
    "FeatureEntry",
    "FoldEntry",
    "DecisionThreshold",
    "DistanceThreshold",
]

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "scaleseg-ensemble/1"


class _Typed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EncoderWeights(_Typed):
    """The encoder weights a model was actually built with (not only what was asked)."""

    requested: str | None = Field(description="what the training asked for: imagenet, a file, None")
    source: Literal["random", "cache", "file", "unknown"] = Field(
        description="random (no weights loaded), cache (the library's local cache), file (a "
        "local file given by the user); unknown for ensembles written before this was recorded"
    )
    path: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        if self.source == "random":
            asked = f" ({self.requested!r} was asked for and not found)" if self.requested else ""
            return f"random initialisation{asked}"
        if self.source == "unknown":
            return f"{self.requested!r} requested (what was loaded was not recorded)"
        return f"{self.source} {self.path} (sha256 {str(self.sha256)[:12]}...)"


class Calibration(_Typed):
    images: list[str]
    distances: list[float]


class CellNoveltyEntry(_Typed):
    """The per-cell part of a fold's feature statistics (the novelty map and ``U_novel``)."""

    n_cells: int = Field(description="training cells the statistics were fitted on")
    threshold: float = Field(
        description="largest distance of any cell of the fold's validation images (all flips)"
    )
    rule: str = Field(description="how the cells were measured and the threshold chosen")


class FeatureEntry(_Typed):
    """Encoder-feature statistics of one fold (the ``ood_distance`` score)."""

    path: str
    sha256: str
    n_samples: int
    dim: int
    shrinkage: float
    calibration: Calibration | None = None
    novelty: CellNoveltyEntry | None = None
    seconds: float | None = None


class FoldEntry(_Typed):
    """One member of the ensemble."""

    fold: int
    path: str
    sha256: str
    valid_dice: float
    best_epoch: int
    train_images: list[str]
    valid_images: list[str]
    seconds: float
    features: FeatureEntry | None = None
    encoder_weights: EncoderWeights | None = None
    class_reach: list[float] | None = Field(
        None,
        description="per foreground class, the 99th percentile of its probability on the "
        "fold's own validation pixels of that class (about 0.5 = never confident)",
    )


class DistanceThreshold(_Typed):
    """Threshold of qa's feature-distance review rule, calibrated without labels."""

    value: float
    rule: str
    n_images: int
    median: float


class DecisionThreshold(_Typed):
    """Foreground-probability threshold of a binary ensemble, chosen on the folds' validation
    images (pooled Dice per candidate threshold; 0.5 is the argmax rule)."""

    value: float = Field(gt=0, lt=1)
    rule: str
    thresholds: list[float]
    dice: list[float] = Field(description="pooled validation Dice at each candidate threshold")
    dice_argmax: float = Field(description="pooled validation Dice at 0.5 (argmax)")


class EnsembleManifest(_Typed):
    """The content of ``ensemble.json``."""

    format: str = FORMAT
    created: str
    model: dict[str, Any] = Field(description="ModelSpec.to_dict() of every member")
    architecture: str
    encoder: str
    in_channels: int
    n_classes: int
    n_extra: int = 0
    classes: list[str]
    normalization: dict[str, Any]
    tile_shape: tuple[int, int]
    scale: float = 1.0
    ood_threshold: DistanceThreshold | None = None
    decision_threshold: DecisionThreshold | None = Field(
        None, description="calibrated foreground threshold (binary ensembles); None = argmax"
    )
    encoder_weights: EncoderWeights | None = None
    train: dict[str, Any] = Field(description="TrainConfig as JSON")
    folds: list[FoldEntry]
    versions: dict[str, str | None] = Field(default_factory=dict)
    seconds: float = 0.0
    data: str = ""
    spec: dict[str, Any] | None = Field(None, description="the run spec that made the ensemble")

    @property
    def checksums(self) -> tuple[str, ...]:
        return tuple(f.sha256 for f in self.folds)

    @property
    def has_cell_novelty(self) -> bool:
        """Whether every fold's feature statistics have the per-cell part (``U_novel``)."""
        return all(f.features is not None and f.features.novelty for f in self.folds)

    @classmethod
    def read(cls, folder: str | Path) -> EnsembleManifest:
        """Read ``<folder>/ensemble.json``; errors name the file and the problem."""
        path = Path(folder) / ENSEMBLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: not an ensemble directory (no {ENSEMBLE_FILE})")
        try:
            data = json.loads(path.read_text())
            manifest = cls.model_validate(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid ensemble manifest (not valid JSON: {exc})") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise ValueError(f"{path}: invalid ensemble manifest ({problems})") from None
        if not manifest.folds:
            raise ValueError(f"{path}: the ensemble has no folds")
        return manifest

    def write(self, folder: str | Path) -> Path:
        from ..files import atomic_write_text

        return atomic_write_text(
            Path(folder) / ENSEMBLE_FILE, self.model_dump_json(indent=2) + "\n"
        )
