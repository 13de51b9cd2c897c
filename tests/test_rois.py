"""ImageJ ROI export/import: round trip, ordering, names, hand-made ROI types, errors."""

import numpy as np
import pytest
import roifile
from roifile import ROI_TYPE, ImagejRoi
from skimage.data import binary_blobs
from skimage.measure import label as connected_components

from scaleseg.instances._rois import export_rois, import_rois, sanitize_roi_name


@pytest.fixture
def labels():
    """Odd blobs, touching grid cells, a ring (hole), a diagonal pair, 1- and 2-pixel objects, border objects."""
    rng = np.random.default_rng(0)
    lab = np.zeros((96, 120), np.uint32)
    lab[:64, :64] = connected_components(binary_blobs(64, blob_size_fraction=0.12, rng=3)) * 3 + 1
    lab[:64, :64][lab[:64, :64] == 1] = 0
    cells = np.kron(rng.permutation(20).reshape(4, 5) + 500, np.ones((11, 9), int))
    lab[:44, 75:120] = cells  # touching cells, reaching the top and right borders
    lab[70:85, 10:25] = 900
    lab[74:81, 14:21] = 0  # a ring: the hole is filled by the outer-contour ROI
    lab[88, 30] = lab[89, 31] = lab[90, 32] = 901  # diagonally connected pixels
    lab[80, 60] = 902  # 1 pixel
    lab[82, 60:62] = 903  # 2 pixels
    lab[90:96, 100:120] = 904  # bottom-right corner
    return lab


def _filled(mask):
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(mask)


def test_round_trip_exact(labels, tmp_path):
    path = tmp_path / "rois.zip"
    table = export_rois(labels, path)
    back, info = import_rois(path, labels.shape)
    ids = np.unique(labels[labels > 0])
    assert len(table) == len(info) == ids.size and back.dtype == np.uint32
    assert info["label"].tolist() == list(range(1, ids.size + 1))  # 1..N in file order
    assert (info["name"] == table["name"]).all() and not info["skipped"].any()
    # measured agreement: every object comes back pixel-exact (holes filled), IoU == 1.0
    for new, old in zip(info["label"], table["label"], strict=True):
        np.testing.assert_array_equal(back == new, _filled(labels == old), err_msg=f"label {old}")
    assert (back > 0).sum() == _filled(labels > 0).sum()
    # tiny objects still have valid polygons
    n_points = dict(zip(table["label"], table["n_points"], strict=True))
    assert n_points[902] == 4 and n_points[903] == 6


def test_order_names_and_roifile_readable(labels, tmp_path):
    ids = np.unique(labels[labels > 0])
    scores = {int(i): float(k % 7) / 7 for k, i in enumerate(ids)}
    path = tmp_path / "ranked.zip"
    table = export_rois(labels, path, scores=scores, names_prefix="img 1/")
    assert table["rank"].tolist() == list(range(1, ids.size + 1))
    assert np.all(np.diff(table["score"]) <= 0)
    first = table.iloc[0]
    assert first["name"] == f"img_1_0001-u{first['score']:.3f}-id{first['label']}"
    assert table["name"].str.fullmatch(r"[A-Za-z0-9._-]+").all()
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == table["name"].tolist()
    assert all(r.roitype == ROI_TYPE.POLYGON for r in rois)
    # Fiji convention: outline on pixel edges, e.g. the corner object spans x in [100, 120], y in [90, 96]
    corner = rois[table.index[table["label"] == 904][0]].coordinates()
    assert corner[:, 0].min() == 100 and corner[:, 0].max() == 120
    assert corner[:, 1].min() == 90 and corner[:, 1].max() == 96
    assert sanitize_roi_name("a b/c:ü.roi") == "a_b_c__.roi"


def test_missing_scores_sort_last(tmp_path):
    lab = np.array([[1, 0, 2, 0, 3]], np.uint32)
    table = export_rois(lab, tmp_path / "a.zip", scores={3: 0.5, 1: 0.9})
    assert table["label"].tolist() == [1, 3, 2] and np.isnan(table["score"].iloc[2])


def test_exists_and_overwrite(tmp_path):
    lab = np.zeros((5, 5), np.uint32)
    lab[1:3, 1:3] = 1
    path = tmp_path / "a.zip"
    export_rois(lab, path)
    with pytest.raises(FileExistsError, match="a.zip"):
        export_rois(lab, path)
    lab[1:3, 1:3] = 2
    assert export_rois(lab, path, overwrite=True)["label"].tolist() == [2]
    assert len(roifile.roiread(path)) == 1 and list(tmp_path.iterdir()) == [path]


def test_empty_labels(tmp_path):
    path = tmp_path / "empty.zip"
    table = export_rois(np.zeros((4, 4), np.uint64), path)
    assert len(table) == 0 and list(table.columns) == ["label", "rank", "score", "name", "n_points"]
    back, info = import_rois(path, (4, 4))
    assert not back.any() and len(info) == 0


def _roi(roitype, box, name):
    roi = ImagejRoi()
    roi.roitype = roitype
    roi.left, roi.top, roi.right, roi.bottom = box
    roi.name = name
    return roi


def test_hand_made_rect_oval_and_skipped(tmp_path):
    rect = _roi(ROI_TYPE.RECT, (2, 3, 7, 5), "rect")  # columns 2-6, rows 3-4
    oval = _roi(ROI_TYPE.OVAL, (10, 2, 30, 14), "oval")
    point = ImagejRoi.frompoints([[3.5, 4.5]], name="point")
    point.roitype = ROI_TYPE.POINT
    open_line = ImagejRoi.frompoints([[1, 1], [5, 1], [5, 5]], name="open")
    open_line.roitype = ROI_TYPE.POLYLINE
    closed = ImagejRoi.frompoints([[32, 15], [38, 15], [38, 19], [32, 19], [32, 15]], name="closed")
    closed.roitype = ROI_TYPE.POLYLINE
    overlap = _roi(ROI_TYPE.RECT, (5, 4, 9, 8), "later")  # overlaps rect; the later ROI wins
    path = tmp_path / "hand.zip"
    roifile.roiwrite(path, [rect, oval, point, open_line, closed, overlap], mode="w")

    with pytest.warns(UserWarning, match=r"skipped 2 ROI\(s\).*point.*open"):
        labels, info = import_rois(path, (20, 40))
    assert info["name"].tolist() == ["rect", "oval", "point", "open", "closed", "later"]
    assert info["label"].tolist() == [1, 2, 0, 0, 3, 4]
    assert info["skipped"].tolist() == [False, False, True, True, False, False]
    expected = np.zeros((20, 40), np.uint32)
    expected[3:5, 2:7] = 1
    expected[15:19, 32:38] = 3
    expected[4:8, 5:9] = 4
    np.testing.assert_array_equal(np.where(labels == 2, 0, labels), expected)
    # oval vs the analytic ellipse (pixel centres inside), through roifile's 33-point polygon
    yy, xx = np.mgrid[:20, :40] + 0.5
    ellipse = ((xx - 20) / 10) ** 2 + ((yy - 8) / 6) ** 2 <= 1
    iou = (ellipse & (labels == 2)).sum() / (ellipse | (labels == 2)).sum()
    assert iou >= 0.95
    assert info["n_pixels"].tolist() == [(labels == k).sum() if k else 0 for k in info["label"]]


@pytest.mark.parametrize("content", [b"PK\x03\x04 not really a zip", b"\x00" * 100])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.zip"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.zip"):
        import_rois(path, (10, 10))
    with pytest.raises(FileNotFoundError):
        import_rois(tmp_path / "missing.zip", (10, 10))
