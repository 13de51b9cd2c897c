"""Export every fold of an ensemble for use elsewhere (TorchScript, ONNX)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_ensemble"]


def export_ensemble(ensemble_dir: str | Path, *, formats=("torchscript",)) -> list[Path]:
    """Write ``export/fold_<k>.<ext>`` for each fold; returns the paths.

    The exported models take normalised ``(B, C, H, W)`` float32 tiles (see ``normalization``
    in ``ensemble.json``) and return logits.
    """
    from ..models import (
        EnsembleManifest,
        ModelSpec,
        build_model,
        export_onnx,
        export_torchscript,
        load_weights,
    )

    ensemble_dir = Path(ensemble_dir)
    manifest = EnsembleManifest.read(ensemble_dir)
    spec = ModelSpec.from_dict({**manifest.model, "encoder_weights": None})
    ty, tx = manifest.tile_shape
    shape = (1, spec.in_channels, ty, tx)
    out_dir = ensemble_dir / "export"
    out_dir.mkdir(exist_ok=True)
    written = []
    for fold in manifest.folds:
        model = build_model(spec)
        load_weights(model, ensemble_dir / fold.path, expected_sha256=fold.sha256)
        model.eval()
        for fmt in formats:
            if fmt == "torchscript":
                path = out_dir / f"fold_{fold.fold}.torchscript.pt"
                export_torchscript(model, path, example_shape=shape)
            elif fmt == "onnx":
                path = out_dir / f"fold_{fold.fold}.onnx"
                export_onnx(model, path, example_shape=shape)
            else:
                raise ValueError(f"unknown export format {fmt!r} (torchscript, onnx)")
            written.append(path)
    return written
