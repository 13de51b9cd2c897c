"""Instance tables: against scikit-image regionprops, and exact under arbitrary blocking."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.data import binary_blobs
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table

from scaleseg.instances._tables import (
    INSTANCE_COLUMNS,
    combine_instance_partials,
    instance_partials,
    instance_table,
)


def _scene(seed=0, shape=(53, 71)):
    """Odd-shaped objects with non-consecutive ids (some touching each other), image, u, semantic."""
    rng = np.random.default_rng(seed)
    blobs = connected_components(binary_blobs(max(shape), blob_size_fraction=0.1, rng=seed))
    blobs = blobs[: shape[0], : shape[1]]
    grid = np.kron(rng.integers(0, 4, (6, 8)), np.ones((9, 9), int))[: shape[0], : shape[1]]
    grid = connected_components(grid, background=0) + 1000
    labels = np.where(blobs > 0, blobs * 7 + 3, np.where(rng.random(shape) < 0.5, grid, 0))
    labels = labels.astype(np.uint32)
    image = rng.normal(size=(3, *shape)).astype(np.float32)
    uncertainty = rng.random(shape).astype(np.float32)
    semantic = rng.integers(0, 4, shape).astype(np.uint8)
    return labels, image, uncertainty, semantic


def _blocks(shape, ycuts, xcuts):
    ys = [0, *sorted(set(ycuts)), shape[0]]
    xs = [0, *sorted(set(xcuts)), shape[1]]
    for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
        for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
            yield slice(y0, y1), slice(x0, x1)


def _blocked_table(labels, image, uncertainty, semantic, ycuts, xcuts, **kw):
    parts = []
    for sy, sx in _blocks(labels.shape, ycuts, xcuts):
        part = instance_partials(
            labels[sy, sx],
            offset=(sy.start, sx.start),
            image_shape=labels.shape,
            image=image[:, sy, sx],
            uncertainty=uncertainty[sy, sx],
            semantic=semantic[sy, sx],
        )
        parts.append(part)
    return combine_instance_partials(parts, **kw)


def test_matches_regionprops():
    labels, image, uncertainty, _ = _scene()
    table = instance_table(
        labels, image=image, uncertainty=uncertainty, channel_names=["a", "b", "c"]
    )
    intensity = np.concatenate([np.moveaxis(image, 0, -1), uncertainty[..., None]], axis=-1)
    ref = pd.DataFrame(
        regionprops_table(
            labels.astype(np.int64),
            intensity_image=intensity,
            properties=("label", "area", "centroid", "bbox", "intensity_mean"),
        )
    )
    assert list(table.columns[:9]) == INSTANCE_COLUMNS[:9]
    assert list(table.columns[9:12]) == ["mean_intensity_a", "mean_intensity_b", "mean_intensity_c"]
    assert list(table.columns[12:]) == INSTANCE_COLUMNS[9:]
    np.testing.assert_array_equal(table["label"], ref["label"])
    np.testing.assert_array_equal(table["area"], ref["area"])
    for ours, theirs in [("centroid_y", "centroid-0"), ("centroid_x", "centroid-1")]:
        np.testing.assert_allclose(table[ours], ref[theirs], rtol=1e-12)
    for i, col in enumerate(["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]):
        np.testing.assert_array_equal(table[col], ref[f"bbox-{i}"])
    for i, col in enumerate(
        ["mean_intensity_a", "mean_intensity_b", "mean_intensity_c", "mean_uncertainty"]
    ):
        np.testing.assert_allclose(table[col], ref[f"intensity_mean-{i}"], rtol=1e-5, atol=1e-6)
    assert table["label"].dtype == np.uint64 and table["class"].dtype == np.uint16
    assert (table["class"] == 0).all()  # no semantic map given


def test_class_by_majority_ignores_background():
    labels = np.array([[1, 1, 1, 2, 2, 3], [1, 1, 1, 2, 2, 3]], np.uint32)
    semantic = np.array([[0, 0, 0, 2, 1, 0], [0, 2, 3, 2, 1, 0]], np.uint8)
    table = instance_table(labels, semantic=semantic, n_classes=5)
    # 1: background x4, class 2 x1, class 3 x1 -> tie -> smaller class; 2: 2 vs 2 -> 1; 3: all background
    assert table["class"].tolist() == [2, 1, 0]


def test_touches_border_bottom_right_only():
    labels = np.zeros((6, 7), np.uint32)
    labels[2:4, 2:4] = 5  # interior
    labels[4:6, 5:6] = 9  # touches only the bottom border
    labels[2:3, 6:7] = 11  # touches only the right border
    labels[0, 3] = 12  # top
    table = instance_table(labels)
    assert dict(zip(table["label"], table["touches_border"], strict=True)) == {
        5: False,
        9: True,
        11: True,
        12: True,
    }
    # an interior block does not flag pixels on its own edge; the image border is global
    part = instance_partials(labels[2:4, 2:4], offset=(2, 2), image_shape=labels.shape)
    assert not part["touches_border"].any()
    part = instance_partials(labels[3:6, 4:7], offset=(3, 4), image_shape=labels.shape)
    assert part["touches_border"].all()


@pytest.mark.parametrize(
    ("ycuts", "xcuts"),
    [
        ((), ()),
        ((1,), (70,)),
        ((7, 14, 21, 28, 35, 42, 49), (5, 10, 15, 20, 25, 30, 35, 40, 45)),
        ((26,), ()),
    ],
)
def test_blocked_equals_whole(ycuts, xcuts):
    labels, image, uncertainty, semantic = _scene(1)
    whole = instance_table(labels, image=image, uncertainty=uncertainty, semantic=semantic)
    blocked = _blocked_table(labels, image, uncertainty, semantic, ycuts, xcuts)
    pd.testing.assert_frame_equal(blocked, whole, check_exact=False, rtol=1e-12)
    ints = ["label", "class", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "touches_border"]
    pd.testing.assert_frame_equal(blocked[ints], whole[ints], check_exact=True)


@settings(max_examples=20, deadline=None)
@given(
    ycuts=st.lists(st.integers(1, 52), max_size=4),
    xcuts=st.lists(st.integers(1, 70), max_size=4),
)
def test_blocked_equals_whole_hypothesis(ycuts, xcuts):
    labels, image, uncertainty, semantic = _scene(2)
    whole = instance_table(labels, image=image, uncertainty=uncertainty, semantic=semantic)
    blocked = _blocked_table(labels, image, uncertainty, semantic, ycuts, xcuts)
    pd.testing.assert_frame_equal(blocked, whole, check_exact=False, rtol=1e-12)


def test_empty_labels():
    table = instance_table(
        np.zeros((5, 4), np.uint32), image=np.ones((2, 5, 4)), channel_names=["r", "g"]
    )
    assert len(table) == 0
    assert list(table.columns) == [
        *INSTANCE_COLUMNS[:9],
        "mean_intensity_r",
        "mean_intensity_g",
        *INSTANCE_COLUMNS[9:],
    ]
    assert table.dtypes["label"] == np.uint64 and table.dtypes["touches_border"] == np.bool_
    assert table.dtypes["area"] == np.int64 and table.dtypes["mean_intensity_g"] == np.float64
    empty = combine_instance_partials([])
    assert list(empty.columns) == INSTANCE_COLUMNS and len(empty) == 0
    assert len(instance_partials(np.zeros((3, 3), np.uint64))) == 0


def test_uint64_ids_and_cut_objects():
    big = [2**40 + 3, 2**63 + 5]
    labels = np.zeros((8, 9), np.uint64)
    labels[1:7, 1:4] = big[1]
    labels[2:5, 5:9] = big[0]
    sem = np.zeros((8, 9), np.uint8)
    sem[:, 6:] = 3  # class 3 only in the right block: partials with different class counts combine
    parts = [
        instance_partials(labels[:, :6], image_shape=labels.shape, semantic=sem[:, :6]),
        instance_partials(
            labels[:, 6:], offset=(0, 6), image_shape=labels.shape, semantic=sem[:, 6:]
        ),
    ]
    table = combine_instance_partials(parts)
    assert table["label"].tolist() == big
    assert table["area"].tolist() == [12, 18]
    assert table["class"].tolist() == [3, 0]
    assert table[["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]].values.tolist() == [
        [2, 5, 5, 9],
        [1, 1, 7, 4],
    ]
    assert table["touches_border"].tolist() == [True, False]
    np.testing.assert_allclose(table[["centroid_y", "centroid_x"]].values, [[3.0, 6.5], [3.5, 2.0]])
    assert np.isnan(table["mean_uncertainty"]).all()


def test_invalid_inputs():
    labels = np.ones((4, 4), np.uint32)
    with pytest.raises(ValueError, match="image_shape is required"):
        instance_partials(labels, offset=(4, 0))
    with pytest.raises(ValueError, match="exceeds image_shape"):
        instance_partials(labels, offset=(4, 0), image_shape=(6, 6))
    with pytest.raises(ValueError, match="channel_names"):
        instance_table(labels, image=np.ones((2, 4, 4)), channel_names=["a"])
    a = instance_partials(labels, uncertainty=np.ones((4, 4)))
    with pytest.raises(ValueError, match="partial 1"):
        combine_instance_partials([a, instance_partials(labels)])
