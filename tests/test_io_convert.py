"""Converter: TIFF/PNG folders (+ expert masks) -> OME-Zarr collection, and its errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from scaleseg import io


def _folders(tmp_path: Path, rng) -> tuple[Path, Path, dict]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    data = {
        "gray8": rng.integers(0, 255, (40, 30), dtype=np.uint8),
        "gray16": rng.integers(0, 65535, (40, 30), dtype=np.uint16),
        "rgb": rng.integers(0, 255, (40, 30, 3), dtype=np.uint8),
        "float": rng.random((40, 30)).astype(np.float32),
        "multi": rng.integers(0, 4000, (3, 40, 30), dtype=np.uint16),
    }
    iio.imwrite(images / "gray8.png", data["gray8"])
    iio.imwrite(images / "gray16.png", data["gray16"])
    iio.imwrite(images / "rgb.png", data["rgb"])
    tifffile.imwrite(images / "float.tif", data["float"])
    tifffile.imwrite(images / "multi.tif", data["multi"], metadata={"axes": "CYX"})
    for expert in ("anna", "ben"):
        (masks / expert).mkdir(parents=True)
    m = (data["gray8"] > 128).astype(np.uint8)
    iio.imwrite(masks / "anna" / "gray8_mask.png", m * 255)  # {0, 255} -> binary
    iio.imwrite(masks / "ben" / "gray8_mask.png", m * 2)  # class ids kept
    iio.imwrite(masks / "anna" / "multi_mask.png", m)
    return images, masks, data


def test_convert_folder(tmp_path, rng, ngff_version):
    images, masks, data = _folders(tmp_path, rng)
    out = tmp_path / "out.zarr"
    res = io.convert_folder(
        images,
        out,
        masks=masks,
        mask_suffix="_mask",
        chunks=(16, 16),
        n_levels=2,
        ngff_version=ngff_version,
    )
    refs = {r.name: r for r in io.open_collection(out)}
    assert sorted(refs) == ["float", "gray16", "gray8", "multi", "rgb"]
    np.testing.assert_array_equal(io.open_image(refs["gray8"]).values[0], data["gray8"])
    np.testing.assert_array_equal(io.open_image(refs["gray16"]).values[0], data["gray16"])
    np.testing.assert_array_equal(
        io.open_image(refs["rgb"]).values, np.moveaxis(data["rgb"], -1, 0)
    )
    np.testing.assert_array_equal(io.open_image(refs["float"]).values[0], data["float"])
    np.testing.assert_array_equal(io.open_image(refs["multi"]).values, data["multi"])
    assert io.image_info(refs["gray8"])["chunks"] == [1, 16, 16]
    assert io.list_labels(refs["gray8"]) == ["expert_anna", "expert_ben"]
    assert io.list_labels(refs["multi"]) == ["expert_anna"]
    assert io.list_labels(refs["rgb"]) == []
    m = (data["gray8"] > 128).astype(np.uint8)
    np.testing.assert_array_equal(io.open_labels(refs["gray8"], "expert_anna").values, m)
    np.testing.assert_array_equal(io.open_labels(refs["gray8"], "expert_ben").values, m * 2)
    assert (out / "conversion.csv").read_text().count("\n") == 6
    assert res["warnings"] == []
    assert not list(tmp_path.glob(".out.zarr.partial-*"))


def test_existing_output_kept_unless_overwrite(tmp_path, rng):
    images, masks, _ = _folders(tmp_path, rng)
    out = tmp_path / "out.zarr"
    io.convert_folder(images, out)
    marker = out / "keep.txt"
    marker.write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        io.convert_folder(images, out)
    assert marker.read_text() == "mine"
    io.convert_folder(images, out, overwrite=True)
    assert not marker.exists()


def test_mismatched_mask_names_the_files(tmp_path, rng):
    images, masks, _ = _folders(tmp_path, rng)
    iio.imwrite(masks / "ben" / "rgb_mask.png", np.zeros((20, 30), np.uint8))
    out = tmp_path / "out.zarr"
    with pytest.raises(ValueError, match=r"rgb_mask\.png: mask shape \(20, 30\).*rgb\.png"):
        io.convert_folder(images, out, masks=masks, mask_suffix="_mask")
    assert not out.exists()  # nothing half-written looks complete
    assert not list(tmp_path.glob(".out.zarr.partial-*"))


def test_non_integer_mask(tmp_path, rng):
    images, masks, _ = _folders(tmp_path, rng)
    tifffile.imwrite(masks / "ben" / "multi_mask.tif", rng.random((40, 30)).astype(np.float32))
    with pytest.raises(ValueError, match=r"multi_mask\.tif: non-integer mask values"):
        io.convert_folder(images, tmp_path / "o.zarr", masks=masks, mask_suffix="_mask")


def test_unreadable_and_unknown_axes(tmp_path, rng):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"broken\.png: unreadable image file"):
        io.convert_folder(images, tmp_path / "o.zarr")
    (images / "broken.png").unlink()
    tifffile.imwrite(images / "cube.tif", rng.random((40, 50, 60)).astype(np.float32))
    with pytest.raises(ValueError, match=r"cube\.tif: unknown axes"):
        io.convert_folder(images, tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


def test_unmatched_masks_are_reported(tmp_path, rng):
    images, masks, _ = _folders(tmp_path, rng)
    iio.imwrite(masks / "ben" / "ghost_mask.png", np.zeros((40, 30), np.uint8))
    items, warnings = io.plan_conversion(images, masks=masks, mask_suffix="_mask")
    assert len(items) == 5
    assert len(warnings) == 1 and "ghost_mask.png" in warnings[0]


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        io.plan_conversion(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        io.plan_conversion(tmp_path / "empty")


@pytest.mark.parametrize(
    ("arr", "expected_shape"),
    [
        (np.zeros((10, 12), np.uint8), (1, 10, 12)),
        (np.zeros((20, 21, 3), np.uint8), (3, 20, 21)),
        (np.zeros((20, 21, 4), np.uint8), (3, 20, 21)),
    ],
)
def test_read_image_file_layouts(tmp_path, arr, expected_shape):
    path = tmp_path / "x.png"
    iio.imwrite(path, arr)
    assert io.read_image_file(path).shape == expected_shape


def test_read_image_rejects_nan(tmp_path):
    a = np.ones((20, 20), np.float32)
    a[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", a)
    with pytest.raises(ValueError, match=r"nan\.tif: image contains NaN"):
        io.read_image_file(tmp_path / "nan.tif")


def test_convert_on_cluster(tmp_path, rng, client):
    images, masks, data = _folders(tmp_path, rng)
    out = tmp_path / "out.zarr"
    io.convert_folder(images, out, masks=masks, mask_suffix="_mask", client=client)
    ref = [r for r in io.open_collection(out) if r.name == "gray16"][0]
    np.testing.assert_array_equal(io.open_image(ref).values[0], data["gray16"])
