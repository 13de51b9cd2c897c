"""Semantic overlap metrics: hand cases and SimpleITK LabelOverlapMeasuresImageFilter."""

import numpy as np
import pytest
import SimpleITK as sitk
from skimage.data import binary_blobs

from scaleseg.metrics import dice, dice_per_class, iou, iou_per_class

# Hand case: class 1 has TP=1, FP=1, FN=1; class 2 has TP=2, FP=1, FN=1.
REF = np.array([[1, 1, 2], [0, 2, 2], [0, 0, 0]], dtype=np.uint8)
PRED = np.array([[1, 0, 2], [1, 2, 0], [0, 0, 2]], dtype=np.uint8)


def _sitk_overlap(pred, ref):
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(
        sitk.GetImageFromArray(ref.astype(np.uint8)), sitk.GetImageFromArray(pred.astype(np.uint8))
    )
    return f


def _multiclass_pair(seed, n_classes=3, shape=(96, 80)):
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, dtype=np.uint8)
    for c in range(1, n_classes + 1):
        blobs = binary_blobs(
            length=max(shape),
            blob_size_fraction=0.15,
            volume_fraction=0.2,
            rng=int(rng.integers(1 << 30)),
        )
        ref[blobs[: shape[0], : shape[1]]] = c
    pred = ref.copy()
    flip = rng.random(shape) < 0.15
    pred[flip] = rng.integers(0, n_classes + 1, size=int(flip.sum()))
    return pred, ref


def test_hand_case_per_class():
    np.testing.assert_allclose(dice_per_class(PRED, REF, n_classes=2), [0.5, 2 / 3])
    np.testing.assert_allclose(iou_per_class(PRED, REF, n_classes=2), [1 / 3, 0.5])


def test_hand_case_averages():
    assert dice(PRED, REF) == pytest.approx((0.5 + 2 / 3) / 2)
    assert iou(PRED, REF) == pytest.approx((1 / 3 + 0.5) / 2)
    assert dice(PRED, REF, average="micro") == pytest.approx(6 / 10)
    assert iou(PRED, REF, average="micro") == pytest.approx(3 / 7)


def test_binary_hand_case_and_bool_input():
    pred = np.array([[1, 1, 0]])
    ref = np.array([[1, 0, 0]])
    assert dice(pred, ref) == pytest.approx(2 / 3)
    assert iou(pred, ref) == pytest.approx(0.5)
    assert dice(pred.astype(bool), ref.astype(bool)) == pytest.approx(2 / 3)


def test_class_absent_from_both_scores_one():
    # Class 3 is in neither map: a perfect (empty) agreement.
    per_class = dice_per_class(PRED, REF, n_classes=3)
    np.testing.assert_allclose(per_class, [0.5, 2 / 3, 1.0])
    assert dice(PRED, REF, n_classes=3) == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_both_empty_is_one_and_one_empty_is_zero():
    z = np.zeros((4, 5), dtype=np.uint8)
    o = np.ones((4, 5), dtype=np.uint8)
    assert dice(z, z) == 1.0
    assert iou(z, z) == 1.0
    assert dice(o, z) == 0.0
    assert iou(z, o) == 0.0
    assert dice(o, o) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_matches_simpleitk(seed):
    rng = np.random.default_rng(seed)
    ref = binary_blobs(length=128, blob_size_fraction=0.1, volume_fraction=0.3, rng=seed).astype(
        np.uint8
    )
    pred = ref.copy()
    flip = rng.random(ref.shape) < 0.1
    pred[flip] = 1 - pred[flip]
    f = _sitk_overlap(pred, ref)
    assert dice(pred, ref) == pytest.approx(f.GetDiceCoefficient(1), abs=1e-12)
    assert iou(pred, ref) == pytest.approx(f.GetJaccardCoefficient(1), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_multiclass_matches_simpleitk(seed, dtype):
    pred, ref = _multiclass_pair(seed)
    f = _sitk_overlap(pred, ref)
    expected_dice = [f.GetDiceCoefficient(c) for c in (1, 2, 3)]
    expected_iou = [f.GetJaccardCoefficient(c) for c in (1, 2, 3)]
    p, r = pred.astype(dtype), ref.astype(dtype)
    np.testing.assert_allclose(dice_per_class(p, r, n_classes=3), expected_dice, atol=1e-12)
    np.testing.assert_allclose(iou_per_class(p, r, n_classes=3), expected_iou, atol=1e-12)
    assert dice(p, r, n_classes=3) == pytest.approx(np.mean(expected_dice), abs=1e-12)
    # SimpleITK's all-label coefficients pool the counts over the labels (micro).
    assert dice(p, r, average="micro") == pytest.approx(f.GetDiceCoefficient(), abs=1e-12)
    assert iou(p, r, average="micro") == pytest.approx(f.GetJaccardCoefficient(), abs=1e-12)


def test_symmetry_and_dice_iou_relation():
    pred, ref = _multiclass_pair(5)
    d = dice_per_class(pred, ref, n_classes=3)
    j = iou_per_class(pred, ref, n_classes=3)
    np.testing.assert_allclose(d, dice_per_class(ref, pred, n_classes=3))
    np.testing.assert_allclose(d, 2 * j / (1 + j))


def test_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"pred \(2, 3\), ref \(3, 2\)"):
        dice(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_float_input_rejected():
    with pytest.raises(ValueError, match="integer label array"):
        dice(np.zeros((2, 2)), np.zeros((2, 2), np.uint8))


def test_negative_labels_rejected():
    with pytest.raises(ValueError, match="negative"):
        iou(np.array([[-1, 0]]), np.array([[0, 0]]))


def test_label_above_n_classes_rejected():
    with pytest.raises(ValueError, match=r"ref holds label 2, outside 0..n_classes \(1\)"):
        dice(PRED.clip(0, 1), REF, n_classes=1)


def test_bad_average_and_n_classes():
    with pytest.raises(ValueError, match="average"):
        dice(PRED, REF, average="weighted")
    with pytest.raises(ValueError, match="n_classes"):
        dice(PRED, REF, n_classes=0)
