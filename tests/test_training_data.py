"""Training data: class-balanced sampling, tiles, normalisation, augmentation, the lazy dataset."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage

from scaleseg.io import write_image, write_labels
from scaleseg.models._normalize import (
    PERCENTILES,
    Normalization,
    channel_stats,
    image_percentiles,
    to_unit_range,
)
from scaleseg.training._augment import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATIONS,
    augmentation_input_shape,
    build_augmentation,
)
from scaleseg.training._data import (
    TileDataset,
    TrainItem,
    _read_window,
    flow_targets,
    normalization_from_items,
    validation_tiles,
)
from scaleseg.training._sampling import (
    class_weights,
    reflect_index,
    sample_tile_centres,
    tile_slices,
)

IDENTITY1 = Normalization(mean=(0.0,), std=(1.0,))
IDENTITY2 = Normalization(mean=(0.0, 0.0), std=(1.0, 1.0))


# -- fixtures ---------------------------------------------------------------------------------
def _blobs(shape, rng, n=6, radius=5):
    """Label map with ``n`` discs of class 1 and a bar of class 2."""
    lab = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in zip(
        rng.integers(radius, shape[0] - radius, n), rng.integers(radius, shape[1] - radius, n)
    ):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    lab[shape[0] // 2 : shape[0] // 2 + 3, 2:12] = 2
    return lab


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Pixels in ``coll/a.zarr`` (2 channels, uint16, 45 x 38), GT in a separate ``gt`` image."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("train")
    img = (rng.random((2, 45, 38)) * 60000).astype(np.uint16)
    lab = _blobs((45, 38), rng)
    url = write_image(root / "coll" / "a.zarr", img, chunks=(16, 16), n_levels=2)
    gt = write_image(
        root / "gt" / "images" / "a.zarr",
        np.zeros((1, 45, 38), np.uint8),
        chunks=(16, 16),
        n_levels=2,
    )
    write_labels(gt, "est_gt", lab, chunks=(16, 16))
    inst, _ = ndimage.label(lab > 0)
    write_labels(gt, "instances", inst.astype(np.uint32), chunks=(16, 16))
    return {"img": img, "lab": lab, "item": TrainItem(url, gt, "est_gt"), "gt": gt, "url": url}


def _dataset(small, **kw):
    opts = dict(
        tile_shape=(16, 16),
        n_classes=3,
        tiles_per_epoch=6,
        normalization=IDENTITY2,
        augment=None,
        seed=0,
    )
    opts.update(kw)
    return TileDataset([small["item"]], **opts)


# -- sampling kernels -------------------------------------------------------------------------
def test_class_weights():
    w = class_weights(np.array([98, 2, 0]))
    np.testing.assert_allclose(w, [1 / (2 * 98), 1 / (2 * 2), 0.0])
    np.testing.assert_allclose((w * [98, 2, 0]).sum(), 1.0)
    assert class_weights(np.zeros(3, int)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="non-negative"):
        class_weights(np.array([1, -1]))


def test_sample_centres_class_balanced():
    rng = np.random.default_rng(0)
    lab = np.zeros((100, 100), np.uint8)
    fg = rng.choice(lab.size, size=200, replace=False)  # 2 % foreground
    lab.flat[fg] = 1
    c = sample_tile_centres(lab, 4000, rng=rng, n_classes=2)
    assert c.shape == (4000, 2) and c.dtype == np.int64
    frac = lab[c[:, 0], c[:, 1]].mean()
    assert abs(frac - 0.5) < 0.03
    # an absent class gets nothing; the present ones share equally
    c3 = sample_tile_centres(lab, 2000, rng=rng, n_classes=3)
    counts = np.bincount(lab[c3[:, 0], c3[:, 1]], minlength=3)
    assert counts[2] == 0 and abs(counts[1] / 2000 - 0.5) < 0.04


def test_sample_centres_deterministic_and_stride():
    lab = _blobs((60, 50), np.random.default_rng(1))
    a = sample_tile_centres(lab, 50, rng=np.random.default_rng(3), n_classes=3)
    b = sample_tile_centres(lab, 50, rng=np.random.default_rng(3), n_classes=3)
    c = sample_tile_centres(lab, 50, rng=np.random.default_rng(4), n_classes=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s = sample_tile_centres(lab, 50, rng=np.random.default_rng(3), n_classes=3, stride=4)
    assert (s % 4 == 0).all() and (s < [60, 50]).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_tile_centres(lab, 5, rng=np.random.default_rng(0), n_classes=2)


@pytest.mark.parametrize(
    ("centre", "expected"),
    [
        ((10, 10), (slice(6, 14), slice(6, 14), ((0, 0), (0, 0)))),
        ((0, 0), (slice(0, 4), slice(0, 4), ((4, 0), (4, 0)))),
        ((19, 14), (slice(15, 20), slice(10, 15), ((0, 3), (0, 3)))),
        ((2, 13), (slice(0, 6), slice(9, 15), ((2, 0), (0, 2)))),
    ],
)
def test_tile_slices_borders(centre, expected):
    assert tile_slices(centre, (8, 8), (20, 15)) == expected


def test_tile_slices_tile_larger_than_image():
    ys, xs, pad = tile_slices((1, 2), (8, 9), (3, 4))
    assert (ys, xs) == (slice(0, 3), slice(0, 4)) and pad == ((3, 2), (2, 3))
    with pytest.raises(ValueError, match="outside"):
        tile_slices((3, 0), (8, 8), (3, 4))


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_reflect_index_matches_np_pad(size):
    a = np.arange(size)
    np.testing.assert_array_equal(
        reflect_index(np.arange(-9, size + 9), size), np.pad(a, 9, mode="reflect")
    )


@pytest.mark.parametrize("centre", [(0, 0), (19, 14), (2, 13), (10, 7)])
def test_reflection_padding_matches_np_pad(centre):
    full = np.random.default_rng(0).integers(0, 255, (2, 20, 15)).astype(np.uint8)
    win = _read_window(da.from_array(full, chunks=(1, 7, 6)), centre, (8, 8), (20, 15))
    padded = np.pad(full, ((0, 0), (8, 8), (8, 8)), mode="reflect")
    y0, x0 = centre[0] - 4 + 8, centre[1] - 4 + 8
    np.testing.assert_array_equal(win, padded[:, y0 : y0 + 8, x0 : x0 + 8])


# -- normalisation ----------------------------------------------------------------------------
def test_channel_stats_equals_numpy():
    rng = np.random.default_rng(0)
    imgs = [
        rng.random((2, 13, 17)).astype(np.float32),
        (rng.random((2, 9, 30)) * 3).astype(np.float32),
    ]
    norm = channel_stats(imgs)
    pooled = np.concatenate([i.reshape(2, -1) for i in imgs], axis=1).astype(np.float64)
    np.testing.assert_allclose(norm.mean, pooled.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(norm.std, pooled.std(axis=1), rtol=1e-6)
    u8 = rng.integers(0, 256, (1, 20, 20)).astype(np.uint8)
    n8 = channel_stats([u8])
    np.testing.assert_allclose(n8.mean, [u8.mean() / 255], rtol=1e-6)
    np.testing.assert_allclose(n8.std, [u8.std() / 255], rtol=1e-6)


def test_channel_stats_subsamples_big_images():
    rng = np.random.default_rng(0)
    img = rng.random((1, 200, 200)).astype(np.float32)
    norm = channel_stats([img], max_pixels_per_image=2000, rng=np.random.default_rng(1))
    np.testing.assert_allclose(norm.mean, [img.mean()], atol=0.02)
    np.testing.assert_allclose(norm.std, [img.std()], atol=0.02)


def test_normalization_roundtrip_apply_and_floor():
    norm = Normalization(mean=(0.5, 0.25), std=(0.1, 0.5))
    assert Normalization.from_dict(norm.to_dict()) == norm
    x = np.full((2, 3, 4), 0.5, np.float32)
    out = norm.apply(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out[1], 0.5)
    np.testing.assert_allclose(norm.apply(np.full((2, 1, 1), 255, np.uint8))[0], 5.0, rtol=1e-6)
    assert channel_stats([np.ones((1, 5, 5), np.float32)]).std == (1e-6,)
    with pytest.raises(ValueError, match="unknown"):
        Normalization.from_dict({"mean": [0], "std": [1], "median": [0]})
    with pytest.raises(ValueError, match="C = 2"):
        norm.apply(np.zeros((3, 2, 2), np.float32))


def test_channel_stats_data_intensity_fills_the_unit_range():
    """12-bit data in uint16: divided by the largest training value per channel, not 65535."""
    rng = np.random.default_rng(3)
    imgs = [rng.integers(100, 4096, (2, 16, 16)).astype(np.uint16) for _ in range(3)]
    imgs[1][1, 0, 0] = 4095
    norm = channel_stats(imgs, intensity="data")
    pooled = np.concatenate([i.reshape(2, -1) for i in imgs], axis=1).astype(np.float64)
    top = pooled.max(axis=1)
    np.testing.assert_allclose(norm.intensity_max, top)
    np.testing.assert_allclose(norm.mean, pooled.mean(axis=1) / top, rtol=1e-9)
    np.testing.assert_allclose(norm.std, pooled.std(axis=1) / top, rtol=1e-9)
    unit = norm.unit(imgs[1])
    assert unit.dtype == np.float32 and unit.max() == pytest.approx(1.0)
    np.testing.assert_allclose(unit, imgs[1] / top[:, None, None], rtol=1e-6)
    # apply = standardize(unit): zero mean / unit std over the pooled training pixels
    z = np.concatenate([norm.apply(i).reshape(2, -1) for i in imgs], axis=1)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=1), 1, rtol=1e-4)
    assert Normalization.from_dict(norm.to_dict()) == norm
    # the dtype scale squeezes the same pixels into [0.0015, 0.0625]
    old = channel_stats(imgs)
    assert old.intensity_max is None and old.unit(imgs[1]).max() == pytest.approx(4095 / 65535)
    with pytest.raises(ValueError, match="intensity"):
        channel_stats(imgs, intensity="max")
    with pytest.raises(ValueError, match="positive maximum"):
        channel_stats([np.zeros((1, 4, 4), np.uint8)], intensity="data")
    with pytest.raises(ValueError, match="one positive value per channel"):
        Normalization(mean=(0.0,), std=(1.0,), intensity_max=(0.0,))


def test_percentile_scaling_makes_dim_and_bright_acquisitions_alike():
    """Per-image scaling: an image and the same scene 5x brighter plus an offset map to the same
    unit-scale pixels; percentiles equal numpy's, for numpy and chunked dask input alike."""
    rng = np.random.default_rng(4)
    dim = rng.gamma(2.0, 6.0, size=(2, 90, 70)).astype(np.uint16)
    bright = (dim * 5 + 100).astype(np.uint16)
    low, high = image_percentiles(dim)
    np.testing.assert_array_equal(low, np.percentile(dim.reshape(2, -1), 1.0, axis=1))
    np.testing.assert_array_equal(high, np.percentile(dim.reshape(2, -1), 99.8, axis=1))
    low_d, high_d = image_percentiles(da.from_array(dim, chunks=(1, 32, 32)))
    np.testing.assert_array_equal(low, low_d)
    np.testing.assert_array_equal(high, high_d)
    norm = channel_stats([dim, bright], intensity="percentile")
    assert norm.per_image and norm.percentiles == PERCENTILES and norm.intensity_max is None
    with pytest.raises(ValueError, match="for_image"):
        norm.unit(dim)  # an unbound per-image normalisation cannot be applied
    a, b = norm.for_image(dim).unit(dim), norm.for_image(bright).unit(bright)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.min() == 0.0  # values below the low percentile are clipped to 0
    ref = np.maximum((dim - low[:, None, None]) / (high - low)[:, None, None], 0)
    np.testing.assert_allclose(a, ref, rtol=1e-6, atol=1e-7)
    pooled = np.concatenate([ref.reshape(2, -1)] * 2, axis=1)  # both images scale alike
    np.testing.assert_allclose(norm.mean, pooled.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(norm.std, pooled.std(axis=1), rtol=1e-5)
    stored = norm.to_dict()
    assert stored["percentiles"] == [1.0, 99.8] and Normalization.from_dict(stored) == norm
    with pytest.raises(ValueError, match="not stored"):
        norm.for_image(dim).to_dict()
    flat = norm.for_image(np.full((2, 8, 8), 7, np.uint8))  # constant image: span of 1 raw unit
    assert (
        flat.intensity_max == (8.0, 8.0) and flat.unit(np.full((2, 8, 8), 7, np.uint8)).max() == 0
    )
    big = rng.integers(0, 255, (1, 2100, 1100)).astype(np.uint8)  # strided sample, offset 0
    s = int(np.ceil(np.sqrt(2100 * 1100 / 2**20)))
    np.testing.assert_array_equal(
        image_percentiles(big)[1], np.percentile(big[:, ::s, ::s].reshape(1, -1), 99.8, axis=1)
    )


def test_per_image_normalization_in_training_tiles(small):
    """Training and validation tiles of a per-image normalisation use the image's own
    percentiles (not the tile's)."""
    norm = channel_stats([small["img"]], intensity="percentile")
    bound = norm.for_image(small["img"])
    tiles = validation_tiles([small["item"]], tile_shape=(16, 16), normalization=norm)
    expected = bound.apply(small["img"])
    np.testing.assert_allclose(tiles[0][0].numpy(), expected[:, :16, :16], rtol=1e-6)
    ds = _dataset(small, tile_shape=(20, 20), normalization=norm)
    padded = np.pad(bound.unit(small["img"]), ((0, 0), (20, 20), (20, 20)), mode="reflect")
    for i, (cy, cx) in enumerate(ds.centres()):
        y0, x0 = cy - 10 + 20, cx - 10 + 20
        expected = bound.standardize(padded[:, y0 : y0 + 20, x0 : x0 + 20])
        np.testing.assert_allclose(ds[i]["image"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_to_unit_range():
    assert to_unit_range(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    assert to_unit_range(np.array([2.5])).dtype == np.float32


# -- augmentation -----------------------------------------------------------------------------
def _smooth_image(rng, shape=(48, 48), channels=1):
    x = ndimage.gaussian_filter(rng.random((*shape, channels)), sigma=(3, 3, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32)


@pytest.mark.parametrize("names", [["flip"], ["rotate90"], ["flip", "rotate90"]])
def test_flips_and_rot90_keep_image_mask_correspondence(names):
    x = _smooth_image(np.random.default_rng(0))
    mask = (x[..., 0] > 0.5).astype(np.uint16)
    seen = set()
    for seed in range(8):
        out = build_augmentation(names, tile_shape=(48, 48), seed=seed)(image=x, mask=mask)
        np.testing.assert_array_equal(out["mask"], out["image"][..., 0] > 0.5)
        seen.add(out["image"].tobytes())
    assert len(seen) > 1  # something happened


def test_rotate_keeps_mask_aligned_and_uses_reflection():
    x = _smooth_image(np.random.default_rng(0), shape=(64, 64))
    mask = (x[..., 0] > 0.5).astype(np.uint16)
    for seed in range(4):
        out = build_augmentation(["rotate"], tile_shape=(40, 40), seed=seed)(image=x, mask=mask)
        assert out["image"].shape == (40, 40, 1) and out["mask"].shape == (40, 40)
        assert set(np.unique(out["mask"])) <= {0, 1}
        assert ((out["image"][..., 0] > 0.5) == out["mask"]).mean() > 0.95


def test_gamma_changes_intensities_not_mask():
    x = _smooth_image(np.random.default_rng(0))
    mask = (x[..., 0] > 0.5).astype(np.uint16)
    changed = 0
    for seed in range(8):
        out = build_augmentation(["gamma"], tile_shape=(48, 48), seed=seed)(image=x, mask=mask)
        np.testing.assert_array_equal(out["mask"], mask)
        changed += not np.allclose(out["image"], x)
    assert changed > 0


def test_brightness_contrast_is_a_gain_within_its_documented_range():
    """The tile times a factor in [0.5, 1.5] and one in [0.7, 1.3], each with probability 0.5:
    one factor per tile (no offset), the mask untouched."""
    x = np.where(np.arange(256).reshape(16, 16, 1) % 2, 0.3, 0.1).astype(np.float32)
    mask = np.zeros((16, 16), np.uint8)
    gains = []
    for seed in range(80):
        out = build_augmentation(["brightness_contrast"], tile_shape=(16, 16), seed=seed)(
            image=x, mask=mask
        )
        np.testing.assert_array_equal(out["mask"], mask)
        g = out["image"] / x
        assert np.ptp(g) < 1e-5  # one factor for the whole tile: a gain, no offset
        gains.append(float(g.mean()))
    gains = np.array(gains)
    assert gains.min() >= 0.5 * 0.7 - 1e-5 and gains.max() <= 1.5 * 1.3 + 1e-5
    assert gains.min() < 0.7 and gains.max() > 1.3  # both factors reach beyond one alone
    assert 0.05 < np.isclose(gains, 1.0).mean() < 0.7  # sometimes neither fires


def test_all_augmentations_run_deterministically():
    x = _smooth_image(np.random.default_rng(0), shape=(40, 40), channels=2)
    mask = (x[..., 0] > 0.5).astype(np.uint16)
    aug = build_augmentation(AUGMENTATIONS, tile_shape=(24, 24), seed=5)
    a = aug(image=x, mask=mask)
    b = build_augmentation(AUGMENTATIONS, tile_shape=(24, 24), seed=5)(image=x, mask=mask)
    assert a["image"].shape == (24, 24, 2) and a["image"].dtype == np.float32
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])


def test_unknown_augmentation_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are: flip, rotate90"):
        build_augmentation(["flip", "elastic"], tile_shape=(8, 8))


def test_augmentation_input_shape():
    assert augmentation_input_shape(None, (32, 48)) == (32, 48)
    assert augmentation_input_shape(["rotate90"], (32, 48)) == (48, 48)
    assert augmentation_input_shape(DEFAULT_AUGMENTATIONS, (512, 512)) == (726, 726)


# -- dataset ----------------------------------------------------------------------------------
def test_dataset_items_are_reflected_windows_of_the_image(small):
    ds = _dataset(small, tile_shape=(20, 20))
    padded = np.pad(to_unit_range(small["img"]), ((0, 0), (20, 20), (20, 20)), mode="reflect")
    lab = np.pad(small["lab"], 20, mode="reflect")
    for i, (cy, cx) in enumerate(ds.centres()):
        item = ds[i]
        assert item["image"].dtype.is_floating_point and item["target"].dtype.is_signed
        y0, x0 = cy - 10 + 20, cx - 10 + 20
        np.testing.assert_array_equal(item["image"].numpy(), padded[:, y0 : y0 + 20, x0 : x0 + 20])
        np.testing.assert_array_equal(item["target"].numpy(), lab[y0 : y0 + 20, x0 : x0 + 20])


def test_dataset_deterministic_per_seed_epoch_index(small):
    kw = dict(augment=DEFAULT_AUGMENTATIONS, normalization=Normalization((0.4, 0.5), (0.2, 0.3)))
    a, b = _dataset(small, **kw), _dataset(small, **kw)
    first = [a[i]["image"].numpy() for i in range(len(a))]
    for i in reversed(range(len(b))):  # order of access does not matter
        np.testing.assert_array_equal(b[i]["image"].numpy(), first[i])
    a.set_epoch(1)
    assert not np.array_equal(a.centres(), b.centres())
    assert any(not np.array_equal(a[i]["image"].numpy(), first[i]) for i in range(len(a)))
    a.set_epoch(0)
    np.testing.assert_array_equal(a[3]["target"].numpy(), b[3]["target"].numpy())
    c = pickle.loads(pickle.dumps(b))  # what a spawned worker gets
    np.testing.assert_array_equal(c[2]["image"].numpy(), first[2])
    assert not np.array_equal(_dataset(small, seed=1, **kw).centres(), b.centres())


def test_dataset_samples_on_a_coarse_level_for_big_label_maps(small):
    ds = _dataset(small, max_label_pixels=500, tiles_per_epoch=300)
    assert ds._maps[0][0].shape == (23, 19) and ds._maps[0][1] == (2, 2)
    c = ds.centres()
    assert (c >= 0).all() and (c < [45, 38]).all()
    np.testing.assert_array_equal(
        c, _dataset(small, max_label_pixels=500, tiles_per_epoch=300).centres()
    )
    near = ndimage.maximum_filter(small["lab"] > 0, size=3)  # jitter stays inside the coarse pixel
    assert near[c[:, 0], c[:, 1]].mean() > 0.5


def test_dataset_scale_reads_larger_window_and_downsamples(small):
    ds = _dataset(small, tile_shape=(8, 8), scale=2.0)
    assert ds.read_shape == (16, 16)
    padded = np.pad(to_unit_range(small["img"]), ((0, 0), (8, 8), (8, 8)), mode="reflect")
    lab = np.pad(small["lab"], 8, mode="reflect")
    for i, (cy, cx) in enumerate(ds.centres()):
        item = ds[i]
        assert tuple(item["image"].shape) == (2, 8, 8)
        win = padded[:, cy : cy + 16, cx : cx + 16]  # cy - 8 + 8
        expected = win.reshape(2, 8, 2, 8, 2).mean(axis=(2, 4))
        np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(
            item["target"].numpy(), lab[cy : cy + 16, cx : cx + 16][1::2, 1::2]
        )


def test_dataset_reads_only_a_window(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 1024, 1024)).astype(np.uint8)
    lab = np.zeros((1024, 1024), np.uint8)
    lab[300:340, 500:560] = 1
    url = write_image(tmp_path / "big.zarr", img, chunks=(128, 128), n_levels=1)
    write_labels(url, "gt", lab, chunks=(128, 128))
    ds = TileDataset(
        [TrainItem(url, url, "gt")],
        tile_shape=(128, 128),
        n_classes=2,
        tiles_per_epoch=4,
        normalization=IDENTITY1,
        augment=["rotate"],
        seed=0,
    )
    keys: list[str] = []
    original = zarr.storage.LocalStore.get

    async def spy(self, key, *args, **kwargs):
        keys.append(f"{self.root.name}:{key}")
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", spy)
    item = ds[0]
    assert tuple(item["image"].shape) == (1, 128, 128)
    image_chunks = {k for k in keys if k.startswith("big.zarr:s0/c/")}
    label_chunks = {k for k in keys if k.startswith("gt:s0/c/")}
    # the 182 x 182 window touches at most 3 x 3 of the 8 x 8 chunks
    assert 1 <= len(image_chunks) <= 9, image_chunks
    assert 1 <= len(label_chunks) <= 9, label_chunks


def test_flow_targets_zero_outside_objects(small):
    ds = _dataset(small, tile_shape=(24, 24), flows=True, tiles_per_epoch=2)
    for i in range(len(ds)):
        item = ds[i]
        flows, target = item["flows"].numpy(), item["target"].numpy()
        assert flows.shape == (2, 24, 24) and flows.dtype == np.float32
        assert np.all(flows[:, target == 0] == 0)
        if (target > 0).any():
            assert np.abs(flows[:, target > 0]).max() > 0.1
    inst = TileDataset(
        [TrainItem(small["url"], small["gt"], "est_gt", instance_name="instances")],
        tile_shape=(24, 24),
        n_classes=3,
        tiles_per_epoch=2,
        normalization=IDENTITY2,
        augment=["flip"],
        seed=0,
        flows=True,
    )
    assert tuple(inst[1]["flows"].shape) == (2, 24, 24)


def test_flow_targets_separate_touching_instances():
    lab = np.zeros((20, 20), np.int32)
    lab[4:16, 2:10], lab[4:16, 10:18] = 1, 2
    two = flow_targets(lab)
    one = flow_targets((lab > 0).astype(np.int32))
    assert two.shape == (2, 20, 20) and not np.allclose(two, one)
    assert flow_targets(np.zeros((5, 6), np.int32)).shape == (2, 5, 6)


def test_validation_tiles_cover_image(small):
    tiles = validation_tiles([small["item"]], tile_shape=(16, 16), normalization=IDENTITY2)
    assert len(tiles) == 3 * 3  # ceil(45/16) x ceil(38/16)
    rows = [
        np.concatenate([t.numpy() for t, _ in tiles[r * 3 : r * 3 + 3]], axis=-1) for r in range(3)
    ]
    image = np.concatenate(rows, axis=-2)
    expected = np.pad(to_unit_range(small["img"]), ((0, 0), (0, 3), (0, 10)), mode="reflect")
    np.testing.assert_array_equal(image, expected)
    targets = np.concatenate(
        [
            np.concatenate([t.numpy() for _, t in tiles[r * 3 : r * 3 + 3]], axis=-1)
            for r in range(3)
        ]
    )
    np.testing.assert_array_equal(targets[:45, :38], small["lab"])
    assert (targets[45:] == -100).all() and (targets[:, 38:] == -100).all()


def test_normalization_from_items(small):
    norm = normalization_from_items([small["item"]])
    ref = to_unit_range(small["img"]).reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(norm.mean, ref.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(norm.std, ref.std(axis=1), rtol=1e-6)


def test_dataset_validates_inputs(small, tmp_path):
    with pytest.raises(ValueError, match="channel"):
        _dataset(small, normalization=IDENTITY1)
    with pytest.raises(ValueError, match="n_classes = 2"):
        _dataset(small, n_classes=2)
    with pytest.raises(ValueError, match="valid names"):
        _dataset(small, augment=["zoom"])
    other = write_image(tmp_path / "o.zarr", np.zeros((1, 10, 10), np.uint8), n_levels=1)
    write_labels(other, "gt", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"\(10, 10\)"):
        TileDataset(
            [TrainItem(small["url"], other, "gt")],
            tile_shape=(8, 8),
            n_classes=2,
            tiles_per_epoch=1,
            normalization=IDENTITY2,
            augment=None,
            seed=0,
        )
