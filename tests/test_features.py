"""Encoder-feature distance (the ood_distance score) and cell novelty (U_novel): Ledoit–Wolf
and Mahalanobis against scikit-learn / scipy, the forward hook against the encoder, the distance
and novelty maps through the sliding-window kernel against a direct computation, the per-cell
statistics of a fold against scipy, and blocking invariance of the image scores."""

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


def test_cell_distances_equal_scipy_per_cell_and_novelty_round_trips(rng):
    from scipy.spatial import distance

    from scaleseg.uncertainty import CellNovelty, cell_distances

    stats = fit_feature_stats(rng.normal(size=(50, 6)))
    fmap = rng.normal(size=(2, 6, 3, 4))
    got = cell_distances(fmap, stats)
    assert got.shape == (2, 3, 4)
    for b, y, x in np.ndindex(2, 3, 4):
        ref = distance.mahalanobis(fmap[b, :, y, x], stats.mean, stats.precision)
        assert got[b, y, x] == pytest.approx(ref, rel=1e-10)
    novelty = CellNovelty(stats, float(np.median(got)))
    np.testing.assert_array_equal(novelty.novel(fmap), got > np.median(got))
    full = FeatureStats(stats.mean, stats.precision, 50, stats.shrinkage, novelty)
    back = FeatureStats.from_arrays(full.to_arrays())
    assert back.novelty.threshold == novelty.threshold
    np.testing.assert_array_equal(back.novelty.stats.precision, stats.precision)
    assert FeatureStats.from_arrays(stats.to_arrays()).novelty is None  # an older file
    with pytest.raises(ValueError, match=r"\(B, D, h, w\)"):
        cell_distances(fmap[0], stats)


def test_u_novel_raises_u_to_the_novelty_on_foreground_only():
    from scaleseg.uncertainty import UncertaintyMaps, image_score, score_partials

    u = np.array([[0.1, 0.2], [0.3, 0.9]], dtype=np.float32)
    maps = UncertaintyMaps(u, u / 2, u / 2)
    labels = np.array([[1, 1], [0, 1]], dtype=np.uint8)
    novelty = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    s = image_score(score_partials(labels, maps, n_classes=2, novelty=novelty))
    # foreground (0,0) (0,1) (1,1): max(u, ν) = 0.1, 0.5, 0.9; the background's ν is ignored
    assert s["U_novel"] == pytest.approx((0.1 + 0.5 + 0.9) / 3)
    assert s["U"] == pytest.approx((0.1 + 0.2 + 0.9) / 3)
    zero = image_score(score_partials(labels, maps, n_classes=2, novelty=novelty * 0))
    assert zero["U_novel"] == pytest.approx(zero["U"])  # nothing novel: U
    assert np.isnan(image_score(score_partials(labels, maps, n_classes=2))["U_novel"])
    none = image_score(score_partials(labels * 0, maps, n_classes=2, novelty=novelty))
    assert np.isnan(none["U_novel"]) and none["U_reason"] == "no foreground predicted"


