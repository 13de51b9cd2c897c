"""Inference kernels: tiling plan, Gaussian weights, TTA inverses, ensemble running sums,
uncertainty maps and U -- against analytic models and direct numpy evaluations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleseg.inference import (
    apply,
    gaussian_weights,
    invert,
    invert_vectors,
    plan_tiles,
    predict_region,
    reflect_indices,
    tta_transforms,
    windows_for_region,
)
from scaleseg.uncertainty import (
    argmax_labels,
    combine_partials,
    image_score,
    score_partials,
    uncertainty_maps,
)


def test_plan_covers_image_with_global_grid():
    plan = plan_tiles((100, 37), tile_shape=(32, 32), overlap=0.5)
    assert plan.step == (16, 16) and plan.overlap == (16, 16)
    assert plan.starts_y == (0, 16, 32, 48, 64, 80)  # 80 + 32 >= 100
    assert plan.starts_x == (0, 16)
    small = plan_tiles((10, 12), tile_shape=(32, 32))
    assert small.windows() == [(0, 0)]
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles((10, 10), tile_shape=(8, 8), overlap=1.0)


def test_gaussian_weights():
    w = gaussian_weights((64, 64))
    assert w.dtype == np.float32 and w.max() == 1.0 and w.min() > 0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    # sigma = tile / 8: one sigma from the centre the weight is exp(-1/2) along an axis
    c = (64 - 1) / 2
    np.testing.assert_allclose(
        w[32, 32 + 8] / w[32, 32], np.exp(-0.5 * ((40 - c) ** 2 - (32 - c) ** 2) / 64), rtol=1e-5
    )
    assert gaussian_weights((64, 64)) is w  # cached
    with pytest.raises(ValueError):
        w[0, 0] = 1


def test_reflect_indices_match_numpy_pad():
    a = np.arange(7)
    padded = np.pad(a, (5, 9), mode="reflect")
    np.testing.assert_array_equal(a[reflect_indices(-5, 16, 7)], padded)
    assert (reflect_indices(-3, 3, 1) == 0).all()


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_tta_inverse_is_exact(tta, rng):
    x = torch.from_numpy(rng.random((2, 3, 8, 8)).astype(np.float32))
    for t in tta_transforms(tta):
        assert torch.equal(invert(apply(x, t), t), x)
        xn = x.numpy()
        np.testing.assert_array_equal(invert(apply(xn, t), t), xn)


def test_vector_inverse_against_gradient(rng):
    """The gradient of f, computed in the augmented frame and inverted, is the gradient of f."""
    f = rng.random((12, 12))
    gy, gx = np.gradient(f)
    for t in tta_transforms("dihedral"):
        ft = apply(f, t)
        g = np.stack(np.gradient(ft))  # (dy, dx) in the augmented frame
        back = invert_vectors(g[None], t)[0]
        np.testing.assert_allclose(back[0], gy, atol=1e-12)
        np.testing.assert_allclose(back[1], gx, atol=1e-12)


class Pointwise(torch.nn.Module):
    """An analytic model: logits = (0, a*x + b) per pixel (a 1x1 linear convolution)."""

    def __init__(self, a=3.0, b=-1.5):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        z = self.a * x[:, :1] + self.b
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _whole(models, image, tile, overlap, tta, n_classes=2):
    plan = plan_tiles(image.shape[1:], tile_shape=tile, overlap=overlap)
    region = (slice(0, image.shape[1]), slice(0, image.shape[2]))
    windows, read = windows_for_region(plan, region)
    iy = reflect_indices(read[0].start, read[0].stop, image.shape[1])
    ix = reflect_indices(read[1].start, read[1].stop, image.shape[2])
    padded = image[:, iy][:, :, ix]
    return plan, predict_region(
        models,
        padded,
        read_origin=(read[0].start, read[1].start),
        windows=windows,
        region=region,
        tile_shape=tile,
        n_classes=n_classes,
        tta=tta,
    )


def test_pointwise_model_reproduced_exactly(rng):
    image = rng.random((1, 45, 38)).astype(np.float32)
    _, res = _whole([Pointwise()], image, (16, 16), 0.5, "dihedral")
    z = 3.0 * image[0].astype(np.float64) - 1.5
    p1 = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(res.mean[1], p1, atol=1e-6)
    np.testing.assert_allclose(res.mean[0] + res.mean[1], 1, atol=1e-6)
    np.testing.assert_allclose(res.mean_sq[1], p1**2, atol=1e-6)  # no spread for one member


def _blocked(models, image, tile, overlap, tta, block):
    Y, X = image.shape[1:]
    plan = plan_tiles((Y, X), tile_shape=tile, overlap=overlap)
    mean = np.zeros((2, Y, X), np.float32)
    mean_sq = np.zeros_like(mean)
    for y0 in range(0, Y, block[0]):
        for x0 in range(0, X, block[1]):
            region = (slice(y0, min(Y, y0 + block[0])), slice(x0, min(X, x0 + block[1])))
            windows, read = windows_for_region(plan, region)
            iy = reflect_indices(read[0].start, read[0].stop, Y)
            ix = reflect_indices(read[1].start, read[1].stop, X)
            padded = image[:, iy][:, :, ix]
            r = predict_region(
                models,
                padded,
                read_origin=(read[0].start, read[1].start),
                windows=windows,
                region=region,
                tile_shape=tile,
                n_classes=2,
                tta=tta,
            )
            mean[:, region[0], region[1]] = r.mean
            mean_sq[:, region[0], region[1]] = r.mean_sq
    return mean, mean_sq


def _conv_models(seed, n=2):
    torch.manual_seed(seed)
    return [
        torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 5, padding=2),
            torch.nn.Tanh(),
            torch.nn.Conv2d(4, 2, 3, padding=1),
        ).eval()
        for _ in range(n)
    ]


@settings(max_examples=12, deadline=None)
@given(
    y=st.integers(9, 70),
    x=st.integers(9, 70),
    by=st.integers(5, 40),
    bx=st.integers(5, 40),
    tile=st.sampled_from([8, 12, 16]),
    overlap=st.sampled_from([0.0, 0.25, 0.5]),
)
def test_blocked_equals_whole_image(y, x, by, bx, tile, overlap):
    image = np.random.default_rng(y * 100 + x).random((1, y, x)).astype(np.float32)
    models = _conv_models(0)
    _, whole = _whole(models, image, (tile, tile), overlap, "flips")
    mean, mean_sq = _blocked(models, image, (tile, tile), overlap, "flips", (by, bx))
    np.testing.assert_allclose(mean, whole.mean, atol=1e-5)
    np.testing.assert_allclose(mean_sq, whole.mean_sq, atol=1e-5)
    np.testing.assert_array_equal(argmax_labels(mean), argmax_labels(whole.mean))
    uw = uncertainty_maps(whole.mean, whole.mean_sq)
    ub = uncertainty_maps(mean, mean_sq)
    np.testing.assert_allclose(ub.u, uw.u, atol=1e-5)


def test_uncertainty_equals_paper_equations(rng):
    """u, its parts and U against explicit per-member, per-augmentation probabilities."""
    T, M, K, Y, X = 4, 3, 3, 6, 5
    logits = rng.normal(size=(T * M, K, Y, X))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # (TM, K, Y, X)
    p_bar = p.mean(axis=0)  # eq. 1
    maps = uncertainty_maps(p_bar, (p**2).mean(axis=0), zeta=4)
    u_direct = 4 / K * (p_bar * (1 - p_bar)).sum(axis=0)
    epi = 4 / K * ((p - p_bar) ** 2).mean(axis=0).sum(axis=0)
    ale = 4 / K * (p * (1 - p)).mean(axis=0).sum(axis=0)
    np.testing.assert_allclose(maps.u, u_direct, atol=1e-6)
    np.testing.assert_allclose(maps.epistemic, epi, atol=1e-6)
    np.testing.assert_allclose(maps.aleatoric, ale, atol=1e-6)
    np.testing.assert_allclose(maps.epistemic + maps.aleatoric, maps.u, atol=1e-6)
    labels = argmax_labels(p_bar)
    fg = labels != 0
    score = image_score(score_partials(labels, maps, n_classes=K))
    assert score["U"] == pytest.approx(u_direct[fg].mean(), abs=1e-6)
    # any split into blocks gives the same U
    parts = [
        score_partials(labels[:, :2], _slice(maps, np.s_[:, :2]), n_classes=K),
        score_partials(labels[:, 2:], _slice(maps, np.s_[:, 2:]), n_classes=K),
    ]
    assert image_score(combine_partials(parts))["U"] == pytest.approx(score["U"], abs=1e-12)


def _slice(maps, sl):
    from scaleseg.uncertainty import UncertaintyMaps

    return UncertaintyMaps(maps.u[sl], maps.epistemic[sl], maps.aleatoric[sl])


def test_u_bounds_and_nan_without_foreground():
    mean = np.array([[[0.5]], [[0.5]]])
    maps = uncertainty_maps(mean, mean**2)
    assert maps.u[0, 0] == pytest.approx(1.0)  # maximal binary uncertainty
    labels = np.zeros((1, 1), np.uint8)
    s = image_score(score_partials(labels, maps, n_classes=2))
    assert np.isnan(s["U"]) and s["U_reason"] == "no foreground predicted"


def test_ensemble_spread_is_epistemic(rng):
    """Two members that disagree give epistemic > 0; identical members give 0."""
    image = rng.random((1, 16, 16)).astype(np.float32)
    _, same = _whole([Pointwise(), Pointwise()], image, (16, 16), 0.5, "none")
    _, diff = _whole([Pointwise(3.0), Pointwise(-3.0)], image, (16, 16), 0.5, "none")
    assert uncertainty_maps(same.mean, same.mean_sq).epistemic.max() < 1e-6
    assert uncertainty_maps(diff.mean, diff.mean_sq).epistemic.mean() > 0.05
