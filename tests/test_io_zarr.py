"""OME-Zarr round trips in NGFF 0.4 (zarr v2) and 0.5 (zarr v3), labels, collections, plates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr.writer import write_image as ome_write_image
from ome_zarr.writer import write_plate_metadata, write_well_metadata

from scaleseg import io


def test_image_round_trip(tmp_path, image_cyx, ngff_version):
    url = tmp_path / "img.zarr"
    io.write_image(
        url,
        image_cyx,
        chunks=(32, 16),
        n_levels=3,
        ngff_version=ngff_version,
        channel_names=["dapi", "gfp"],
    )
    arr = io.open_image(url)
    assert arr.dims == ("c", "y", "x")
    assert arr.attrs["ngff_version"] == ngff_version
    assert arr.data.chunksize == (1, 32, 16)
    np.testing.assert_array_equal(arr.values, image_cyx)
    info = io.image_info(url)
    assert info["zarr_format"] == (2 if ngff_version == "0.4" else 3)
    assert [lvl["shape"] for lvl in info["levels"]] == [[2, 70, 53], [2, 35, 27], [2, 18, 14]]
    # level 1 is the 2x2 mean of level 0 (edge-padded), independent of the chunking
    np.testing.assert_array_equal(
        io.open_image(url, level=1).values, io.downsample_image(image_cyx)
    )


def test_written_image_opens_with_ome_zarr_reader(tmp_path, image_cyx, ngff_version):
    """An independent reader (ome-zarr's) sees the same pixels, axes and levels."""
    url = tmp_path / "img.zarr"
    io.write_image(url, image_cyx, chunks=(32, 32), n_levels=2, ngff_version=ngff_version)
    nodes = list(Reader(parse_url(str(url)))())
    node = nodes[0]
    assert len(node.data) == 2
    np.testing.assert_array_equal(np.asarray(node.data[0]), image_cyx)
    axes = [a["name"] for a in node.metadata["axes"]]
    assert axes == ["c", "y", "x"]


def test_labels_round_trip_and_metadata(tmp_path, image_cyx, ngff_version, rng):
    url = tmp_path / "img.zarr"
    io.write_image(url, image_cyx, chunks=(32, 32), n_levels=2, ngff_version=ngff_version)
    lab = rng.integers(0, 4, size=(70, 53)).astype(np.uint8)
    io.write_labels(url, "expert_a", lab, chunks=(32, 32))
    io.write_labels(url, "expert_b", lab * 0, chunks=(32, 32))
    assert io.list_labels(url) == ["expert_a", "expert_b"]
    out = io.open_labels(url, "expert_a")
    assert out.dims == ("y", "x")
    np.testing.assert_array_equal(out.values, lab)
    np.testing.assert_array_equal(io.open_labels(url, "expert_a", level=1).values, lab[::2, ::2])
    group = zarr.open_group(str(url / "labels" / "expert_a"), mode="r")
    attrs, _ = io.ome_attrs(group)
    assert "image-label" in attrs
    # existing labels are kept unless overwrite, and the label list holds no duplicates
    with pytest.raises(FileExistsError, match="expert_a"):
        io.write_labels(url, "expert_a", lab, chunks=(32, 32))
    io.write_labels(url, "expert_a", lab + 1, chunks=(32, 32), overwrite=True)
    assert io.list_labels(url) == ["expert_b", "expert_a"]
    np.testing.assert_array_equal(io.open_labels(url, "expert_a").values, lab + 1)


def test_labels_shape_and_dtype_checked(tmp_path, image_cyx):
    url = tmp_path / "img.zarr"
    io.write_image(url, image_cyx, chunks=(32, 32))
    with pytest.raises(ValueError, match=r"shape \(70, 50\).*70x53"):
        io.write_labels(url, "bad", np.zeros((70, 50), np.uint8))
    with pytest.raises(ValueError, match="non-integer"):
        io.write_labels(url, "bad", np.zeros((70, 53), np.float32))
    with pytest.raises(KeyError, match="no label image 'nope'"):
        io.open_labels(url, "nope")


def test_image_without_c_axis_gains_one(tmp_path, rng):
    data = rng.random((1, 40, 30)).astype(np.float32)
    url = tmp_path / "zyx.zarr"
    io.write_image(url, data, axes="zyx", chunks=(16, 16), n_levels=1)
    arr = io.open_image(url)
    assert arr.dims == ("z", "c", "y", "x") or arr.dims == ("c", "z", "y", "x")
    cyx = io.to_cyx(arr)
    assert cyx.dims == ("c", "y", "x") and cyx.shape == (1, 40, 30)
    np.testing.assert_array_equal(cyx.values[0], data[0])


def test_to_cyx_rejects_stacks(tmp_path, rng):
    url = tmp_path / "z.zarr"
    io.write_image(url, rng.random((3, 20, 20)).astype(np.float32), axes="zyx", n_levels=1)
    with pytest.raises(ValueError, match="axis 'z' has size 3"):
        io.to_cyx(io.open_image(url))


def test_not_ome_zarr(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array(
        "a", shape=(4,), dtype="u1"
    )
    with pytest.raises(io.NotOmeZarrError, match="not an OME-Zarr image"):
        io.open_image(tmp_path / "plain.zarr")
    with pytest.raises(FileNotFoundError):
        io.open_image(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.NotOmeZarrError, match="no OME-Zarr images"):
        io.open_collection(tmp_path / "empty")


def test_inputs_are_opened_read_only(tmp_path, image_cyx):
    url = tmp_path / "img.zarr"
    io.write_image(url, image_cyx, n_levels=1)
    arr = io.open_image(url)
    group = io.open_group(url)
    with pytest.raises(ValueError, match="read-only"):  # zarr refuses writes: store is read-only
        group["s0"][0, 0, 0] = 1
    assert arr.values[0, 0, 0] == image_cyx[0, 0, 0]


def test_collection_of_images(tmp_path, image_cyx):
    for name in ("b", "a", "c"):
        io.write_image(tmp_path / f"{name}.zarr", image_cyx, n_levels=1)
    (tmp_path / "notes.txt").write_text("not an image")
    refs = io.open_collection(tmp_path)
    assert [r.name for r in refs] == ["a", "b", "c"]
    assert io.open_collection(tmp_path / "a.zarr")[0].name == "a"


def test_hcs_plate_fields(tmp_path, rng):
    """A plate written by ome-zarr itself (NGFF 0.4): every field becomes one image reference."""
    root = parse_url(str(tmp_path / "plate.zarr"), mode="w", fmt=FormatV04()).store
    plate = zarr.open_group(root, mode="w", zarr_format=2)
    write_plate_metadata(plate, ["A", "B"], ["1", "2"], ["A/1", "B/2"], fmt=FormatV04())
    expected = {}
    for well in ("A/1", "B/2"):
        row, col = well.split("/")
        wg = plate.require_group(row).require_group(col)
        write_well_metadata(wg, [{"path": "0"}, {"path": "1"}], fmt=FormatV04())
        for f in ("0", "1"):
            data = rng.integers(0, 255, (1, 24, 20), dtype=np.uint8)
            ome_write_image(
                data,
                wg.require_group(f),
                axes="cyx",
                fmt=FormatV04(),
                storage_options={"chunks": (1, 24, 20)},
            )
            expected[(well, f)] = data
    refs = io.open_collection(tmp_path / "plate.zarr")
    assert len(refs) == 4
    assert refs[0].name == "plate_A1_f0" and refs[0].well == "A/1"
    for r in refs:
        f = r.url.rsplit("/", 1)[-1]
        np.testing.assert_array_equal(io.open_image(r).values, expected[(r.well, f)])
    # a folder holding the plate lists its fields too
    assert len(io.open_collection(tmp_path)) == 4


def test_create_multiscale_chunk_aligned(tmp_path, ngff_version):
    arrays = io.create_multiscale(
        tmp_path / "u.zarr",
        shape=(1, 100, 90),
        dtype="float32",
        chunks=(32, 32),
        n_levels=2,
        ngff_version=ngff_version,
    )
    assert [a.shape for a in arrays] == [(1, 100, 90), (1, 50, 45)]
    assert arrays[0].chunks == (1, 32, 32)
    arrays[0][:, 32:64, 0:32] = 1.0  # one whole chunk
    arr = io.open_image(tmp_path / "u.zarr")
    assert float(arr.sum()) == 32 * 32
    with pytest.raises(FileExistsError):
        io.create_multiscale(tmp_path / "u.zarr", shape=(1, 10, 10), dtype="f4")


def test_pyramid_kernels():
    a = np.arange(15, dtype=np.uint16).reshape(3, 5)
    d = io.downsample_image(a)
    assert d.shape == (2, 3)
    assert d[0, 0] == round((0 + 1 + 5 + 6) / 4)
    assert d[1, 2] == 14  # odd corner: edge-padded, so the mean of 14 repeated
    assert io.level_shapes((1, 5, 7), 3) == [(1, 5, 7), (1, 3, 4), (1, 2, 2)]
    assert [p.shape for p in io.build_pyramid(np.zeros((9, 9), np.uint8), 3, labels=True)] == [
        (9, 9),
        (5, 5),
        (3, 3),
    ]


def test_remote_url_without_backend_is_clear():
    with pytest.raises(ValueError, match="nosuchproto://bucket/image.zarr"):
        io.open_image("nosuchproto://bucket/image.zarr")


def test_memory_url_fsspec(image_cyx):
    """fsspec URLs go through FsspecStore (memory:// needs no extra backend)."""
    pytest.importorskip("fsspec")
    url = "memory://scaleseg-test/img.zarr"
    io.write_image(url, image_cyx, chunks=(32, 32), n_levels=2, overwrite=True)
    # memory:// lives in this process only: compute here, not on a cluster a test left around
    np.testing.assert_array_equal(io.open_image(url).compute(scheduler="sync").values, image_cyx)
    assert io.open_collection("memory://scaleseg-test")[0].name == "img"
    json.dumps(io.image_info(url))
