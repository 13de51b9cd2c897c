"""Helpers shared by the benchmark scripts: machine info and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

#: The CPU recipe's member (README): Unet + ResNet10t, decoder 128 64 32 16 16, random weights.
RECIPE_MEMBER = {"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2,
                 "decoder_channels": [128, 64, 32, 16, 16], "encoder_weights": None}  # fmt: skip


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(name: str, figures: dict, json_path: str | None) -> None:
    """Print figures one per line and optionally write them (with machine info) as JSON."""
    for k, v in figures.items():
        print(f"{name}.{k} = {v}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(
            json.dumps({"benchmark": name, "machine": machine(), "figures": figures}, indent=2)
            + "\n"
        )


def add_feature_stats(ensemble: Path, n_windows: int = 24, seed: int = 0) -> Path:
    """Give a random-weight benchmark ensemble the encoder-feature statistics a trained one has
    (``fold_<k>/features.safetensors`` and the ``features`` entries of ``ensemble.json``, fitted
    to ``n_windows`` noise windows), so predict runs its feature-distance hook as in real use."""
    import numpy as np
    import torch

    from scaleseg.models import (
        EnsembleManifest,
        FeatureEntry,
        ModelSpec,
        build_model,
        capture_encoder_features,
        file_sha256,
        load_weights,
        pool_deepest,
        save_weights,
    )
    from scaleseg.uncertainty import fit_feature_stats

    ensemble = Path(ensemble)
    manifest = EnsembleManifest.read(ensemble)
    spec = ModelSpec.from_dict({**manifest.model, "encoder_weights": None})
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(n_windows, manifest.in_channels, *manifest.tile_shape))
                         .astype(np.float32))  # fmt: skip
    folds = []
    for f in manifest.folds:
        model = build_model(spec)
        load_weights(model, ensemble / f.path, expected_sha256=f.sha256)
        model.eval()
        with torch.inference_mode(), capture_encoder_features(model) as feats:
            for i in range(0, n_windows, 4):
                model(x[i : i + 4])
        stats = fit_feature_stats(torch.cat([pool_deepest(f) for f in feats]).numpy())
        rel = f"{Path(f.path).parent}/features.safetensors"
        arrays = {k: torch.from_numpy(v) for k, v in stats.to_arrays().items()}
        save_weights(arrays, ensemble / rel, metadata={"what": "benchmark feature statistics"})
        entry = {"path": rel, "sha256": file_sha256(ensemble / rel), "n_samples": stats.n_samples,
                 "dim": stats.dim, "shrinkage": round(stats.shrinkage, 6)}  # fmt: skip
        folds.append(f.model_copy(update={"features": FeatureEntry(**entry)}))
    manifest.model_copy(update={"folds": folds}).write(ensemble)
    return ensemble
