"""Loading an ensemble directory: manifest, checksum checks, models cached once per process.

On a Dask worker the cache lives for the worker's lifetime, keyed by the weight checksums and the
device, so models are loaded once per worker and never shipped inside the task graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models._manifest import EnsembleManifest, FoldEntry

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
    """An ensemble folder and its typed manifest (what predict needs to know about it)."""

    path: str
    manifest: EnsembleManifest

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest.model)

    @property
    def in_channels(self) -> int:
        return self.manifest.in_channels

    @property
    def n_classes(self) -> int:
        return self.manifest.n_classes

    @property
    def n_extra(self) -> int:
        return self.manifest.n_extra

    @property
    def tile_shape(self) -> tuple[int, int]:
        return tuple(self.manifest.tile_shape)

    @property
    def scale(self) -> float:
        return self.manifest.scale

    @property
    def normalization(self) -> dict[str, Any]:
        return dict(self.manifest.normalization)

    @property
    def folds(self) -> tuple[FoldEntry, ...]:
        return tuple(self.manifest.folds)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.classes)

    @property
    def ood_threshold(self) -> float | None:
        """The calibrated threshold of the distance rule (None for older ensembles)."""
        t = self.manifest.ood_threshold
        return None if t is None else float(t.value)

    @property
    def decision_threshold(self) -> float | None:
        """The calibrated foreground-probability threshold (None: argmax)."""
        t = self.manifest.decision_threshold
        return None if t is None else float(t.value)

    @property
    def checksums(self) -> tuple[str, ...]:
        return self.manifest.checksums

    @property
    def has_feature_stats(self) -> bool:
        """Whether every fold carries encoder-feature statistics (the ``ood_distance`` score)."""
        return all(f.features is not None for f in self.folds)


def read_ensemble(path: str | Path) -> EnsembleInfo:
    """Read ``<path>/ensemble.json`` (:class:`~scaleseg.models.EnsembleManifest`); errors name
    the file and the problem."""
    path = Path(path)
    return EnsembleInfo(path=str(path.resolve()), manifest=EnsembleManifest.read(path))


def verify_ensemble(info: EnsembleInfo) -> None:
    """Check every weight file against its SHA-256 in ``ensemble.json`` (cheap, on the driver).

    Raises
    ------
    scaleseg.models.WeightsError
        Missing, unreadable or tampered weight files, naming the file.
    """
    from ..models import WeightsError, file_sha256

    files = [(f.path, f.sha256, "the weights") for f in info.folds]
    files += [(f.features.path, f.features.sha256, "the feature statistics")
              for f in info.folds if f.features]  # fmt: skip
    for rel, sha, what in files:
        wpath = Path(info.path) / rel
        if not wpath.is_file():
            raise WeightsError(f"{wpath}: weight file missing")
        actual = file_sha256(wpath)
        if actual != sha:
            hint = (
                "; if a `scaleseg train` completing them was interrupted, run it again with "
                "the same arguments"
                if what == "the feature statistics"
                else ""
            )
            raise WeightsError(
                f"{wpath}: checksum mismatch (ensemble.json {sha[:12]}..., file "
                f"{actual[:12]}...): {what} were changed or corrupted{hint}"
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


def get_models(
    info: EnsembleInfo, device, engine: str = "torch", tile_shape=None, precision: str = "auto"
) -> list:
    """The ensemble's members on ``device`` in eval mode, loaded once per process, run by
    ``engine`` (resolved with :func:`~scaleseg.models.resolve_engine`: ``torch``, or on CPU
    workers ``onnxruntime`` / ``openvino`` graphs of ``tile_shape`` windows -- default the
    ensemble's -- exported once per user: :mod:`scaleseg.models._engines`). ``precision``
    is built into graph members; torch members get it as autocast in
    :func:`~scaleseg.inference.predict_region`."""
    from ..models import (
        ModelSpec,
        build_model,
        load_graph_model,
        load_weights,
        resolve_engine,
        resolve_precision,
    )

    engine = resolve_engine(engine, device, precision)
    precision = resolve_precision(precision, device)
    tile = tuple(int(t) for t in (tile_shape or info.tile_shape))
    # graph members load one graph per window shape met (images of other sizes get other
    # windows): the first is loaded here, the others on use, so the tile is not in the key
    key = (info.checksums, str(device), engine, precision if engine != "torch" else None)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        spec = ModelSpec.from_dict({**info.model, "encoder_weights": None})

        def member(f):
            model = build_model(spec)
            load_weights(model, Path(info.path) / f.path, expected_sha256=f.sha256)
            model = model.to(device).eval()
            if getattr(device, "type", str(device)) == "cuda":  # faster convolutions there
                import torch

                model = model.to(memory_format=torch.channels_last)
            return model

        models = []
        for f in info.folds:
            if engine == "torch":
                models.append(member(f))
            else:  # the torch member is built only when its graph must be exported
                models.append(load_graph_model(engine, lambda f=f: member(f),
                                               weights_sha256=f.sha256, tile_shape=tile,
                                               in_channels=info.in_channels,
                                               precision=precision))  # fmt: skip
        _CACHE.clear()  # one ensemble per worker at a time keeps memory bounded
        _CACHE[key] = models
        return models


def get_feature_stats(info: EnsembleInfo) -> list | None:
    """Per-fold encoder-feature statistics (:class:`~scaleseg.uncertainty.FeatureStats`),
    loaded once per process and checked against ``ensemble.json``; None when the ensemble was
    trained without them."""
    if not info.has_feature_stats:
        return None
    key = ("features", *(f.features.sha256 for f in info.folds))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        from ..models import read_weights
        from ..uncertainty import FeatureStats

        stats = []
        for f in info.folds:
            path = Path(info.path) / f.features.path
            arrays = read_weights(path, expected_sha256=f.features.sha256)
            stats.append(FeatureStats.from_arrays({k: v.numpy() for k, v in arrays.items()}))
        _CACHE[key] = stats
        return stats


def clear_model_cache() -> None:
    with _LOCK:
        _CACHE.clear()
