"""Training recipe: weight averaging, per-epoch history and log lines, threads of lone folds,
and the label-free calibration of the feature-distance threshold."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from scaleseg.training import train_ensemble, training_items
from scaleseg.training._ensemble import fold_threads
from scaleseg.training._fit import WeightAverage, format_epoch

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
        epochs=2,
        n_folds=2,
        tiles_per_epoch=8,
        batch_size=4,
        augmentations=("flip",),
    )
    return base.model_copy(update=kw)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("recipe") / "demo"
    write_demo_archive(out, n_images=4, n_ood=0, shape=(96, 96), seed=5)
    found, _, _ = training_items(str(out / "images"), label="truth")
    return found


# -- weight averaging ------------------------------------------------------------------------
def test_weight_average_follows_the_warmup_formula():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(model, 0.9)
    expected = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for t in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.from_numpy(rng.normal(size=tuple(p.shape))))
            model[1].running_mean.copy_(torch.from_numpy(rng.normal(size=2)))
            model[1].num_batches_tracked += 1
        avg.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v.double()
            else:
                expected[k] = v.clone()
    for k, v in avg.model.state_dict().items():
        np.testing.assert_allclose(v.double().numpy(), expected[k].numpy(), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in avg.model.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


# -- threads of folds that run alone ------------------------------------------------------------
@pytest.mark.parametrize(
    "n_folds, hosts, expected",
    [
        (2, [2], [1, 1]),  # one wave, every worker busy
        (3, [2], [1, 1, 2]),  # the last fold runs alone: it gets the idle worker's core
        (1, [2], [2]),
        (5, [2], [1, 1, 1, 1, 2]),
        (3, [4], [1, 1, 1]),  # 3 folds on 4 workers: 4 // 3 = 1
        (1, [4], [4]),
        (1, [2, 2], [2]),  # threads do not cross machines
        (4, [2], [1, 1, 1, 1]),
        (0, [2], []),
    ],
)
def test_fold_threads(n_folds, hosts, expected):
    assert fold_threads(n_folds, hosts, torch_threads=1) == expected


def test_fold_threads_leaves_gpus_and_unset_threads_alone():
    assert fold_threads(3, [2], torch_threads=1, gpus=True) == [1, 1, 1]
    assert fold_threads(3, [2], torch_threads=None) == [None, None, None]
    assert fold_threads(3, [2], torch_threads=2) == [2, 2, 4]


# -- history and log lines after every epoch ---------------------------------------------------
def test_history_is_written_after_every_epoch_and_logged(items, tmp_path, monkeypatch, caplog):
    from scaleseg.training import _fit

    seen = []
    real = _fit._report_epoch

    def spy(event):
        partial = list(tmp_path.glob("ens/.fold_0.partial-*/history.csv"))
        if event["fold"] == 0:
            seen.append(len(partial[0].read_text().strip().splitlines()) - 1 if partial else 0)
            assert (partial[0].parent / "history.png").is_file()
        real(event)

    monkeypatch.setattr(_fit, "_report_epoch", spy)
    with caplog.at_level(logging.INFO, logger="scaleseg.train"):
        manifest = train_ensemble(
            items, tmp_path / "ens", model=_spec(SPEC), config=_cfg()
        ).model_dump(mode="json")
    assert seen == [1, 2, 3]  # the partial folder's history grows one row per epoch
    lines = [r.getMessage() for r in caplog.records if r.name == "scaleseg.train"]
    assert sum(m.startswith("fold 0 epoch") for m in lines) == 3
    assert any(m.startswith("fold 1 epoch 3/3 (unfrozen): train loss") for m in lines)
    assert not list(tmp_path.glob("ens/.fold_*"))  # renamed when complete
    assert manifest["train"]["ema"] == 0.99


def test_epoch_lines_reach_the_driver_from_workers(items, tmp_path, client, caplog):
    with caplog.at_level(logging.INFO, logger="scaleseg.train"):
        train_ensemble(
            items, tmp_path / "ens", model=_spec(SPEC), config=_cfg(epochs=1), client=client
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "scaleseg.train"]
    assert sorted(m.split(":")[0] for m in lines) == [
        "fold 0 epoch 1/2 (frozen)",
        "fold 0 epoch 2/2 (unfrozen)",
        "fold 1 epoch 1/2 (frozen)",
        "fold 1 epoch 2/2 (unfrozen)",
    ]
    fold = json.loads((tmp_path / "ens" / "fold_0" / "fold.json").read_text())
    assert fold["torch_threads"] == 1 and fold["ema"] == 0.99


@pytest.mark.parametrize(
    "results, best_epoch",
    [
        ([(0.30, 0.0), (0.20, 0.0), (0.25, 0.0)], 1),  # Dice still 0: the lowest loss wins
        ([(0.30, 0.5), (0.20, 0.7), (0.15, 0.7)], 2),  # tie on Dice, lower loss
        ([(0.30, 0.5), (0.20, 0.7), (0.10, 0.6)], 1),  # a higher Dice wins over a lower loss
    ],
)
def test_best_checkpoint_breaks_dice_ties_by_loss(
    items, tmp_path, monkeypatch, results, best_epoch
):
    """The weights kept are those of the best epoch, with a Dice tie broken by the validation
    loss: a fold whose Dice is still 0 must not keep its first, untrained epoch."""
    import torch

    from scaleseg.models import read_weights
    from scaleseg.training import FoldSpec, _fit, fit_fold, normalization_from_items

    queue = list(results)
    states = []
    real_evaluate = _fit._evaluate

    def scripted(model, *args, **kwargs):  # record the scored weights, return scripted results
        real_evaluate(model, *args, **kwargs)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return queue.pop(0)

    monkeypatch.setattr(_fit, "_evaluate", scripted)
    info = fit_fold(
        FoldSpec(0, items[:3], items[3:], seed=0), tmp_path / "ens", model=_spec(SPEC),
        config=_cfg(), normalization=normalization_from_items(items),
        show_progress=False,
    )  # fmt: skip
    assert info["best_epoch"] == best_epoch
    assert info["valid_dice"] == results[best_epoch][1]
    kept = read_weights(tmp_path / "ens" / "fold_0" / "weights.safetensors")
    assert all(torch.equal(kept[k], states[best_epoch][k]) for k in kept)
    assert not all(torch.equal(kept[k], states[best_epoch - 1][k]) for k in kept)


def test_format_epoch():
    line = format_epoch(
        {"fold": 2, "epoch": 0, "epochs_total": 5, "phase": "frozen", "train_loss": 0.5,
         "valid_dice": 0.25, "seconds": 3.21}
    )  # fmt: skip
    assert line == "fold 2 epoch 1/5 (frozen): train loss 0.5000, valid Dice 0.2500, 3.2 s"


# -- the distance threshold, calibrated without labels -----------------------------------------
def test_threshold_is_the_largest_held_out_distance(items, tmp_path):
    """Each fold's calibration distances equal a direct evaluation -- the fold's encoder on its
    validation images' windows under the four flips, scipy's Mahalanobis distance to its own
    statistics, mean over windows -- and the ensemble's threshold is their maximum."""
    import torch
    from safetensors.numpy import load_file
    from scipy.spatial.distance import mahalanobis

    from scaleseg.io import open_image, to_cyx
    from scaleseg.models import ModelSpec, Normalization, build_model, load_weights

    ens = tmp_path / "ens"
    manifest = train_ensemble(items, ens, model=_spec(SPEC), config=_cfg(epochs=1)).model_dump(
        mode="json"
    )
    norm = Normalization.from_dict(manifest["normalization"])
    by_name = {i.name: i for i in items}
    pooled = []
    for f in manifest["folds"]:
        cal = f["features"]["calibration"]
        assert cal["images"] == f["valid_images"]
        arrays = load_file(str(ens / f["features"]["path"]))
        np.testing.assert_allclose(arrays["calibration"], cal["distances"], rtol=1e-6)
        model = build_model(ModelSpec.from_dict(SPEC))
        load_weights(model, ens / f["path"])
        model.eval()
        precision, mean = arrays["precision"], arrays["mean"]
        for name, got in zip(cal["images"], cal["distances"]):
            img = norm.apply(to_cyx(open_image(by_name[name].image_url)).data.compute())
            dists = []
            for y in (0, 64):  # 96 x 96 image, tile 64: the non-overlapping grid (0, 32 reflected)
                for x in (0, 64):
                    win = np.pad(img, ((0, 0), (0, 32), (0, 32)), mode="reflect")[
                        :, y : y + 64, x : x + 64
                    ]
                    t = torch.from_numpy(np.ascontiguousarray(win))[None]
                    per_flip = []
                    for dims in ((), (-1,), (-2,), (-2, -1)):
                        with torch.no_grad():
                            feats = model.encoder(t.flip(dims) if dims else t)[-1]
                        v = feats.mean(dim=(-2, -1))[0].double().numpy()
                        per_flip.append(mahalanobis(v, mean, precision))
                    dists.append(np.mean(per_flip))
            assert got == pytest.approx(np.mean(dists), rel=1e-4)
            pooled.append(got)
    thr = manifest["ood_threshold"]
    assert thr["value"] == pytest.approx(max(pooled)) and thr["n_images"] == len(items)


