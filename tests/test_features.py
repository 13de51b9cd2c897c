"""Encoder-feature distance (the ood_distance score): Ledoit–Wolf and Mahalanobis against
scikit-learn / scipy, the forward hook against the encoder, the distance map through the
sliding-window kernel, and blocking invariance of the image score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaleseg.config import PredictConfig
from scaleseg.uncertainty import FeatureStats, fit_feature_stats, ledoit_wolf, mahalanobis


@pytest.mark.parametrize("n, d", [(40, 60), (500, 8), (3, 5)])
def test_ledoit_wolf_equals_sklearn(n, d):
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    cov, a = ledoit_wolf(x)
    ref = covariance.LedoitWolf().fit(x)
    assert a == pytest.approx(ref.shrinkage_, abs=1e-12)
    np.testing.assert_allclose(cov, ref.covariance_, rtol=1e-10, atol=1e-12)


def test_mahalanobis_equals_scipy(rng):
    from scipy.spatial import distance

    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    stats = fit_feature_stats(x)
    queries = rng.normal(size=(7, 6)) * 3
    ref = [distance.mahalanobis(q, stats.mean, stats.precision) for q in queries]
    np.testing.assert_allclose(mahalanobis(queries, stats), ref, rtol=1e-10)
    with pytest.raises(ValueError, match="do not match"):
        mahalanobis(queries[:, :5], stats)


def test_distance_squared_is_chi_square_for_gaussian_data(rng):
    d = 5
    a = rng.normal(size=(d, d))
    x = rng.multivariate_normal(np.arange(d), a @ a.T + np.eye(d), size=20_000)
    stats = fit_feature_stats(x)
    assert stats.shrinkage < 0.01  # many samples: hardly any shrinkage
    d2 = mahalanobis(x, stats) ** 2
    assert d2.mean() == pytest.approx(d, rel=0.02)  # E[chi2_d] = d
    far = mahalanobis(x[:100] + 10 * np.sqrt(np.diag(a @ a.T + np.eye(d))), stats)
    assert np.median(far) > 3 * np.median(np.sqrt(d2))


def test_stats_round_trip_and_errors(rng):
    stats = fit_feature_stats(rng.normal(size=(10, 4)))
    back = FeatureStats.from_arrays(stats.to_arrays())
    np.testing.assert_array_equal(back.precision, stats.precision)
    assert (back.n_samples, back.shrinkage) == (10, stats.shrinkage)
    with pytest.raises(ValueError, match="NaN"):
        fit_feature_stats(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="at least 2 samples"):
        ledoit_wolf(np.ones((1, 3)))


def _smp(seed=0):
    from scaleseg.models import ModelSpec, build_model

    spec = {"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2}
    return build_model(ModelSpec.from_dict({**spec, "encoder_weights": None}), seed=seed).eval()


def test_hook_captures_the_encoder_output(rng):
    from scaleseg.models import capture_encoder_features, encoder_features

    model = _smp()
    x = torch.from_numpy(rng.normal(size=(3, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        direct = encoder_features(model, x)
        with capture_encoder_features(model) as store:
            model(x)
        assert len(model.encoder._forward_hooks) == 0  # removed on exit
    assert direct.shape == (3, 512) and len(store) == 1
    torch.testing.assert_close(store[0], direct)
    with pytest.raises(TypeError, match="no encoder"):
        encoder_features(torch.nn.Conv2d(1, 2, 1), x)


def test_distance_map_of_one_window_is_the_mean_over_members_and_flips(rng):
    from scaleseg.inference import apply, predict_region, tta_transforms
    from scaleseg.models import encoder_features

    models = [_smp(0), _smp(1)]
    image = rng.normal(size=(1, 64, 64)).astype(np.float32)
    train = torch.from_numpy(rng.normal(size=(12, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        stats = [fit_feature_stats(encoder_features(m, train).numpy()) for m in models]
        x = torch.from_numpy(image[None])
        direct = np.mean(
            [
                mahalanobis(encoder_features(m, apply(x, t)).numpy(), s)[0]
                for m, s in zip(models, stats)
                for t in tta_transforms("flips")
            ]
        )
    full = (slice(0, 64), slice(0, 64))
    res = predict_region(
        models,
        image,
        read_origin=(0, 0),
        windows=[(0, 0)],
        region=full,
        tile_shape=(64, 64),
        n_classes=2,
        tta="flips",
        feature_stats=stats,
    )
    np.testing.assert_allclose(res.distance, direct, rtol=1e-5)  # one window: a constant map
    assert predict_region(
        models, image, read_origin=(0, 0), windows=[(0, 0)], region=full,
        tile_shape=(64, 64), n_classes=2, tta="none",
    ).distance is None  # fmt: skip


def test_ood_distance_blocked_equals_whole_and_is_checked(tmp_path, rng):
    from conftest import make_random_ensemble

    from scaleseg.inference import (
        predict_collection,
        read_ensemble,
        verify_ensemble,
    )
    from scaleseg.io import open_collection, write_image
    from scaleseg.models import ModelSpec, Normalization, WeightsError
    from scaleseg.training import TrainItem
    from scaleseg.training._features import FeatureUnit, ensure_fold_features

    ens = make_random_ensemble(tmp_path / "ens", n_models=2)
    train = tmp_path / "train" / "t.zarr"
    write_image(train, (rng.random((1, 150, 130)) * 255).astype(np.uint8), chunks=(64, 64))
    m = json.loads((ens / "ensemble.json").read_text())
    for f in m["folds"]:
        f["features"] = ensure_fold_features(
            FeatureUnit(
                str(ens),
                f["fold"],
                "weights.safetensors",
                (TrainItem(str(train), str(train), "none"),),
            ),  # fmt: skip
            model=ModelSpec.from_dict(m["model"]),
            normalization=Normalization.from_dict(m["normalization"]),
            tile_shape=(64, 64),
        )
    assert m["folds"][0]["features"]["n_samples"] == 9  # 3 x 3 windows of 64 over 150 x 130
    (ens / "ensemble.json").write_text(json.dumps(m))
    info = read_ensemble(ens)
    assert info.has_feature_stats
    write_image(
        tmp_path / "col" / "a.zarr",
        (rng.random((1, 131, 97)) * 255).astype(np.uint8),
        chunks=(32, 32),
    )
    refs = open_collection(tmp_path / "col")
    opts = PredictConfig(chunks=(32, 32), tile_shape=(64, 64), write_probabilities=False)
    blocked = predict_collection(
        refs, info, tmp_path / "b", config=opts.model_copy(update={"block_shape": (64, 64)})
    )
    whole = predict_collection(
        refs, info, tmp_path / "w", config=opts.model_copy(update={"block_shape": (512, 512)})
    )
    b, w = blocked["images"].iloc[0], whole["images"].iloc[0]
    assert (b["n_blocks"], w["n_blocks"]) == (6, 1)
    assert np.isfinite(w["ood_distance"]) and w["ood_distance"] > 0
    assert b["ood_distance"] == pytest.approx(w["ood_distance"], rel=1e-6)
    # the statistics files are checked like the weights
    path = ens / m["folds"][1]["features"]["path"]
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        verify_ensemble(read_ensemble(ens))


def test_ensemble_without_statistics_gives_nan(tmp_path, rng, tiny_ensemble):
    from scaleseg.inference import predict_collection, read_ensemble
    from scaleseg.io import open_collection, write_image

    info = read_ensemble(tiny_ensemble)
    assert not info.has_feature_stats
    write_image(tmp_path / "c" / "a.zarr", (rng.random((1, 70, 70)) * 255).astype(np.uint8))
    opts = PredictConfig(
        chunks=(64, 64), tta="none", block_shape=(512, 512), write_probabilities=False
    )
    table = predict_collection(open_collection(tmp_path / "c"), info, tmp_path / "o", config=opts)
    assert np.isnan(table["images"]["ood_distance"].iloc[0])
