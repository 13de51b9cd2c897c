"""Ensemble training: k-fold splits, fold tasks on a cluster vs sequential, resume, artifact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from scaleseg.training import (
    ENSEMBLE_FILE,
    finished_folds,
    kfold_splits,
    train_ensemble,
    training_items,
)

SPEC = {
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "in_channels": 1,
    "n_classes": 2,
    "n_extra": 0,
    "encoder_weights": None,
}


def _spec(d):
    from scaleseg.models import ModelSpec

    return ModelSpec.from_dict(d)


def _cfg(**kw):
    from scaleseg.config import TrainConfig

    base = TrainConfig(
        encoder="tu-resnet10t",
        encoder_weights=None,
        tile_shape=(64, 64),
        frozen_epochs=1,
        epochs=1,
        n_folds=2,
        tiles_per_epoch=8,
        batch_size=4,
        augmentations=("flip", "rotate90"),
    )
    return base.model_copy(update=kw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("train") / "demo"
    write_demo_archive(out, n_images=4, n_ood=0, shape=(96, 96), seed=3)
    return out


def _items(archive):
    items, needs_vote, _ = training_items(str(archive / "images"), label="truth")
    assert not needs_vote
    return items


def test_kfold_splits():
    splits = kfold_splits(7, 3, seed=1)
    valid = sorted(i for _, v in splits for i in v)
    assert valid == list(range(7))
    for tr, va in splits:
        assert not set(tr) & set(va) and len(tr) + len(va) == 7
    assert kfold_splits(7, 3, seed=1) == splits
    with pytest.raises(ValueError, match="cannot make 3 folds"):
        kfold_splits(2, 3)


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_parallel_equals_sequential_resume_and_artifact(archive, tmp_path, client):
    items = _items(archive)
    cfg = _cfg()
    seq = train_ensemble(items, tmp_path / "seq", model=_spec(SPEC), config=cfg).model_dump(
        mode="json"
    )
    par = train_ensemble(
        items, tmp_path / "par", model=_spec(SPEC), config=cfg, client=client
    ).model_dump(mode="json")
    assert [f["sha256"] for f in seq["folds"]] == [f["sha256"] for f in par["folds"]]
    # encoder-feature statistics per fold (one task each on the cluster): equal up to the
    # summation order of multi-threaded BLAS in this process vs single-threaded workers
    for fs, fp in zip(seq["folds"], par["folds"]):
        assert fs["features"]["dim"] == 512 and fs["features"]["n_samples"] >= 2
        a = _weights(tmp_path / "seq" / fs["features"]["path"])
        b = _weights(tmp_path / "par" / fp["features"]["path"])
        np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(a["precision"], b["precision"], rtol=1e-4, atol=1e-6)
    for f in seq["folds"]:
        a, b = _weights(tmp_path / "seq" / f["path"]), _weights(tmp_path / "par" / f["path"])
        assert all(np.array_equal(a[k], b[k]) for k in a)
    # the artifact
    ens = tmp_path / "seq"
    manifest = json.loads((ens / ENSEMBLE_FILE).read_text())
    assert manifest["encoder"] == "tu-resnet10t" and len(manifest["folds"]) == 2
    assert set(manifest["folds"][0]["valid_images"]) | set(
        manifest["folds"][1]["valid_images"]
    ) == {i.name for i in items}
    for f in ("MODEL_CARD.md", "fold_0/history.csv", "fold_0/history.png", "fold_1/fold.json"):
        assert (ens / f).exists()
    card = (ens / "MODEL_CARD.md").read_text()
    assert "valid Dice" in card and "tu-resnet10t" in card
    # resume: delete one fold, re-run, only that fold is retrained (to identical weights)
    shutil.rmtree(ens / "fold_1")
    (ens / "fold_0" / "marker").write_text("kept")
    again = train_ensemble(items, ens, model=_spec(SPEC), config=cfg).model_dump(mode="json")
    assert (ens / "fold_0" / "marker").exists()
    assert finished_folds(ens) == [0, 1]
    assert [f["sha256"] for f in again["folds"]] == [f["sha256"] for f in seq["folds"]]


def test_loaded_artifact_reproduces_validation(archive, tmp_path):
    """Weights loaded back give the validation Dice recorded for the fold."""
    import torch

    from scaleseg.models import ModelSpec, build_model, load_weights
    from scaleseg.training import Normalization, validation_tiles
    from scaleseg.training._fit import _evaluate

    items = _items(archive)
    cfg = _cfg(epochs=2)
    manifest = train_ensemble(items, tmp_path / "ens", model=_spec(SPEC), config=cfg).model_dump(
        mode="json"
    )
    assert manifest["decision_threshold"] is None  # argmax unless asked to calibrate
    norm = Normalization.from_dict(manifest["normalization"])
    by_name = {i.name: i for i in items}
    for f in manifest["folds"]:
        model = build_model(ModelSpec.from_dict(SPEC))
        load_weights(model, tmp_path / "ens" / f["path"], expected_sha256=f["sha256"])
        tiles = validation_tiles(
            [by_name[n] for n in f["valid_images"]], tile_shape=(64, 64), normalization=norm
        )
        from scaleseg.models import build_loss

        _, dice = _evaluate(
            model, tiles, build_loss("ce_dice", n_classes=2), 2, torch.device("cpu"), 4
        )
        assert dice == pytest.approx(f["valid_dice"], abs=1e-6)


def test_train_cli_and_export(archive, tmp_path, capsys):
    from scaleseg.cli import main

    out = tmp_path / "ens"
    argv = [
        "train",
        str(archive / "images"),
        str(out),
        "--label",
        "truth",
        "--encoder",
        "tu-resnet10t",
        "--encoder-weights",
        "none",
        "--folds",
        "2",
        "--epochs",
        "1",
        "--frozen-epochs",
        "0",
        "--tile",
        "64",
        "64",
        "--tiles-per-epoch",
        "4",
        "--batch-size",
        "4",
        "--export",
        "torchscript",
        "onnx",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "validation Dice per fold" in text
    assert (out / "export" / "fold_0.torchscript.pt").exists()
    # the ONNX export runs under ONNX Runtime and equals the fold's eager logits
    import onnxruntime

    from scaleseg.models import ModelSpec, build_model, load_weights

    manifest_ = json.loads((out / "ensemble.json").read_text())
    model = build_model(ModelSpec.from_dict({**manifest_["model"], "encoder_weights": None}))
    load_weights(model, out / manifest_["folds"][0]["path"])
    x = torch.randn(2, 1, 64, 96)
    sess = onnxruntime.InferenceSession(str(out / "export" / "fold_0.onnx"),
                                        providers=["CPUExecutionProvider"])  # fmt: skip
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), atol=1e-4, rtol=0)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and len(run["models"]) == 2
    assert run["summary"]["encoder_weights"]["source"] == "random"
    manifest = (out / "ensemble.json").read_bytes()
    assert json.loads(manifest)["encoder_weights"] == {
        "requested": None,
        "source": "random",
        "path": None,
        "sha256": None,
    }
    assert main(argv) == 0  # a finished ensemble, same request: nothing is trained again
    assert "every fold was already trained" in capsys.readouterr().out
    assert (out / "ensemble.json").read_bytes() == manifest
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] and run["summary"]["folds_trained"] == []
    assert run["previous"][0]["status"] == "ok"  # the training run is kept in the record
    # an older ensemble without feature statistics: re-running adds them, keeps every fold
    m = json.loads(manifest)
    for f in m["folds"]:
        (out / f.pop("features")["path"]).unlink()
    (out / "ensemble.json").write_text(json.dumps(m))
    assert main(argv) == 0
    again = json.loads((out / "ensemble.json").read_text())
    assert [f["sha256"] for f in again["folds"]] == [f["sha256"] for f in m["folds"]]
    assert all((out / f["features"]["path"]).is_file() for f in again["folds"])
    assert "every fold was already trained" in capsys.readouterr().out
    other = [a if a != "1" or argv[i - 1] != "--epochs" else "2" for i, a in enumerate(argv)]
    assert main(other) == 1  # another configuration: not overwritten without --overwrite
    err = capsys.readouterr().err
    assert "config.epochs: 1 -> 2" in err and "--overwrite" in err


def test_majority_vote_when_no_gt(archive, tmp_path):
    items, needs_vote, _ = training_items(str(archive / "images"))
    assert not items and len(needs_vote) == 4  # several experts, no est_gt in the archive


def test_flows_training_runs(archive, tmp_path):
    items, _, _ = training_items(
        str(archive / "images"), label="truth", instance_label="truth_instances"
    )
    spec = dict(SPEC, n_extra=2)
    manifest = train_ensemble(
        items, tmp_path / "ens", model=_spec(spec), config=_cfg(epochs=1, frozen_epochs=0)
    ).model_dump(mode="json")
    assert manifest["n_extra"] == 2
    import pandas as pd

    hist = pd.read_csv(tmp_path / "ens" / "fold_0" / "history.csv")
    assert np.isfinite(hist["train_loss"]).all()


def test_train_cli_flows_flags(archive, tmp_path):
    from scaleseg.cli import main

    out = tmp_path / "ens"
    rc = main(
        [
            "train",
            str(archive / "images"),
            str(out),
            "--label",
            "truth",
            "--instance-label",
            "truth_instances",
            "--flows",
            "--encoder",
            "tu-resnet10t",
            "--encoder-weights",
            "none",
            "--folds",
            "2",
            "--models",
            "1",
            "--epochs",
            "1",
            "--frozen-epochs",
            "0",
            "--tile",
            "64",
            "64",
            "--tiles-per-epoch",
            "4",
        ]
    )
    assert rc == 0
    manifest = json.loads((out / ENSEMBLE_FILE).read_text())
    assert manifest["n_extra"] == 2 and len(manifest["folds"]) == 1