def _smp(seed=0):
    from scaleseg.models import ModelSpec, build_model

    spec = {"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2}
    return build_model(ModelSpec.from_dict({**spec, "encoder_weights": None}), seed=seed).eval()


def test_hook_captures_the_encoder_output(rng):
    from scaleseg.models import capture_encoder_features, encoder_features, pool_deepest

    model = _smp()
    x = torch.from_numpy(rng.normal(size=(3, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        direct = encoder_features(model, x)
        deepest = model.encoder(x)[-1]
        with capture_encoder_features(model) as store:
            model(x)
        assert len(model.encoder._forward_hooks) == 0  # removed on exit
    assert direct.shape == (3, 512) and len(store) == 1
    assert store[0].shape == (3, 512, 2, 2)  # the deepest map, stride 32
    torch.testing.assert_close(store[0], deepest)
    torch.testing.assert_close(pool_deepest(store[0]), direct)
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


@pytest.mark.parametrize("shape", [(96, 64), (100, 70)])  # 3 x 2 cells; 4 x 3, partial last
def test_novelty_map_is_the_weighted_share_of_novel_cells_over_members_and_flips(rng, shape):
    from scaleseg.inference import apply, invert, predict_region, tta_transforms
    from scaleseg.uncertainty import CellNovelty, cell_distances

    models = [_smp(0), _smp(1)]
    hh, ww = shape
    image = rng.normal(size=(1, hh, ww)).astype(np.float32)  # not square
    train = torch.from_numpy(rng.normal(size=(12, 1, 64, 64)).astype(np.float32))
    x = torch.from_numpy(image[None])
    stats, direct = [], []
    with torch.inference_mode():
        for m in models:
            maps = m.encoder(train)[-1].numpy()
            cells = fit_feature_stats(np.moveaxis(maps, 1, -1).reshape(-1, maps.shape[1]))
            pooled = fit_feature_stats(maps.mean(axis=(2, 3)))
            d = [cell_distances(m.encoder(apply(x, t))[-1].numpy(), cells)[0]
                 for t in tta_transforms("flips")]  # fmt: skip
            # a threshold that makes some cells novel and others not
            novelty = CellNovelty(cells, float(np.median(np.concatenate([v.ravel() for v in d]))))
            stats.append(FeatureStats(pooled.mean, pooled.precision, 12, 0.0, novelty))
            for t, dist in zip(tta_transforms("flips"), d):
                # cell i covers pixels [32 i, 32 i + 32) of the (flipped) window
                up = np.kron((dist > novelty.threshold).astype(np.float32), np.ones((32, 32)))
                direct.append(invert(up[:hh, :ww], t))
    direct = np.mean(direct, axis=0)  # one window: every weight is the same per pixel
    assert 0 < direct.mean() < 1
    full = (slice(0, hh), slice(0, ww))
    res = predict_region(
        models, image, read_origin=(0, 0), windows=[(0, 0)], region=full,
        tile_shape=shape, n_classes=2, tta="flips", feature_stats=stats,
    )  # fmt: skip
    np.testing.assert_allclose(res.novelty, direct, atol=1e-6)
    plain = [FeatureStats(s.mean, s.precision, 12, 0.0) for s in stats]
    res = predict_region(
        models, image, read_origin=(0, 0), windows=[(0, 0)], region=full,
        tile_shape=shape, n_classes=2, tta="flips", feature_stats=plain,
    )  # fmt: skip
    assert res.novelty is None and res.distance is not None  # statistics of an older ensemble


def test_ood_distance_blocked_equals_whole_and_is_checked(tmp_path, rng):
    from test_qa import fitted_ensemble  # heads fitted to blobs: confident members (u < 1)

    from scaleseg.blocks import read_region
    from scaleseg.inference import (
        apply,
        get_feature_stats,
        predict_collection,
        read_ensemble,
        tta_transforms,
        verify_ensemble,
    )
    from scaleseg.io import open_collection, open_image, to_cyx, write_image
    from scaleseg.models import ModelSpec, Normalization, WeightsError, build_model, load_weights
    from scaleseg.training import TrainItem
    from scaleseg.training._features import (
        FeatureUnit,
        cell_window,
        ensure_fold_features,
        fold_cell_novelty,
    )
    from scaleseg.uncertainty import cell_distances

    ens = fitted_ensemble(tmp_path / "ens")
    train = tmp_path / "train" / "t.zarr"
    valid = tmp_path / "train" / "v.zarr"
    write_image(train, (rng.random((1, 150, 130)) * 255).astype(np.uint8), chunks=(64, 64))
    write_image(valid, (rng.random((1, 70, 90)) * 255).astype(np.uint8), chunks=(64, 64))
    m = json.loads((ens / "ensemble.json").read_text())
    norm = Normalization.from_dict(m["normalization"])
    for f in m["folds"]:
        f["features"] = ensure_fold_features(
            FeatureUnit(
                str(ens),
                f["fold"],
                "weights.safetensors",
                (TrainItem(str(train), str(train), "none"),),
                (TrainItem(str(valid), str(valid), "none"),),
            ),  # fmt: skip
            model=ModelSpec.from_dict(m["model"]),
            normalization=norm,
            tile_shape=(64, 64),
        )
    assert m["folds"][0]["features"]["n_samples"] == 9  # 3 x 3 windows of 64 over 150 x 130
    # cells: predict's default window over each image (160 x 160 here: 5 x 5 cells)
    assert cell_window((150, 130), (64, 64)) == (160, 160)
    assert m["folds"][0]["features"]["novelty"]["n_cells"] == 25
    (ens / "ensemble.json").write_text(json.dumps(m))
    info = read_ensemble(ens)
    assert info.has_feature_stats
    # the threshold is the largest cell distance of the validation image under the 4 flips
    for f, stats in zip(info.folds, get_feature_stats(info)):
        net = build_model(ModelSpec.from_dict({**m["model"], "encoder_weights": None})).eval()
        load_weights(net, ens / f.path)
        image = to_cyx(open_image(str(valid)))
        x = norm.for_image(image).apply(read_region(image, (slice(0, 96), slice(0, 96))))
        x = torch.from_numpy(x[None].astype(np.float32))
        with torch.inference_mode():
            largest = max(
                cell_distances(net.encoder(apply(x, t))[-1].numpy(), stats.novelty.stats).max()
                for t in tta_transforms("flips")
            )
        assert stats.novelty.threshold == pytest.approx(largest, rel=1e-5)
        assert f.features.novelty.threshold == pytest.approx(largest, rel=1e-5)
    # the training cells are capped (memory), evenly spread over each image's cells
    capped = fold_cell_novelty(
        net, [TrainItem(str(train), str(train), "none")], [TrainItem(str(valid), str(valid), "none")],
        normalization=norm, tile_shape=(64, 64), max_cells=10,
    )  # fmt: skip
    assert capped.stats.n_samples == 10
    unlike = (rng.random((1, 131, 97)) * 255).astype(np.uint8)
    unlike[:, 30:100, 20:80] = 255  # a saturated block: cells the training never showed
    write_image(tmp_path / "col" / "a.zarr", unlike, chunks=(32, 32))
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
    assert w["U"] < w["U_novel"] <= 1  # some predicted foreground is novel
    assert b["U_novel"] == pytest.approx(w["U_novel"], rel=1e-6)
    # the statistics files are checked like the weights
    path = ens / m["folds"][1]["features"]["path"]
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="checksum mismatch.*feature statistics were changed"):
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