@pytest.mark.parametrize("missing", ["calibration", "cells"])
def test_older_features_file_is_completed_without_refitting(items, tmp_path, missing):
    """An ensemble whose statistics files predate the calibration (or the per-cell part of
    U_novel): re-running keeps every fold and the fitted statistics, and adds what a fresh run
    writes -- the same file again."""
    import torch
    from safetensors.numpy import load_file

    from scaleseg.models import file_sha256, save_weights
    from scaleseg.stages._train import _complete

    ens = tmp_path / "ens"
    cfg = _cfg(epochs=1)
    first = train_ensemble(items, ens, model=_spec(SPEC), config=cfg).model_dump(mode="json")
    assert _complete(ens)
    old = json.loads((ens / "ensemble.json").read_text())
    for f in first["folds"]:
        assert f["features"]["novelty"]["threshold"] > 0
        path = ens / f["features"]["path"]
        arrays = load_file(str(path))
        for key in [k for k in arrays if k == missing or (missing == "cells" and "cell_" in k)]:
            arrays.pop(key)
        save_weights({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    for f in old["folds"]:  # the manifest as the older scaleseg wrote it
        f["features"]["sha256"] = file_sha256(ens / f["features"]["path"])
        f["features"].pop("novelty" if missing == "cells" else "calibration")
    (ens / "ensemble.json").write_text(json.dumps(old))
    assert not _complete(ens)  # so a re-run of `scaleseg train` completes it
    again = train_ensemble(items, ens, model=_spec(SPEC), config=cfg).model_dump(mode="json")
    assert [f["sha256"] for f in again["folds"]] == [f["sha256"] for f in first["folds"]]
    for a, b in zip(first["folds"], again["folds"]):
        assert b["features"]["calibration"] == a["features"]["calibration"]
        assert b["features"]["novelty"] == a["features"]["novelty"]
        assert b["features"]["sha256"] == a["features"]["sha256"]  # the same file again
    assert again["ood_threshold"] == first["ood_threshold"]
    assert _complete(ens)


# -- the decision threshold, calibrated on the folds' validation images ------------------------
def test_threshold_counts_equal_sklearn_f1_at_every_threshold():
    from sklearn.metrics import f1_score

    from scaleseg.training._threshold import THRESHOLDS, choose_threshold, threshold_counts

    rng = np.random.default_rng(7)
    prob = rng.random((3, 30, 30))
    target = (prob + rng.normal(0, 0.3, prob.shape) > 0.6).astype(np.int64)
    target[0, :4] = -100  # padding is ignored
    inter, total = threshold_counts(prob, target)
    known = target >= 0
    expected = [f1_score(target[known], prob[known] >= t) for t in THRESHOLDS]
    np.testing.assert_allclose(2 * inter / total, expected, rtol=1e-12)
    value, dice = choose_threshold(inter, total)
    assert value == THRESHOLDS[int(np.argmax(expected))]
    np.testing.assert_allclose(dice, expected, rtol=1e-12)
    # ties go to the threshold nearest 0.5
    assert choose_threshold([1, 1, 1], [2, 2, 2], [0.3, 0.45, 0.6])[0] == 0.45
    with pytest.raises(ValueError, match="same"):
        choose_threshold([1], [2, 2], [0.5, 0.6])


def test_calibrated_threshold_is_recorded_and_used_by_predict(items, tmp_path):
    """Each fold counts, with its kept weights, the Dice of its validation tiles at every
    candidate threshold (checked against sklearn on a re-evaluation of the loaded weights); the
    ensemble keeps the threshold of the best pooled Dice, and predict decides labels with it
    (or with --threshold), recording it in the images table."""
    import torch
    from sklearn.metrics import f1_score

    from scaleseg.config import PredictConfig
    from scaleseg.inference import predict_collection, read_ensemble
    from scaleseg.io import open_collection, open_image, open_labels
    from scaleseg.models import ModelSpec, Normalization, build_model, load_weights
    from scaleseg.training import validation_tiles
    from scaleseg.training._threshold import THRESHOLDS

    ens = tmp_path / "ens"
    manifest = train_ensemble(items, ens, model=_spec(SPEC), config=_cfg(threshold="calibrate"))
    norm = Normalization.from_dict(manifest.normalization)
    by_name = {i.name: i for i in items}
    inter = np.zeros(len(THRESHOLDS))
    total = np.zeros(len(THRESHOLDS))
    for f in manifest.folds:
        record = json.loads((ens / f"fold_{f.fold}" / "fold.json").read_text())
        counts = record["threshold_counts"]
        model = build_model(ModelSpec.from_dict(SPEC))
        load_weights(model, ens / f.path, expected_sha256=f.sha256)
        model.eval()
        tiles = validation_tiles(
            [by_name[n] for n in f.valid_images], tile_shape=(64, 64), normalization=norm
        )
        with torch.inference_mode():
            x = torch.stack([t[0] for t in tiles])
            fg = torch.softmax(model(x), 1)[:, 1].numpy().ravel()
        y = torch.stack([t[1] for t in tiles]).numpy().ravel()
        known = y >= 0
        got = 2 * np.asarray(counts["inter"]) / np.asarray(counts["total"])
        expected = [f1_score(y[known] == 1, fg[known] >= t, zero_division=1.0) for t in THRESHOLDS]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        inter += counts["inter"]
        total += counts["total"]
        # the reach: the 99th percentile of the foreground probability on its own pixels
        reach = record["class_reach"]
        expected_q = np.quantile(fg[known & (y == 1)], 0.99)
        assert reach["quantile"] == 0.99 and f.class_reach == reach["values"]
        assert expected_q <= reach["values"][0] <= expected_q + 0.01 + 1e-9
    pooled = 2 * inter / total
    d = manifest.decision_threshold
    best = np.flatnonzero(np.isclose(pooled, pooled.max(), rtol=0, atol=1e-9))
    nearest = min((THRESHOLDS[i] for i in best), key=lambda t: abs(t - 0.5))  # ties -> 0.5
    assert d is not None and d.value == nearest
    np.testing.assert_allclose(d.dice, pooled, atol=1e-6)
    assert d.dice_argmax == pytest.approx(pooled[THRESHOLDS.index(0.5)], abs=1e-6)
    assert "Decision threshold" in (ens / "MODEL_CARD.md").read_text()

    info = read_ensemble(ens)
    refs = [r for r in open_collection(items[0].image_url.rsplit("/", 1)[0])][:1]
    cfg = PredictConfig(tile_shape=(64, 64), tta="none", probabilities_dtype="float32")
    for name, config, used in (
        ("calibrated", cfg, d.value),
        ("override", cfg.model_copy(update={"threshold": 0.3}), 0.3),
    ):
        res = predict_collection(refs, info, tmp_path / name, config=config)
        url = tmp_path / name / "images" / f"{refs[0].name}.zarr"
        prob = open_image(url / "probabilities").values
        labels = open_labels(url, "semantic").values
        np.testing.assert_array_equal(labels, (prob[1] >= used).astype(labels.dtype))
        assert res["images"]["decision_threshold"].iloc[0] == pytest.approx(used)
    # a threshold on a 3-class ensemble is refused
    from conftest import make_random_ensemble

    three = read_ensemble(make_random_ensemble(tmp_path / "three", n_classes=3))
    with pytest.raises(ValueError, match="binary ensemble"):
        predict_collection(
            refs, three, tmp_path / "x", config=cfg.model_copy(update={"threshold": 0.4})
        )


def test_class_reach_equals_the_numpy_quantile_and_flags_a_capped_class():
    """The histogram quantile is the upper edge of numpy's quantile's bin; a class whose
    probability never leaves ~0.5 on its own pixels is saturated, a confident one is not."""
    from scaleseg.training._reach import BINS, class_reach, reach_histogram, saturated

    rng = np.random.default_rng(3)
    target = rng.integers(0, 3, size=(2, 40, 40))
    raw = rng.random((2, 3, 40, 40))
    raw[:, 2] = 0.5 * raw[:, 0] + 0.5 * raw[:, 1]  # class 2 stays moderate
    prob = raw / raw.sum(axis=1, keepdims=True)
    hist = reach_histogram(prob[:1], target[:1]) + reach_histogram(prob[1:], target[1:])
    got = class_reach(hist, 0.9)
    for k in (1, 2):
        q = np.quantile(prob[:, k][target == k], 0.9, method="inverted_cdf")
        assert np.floor(q * BINS) / BINS < got[k - 1] <= np.floor(q * BINS) / BINS + 1 / BINS + 1e-9
    capped = np.stack([1 - np.full((1, 8, 8), 0.505), np.full((1, 8, 8), 0.505)], axis=1)
    ones = np.ones((1, 8, 8), dtype=int)
    assert class_reach(reach_histogram(capped, ones)) == [0.51]
    assert saturated([0.51]) == [1] and saturated([0.97]) == [] and saturated([float("nan")]) == []
    assert np.isnan(class_reach(reach_histogram(capped, 0 * ones))[0])  # no class-1 pixels
    with pytest.raises(ValueError, match="target"):
        reach_histogram(capped, ones[0])


def test_a_member_that_can_only_switch_features_off_is_reported_as_capped(items, tmp_path):
    """The failure seen on PV-in-HC: every last-decoder feature (>= 0 after ReLU) votes against
    foreground, so foreground wins only where all are zero, by the head's bias difference. The
    validation pass measures a reach of about 0.5; the model card and the train summary warn."""
    import torch

    from scaleseg.models import EnsembleManifest, Normalization, build_model
    from scaleseg.stages._train import TrainResult
    from scaleseg.training import saturation_warnings, validation_tiles, write_model_card
    from scaleseg.training._fit import _validation_pass

    manifest = train_ensemble(items, tmp_path / "ens", model=_spec(SPEC), config=_cfg())
    assert len(EnsembleManifest.read(tmp_path / "ens").folds[0].class_reach) == 1
    model = build_model(_spec(SPEC))
    head = model.segmentation_head[0]
    with torch.no_grad():
        head.weight[1] = head.weight[0] - 1.0
        head.bias[1] = head.bias[0] + 0.02
    norm = Normalization.from_dict(manifest.normalization)
    tiles = validation_tiles(items[:2], tile_shape=(64, 64), normalization=norm)
    counts, reach = _validation_pass(model, tiles, torch.device("cpu"), 4, 2)
    assert counts is not None and reach["values"][0] <= 0.51

    folds = [manifest.folds[0].model_copy(update={"class_reach": reach["values"]})]
    capped = manifest.model_copy(update={"folds": folds + manifest.folds[1:]})
    warnings = saturation_warnings(capped)
    assert any(w.startswith("fold 0 never predicts class_1 with confidence") for w in warnings)
    card = write_model_card(capped, tmp_path / "card.md").read_text()
    assert "**Warning**: fold 0 never predicts class_1" in card
    summary = TrainResult(tmp_path / "ens", capped).summary()
    assert any(line.startswith("warning: fold 0 never predicts class_1") for line in summary)
