"""Loading an ensemble directory: manifest, checksum checks, models cached once per process.

On a Dask worker the cache lives for the worker's lifetime, keyed by the weight checksums and the
device, so models are loaded once per worker and never shipped inside the task graph.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EnsembleInfo",
    "read_ensemble",
    "verify_ensemble",
    "get_models",
    "get_feature_stats",
    "clear_model_cache",
]

_CACHE: dict[tuple, list] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class EnsembleInfo:
    """What predict needs to know about an ensemble (from ``ensemble.json``)."""

    path: str
    model: dict[str, Any]
    in_channels: int
    n_classes: int
    n_extra: int
    tile_shape: tuple[int, int]
    scale: float
    normalization: dict[str, Any]
    folds: tuple[dict[str, Any], ...]
    classes: tuple[str, ...]
    ood_threshold: float | None = None

    @property
    def checksums(self) -> tuple[str, ...]:
        return tuple(f["sha256"] for f in self.folds)

    @property
    def has_feature_stats(self) -> bool:
        """Whether every fold carries encoder-feature statistics (the ``ood_distance`` score)."""
        return all(f.get("features") for f in self.folds)


def read_ensemble(path: str | Path) -> EnsembleInfo:
    """Parse ``<path>/ensemble.json``; errors name the file and the problem."""
    path = Path(path)
    manifest_file = path / "ensemble.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path}: not an ensemble directory (no ensemble.json)")
    try:
        m = json.loads(manifest_file.read_text())
        info = EnsembleInfo(
            path=str(path.resolve()),
            model=dict(m["model"]),
            in_channels=int(m["in_channels"]),
            n_classes=int(m["n_classes"]),
            n_extra=int(m.get("n_extra", 0)),
            tile_shape=tuple(int(t) for t in m["tile_shape"]),
            scale=float(m.get("scale", 1.0)),
            normalization=dict(m["normalization"]),
            folds=tuple(dict(f) for f in m["folds"]),
            classes=tuple(m.get("classes") or [f"class_{k}" for k in range(int(m["n_classes"]))]),
            ood_threshold=_threshold(m.get("ood_threshold")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{manifest_file}: invalid ensemble manifest ({type(exc).__name__}: {exc})"
        ) from None
    if not info.folds:
        raise ValueError(f"{manifest_file}: the ensemble has no folds")
    return info


def _threshold(entry: Any) -> float | None:
    """The calibrated distance threshold of a manifest (None for older ensembles)."""
    if not entry:
        return None
    return float(entry["value"])


def verify_ensemble(info: EnsembleInfo) -> None:
    """Check every weight file against its SHA-256 in ``ensemble.json`` (cheap, on the driver).

    Raises
    ------
    scaleseg.models.WeightsError
        Missing, unreadable or tampered weight files, naming the file.
    """
    from ..models import WeightsError, file_sha256

    files = [(f["path"], f["sha256"]) for f in info.folds]
    files += [
        (f["features"]["path"], f["features"]["sha256"]) for f in info.folds if f.get("features")
    ]
    for rel, sha in files:
        wpath = Path(info.path) / rel
        if not wpath.is_file():
            raise WeightsError(f"{wpath}: weight file missing")
        actual = file_sha256(wpath)
        if actual != sha:
            raise WeightsError(
                f"{wpath}: checksum mismatch (ensemble.json {sha[:12]}..., file "
                f"{actual[:12]}...): the weights were changed or corrupted"
            )
        if wpath.suffix == ".safetensors":
            _check_safetensors(wpath)


def _check_safetensors(path: Path) -> None:
    """Open the header (no tensor data is read): a truncated or malformed file fails here, on
    the driver, instead of in every unit on the workers."""
    from safetensors import safe_open

    from ..models import WeightsError

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def get_models(info: EnsembleInfo, device) -> list:
    """The ensemble's models on ``device`` in eval mode, loaded once per process."""
    key = (info.checksums, str(device))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        from ..models import ModelSpec, build_model, load_weights

        spec = ModelSpec.from_dict({**info.model, "encoder_weights": None})
        models = []
        for f in info.folds:
            model = build_model(spec)
            load_weights(model, Path(info.path) / f["path"], expected_sha256=f["sha256"])
            models.append(model.to(device).eval())
        _CACHE.clear()  # one ensemble per worker at a time keeps memory bounded
        _CACHE[key] = models
        return models


def get_feature_stats(info: EnsembleInfo) -> list | None:
    """Per-fold encoder-feature statistics (:class:`~scaleseg.uncertainty.FeatureStats`),
    loaded once per process and checked against ``ensemble.json``; None when the ensemble was
    trained without them."""
    if not info.has_feature_stats:
        return None
    key = ("features", *(f["features"]["sha256"] for f in info.folds))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        from ..models import read_weights
        from ..uncertainty import FeatureStats

        stats = []
        for f in info.folds:
            path = Path(info.path) / f["features"]["path"]
            arrays = read_weights(path, expected_sha256=f["features"]["sha256"])
            stats.append(FeatureStats.from_arrays({k: v.numpy() for k, v in arrays.items()}))
        _CACHE[key] = stats
        return stats


def clear_model_cache() -> None:
    with _LOCK:
        _CACHE.clear()
