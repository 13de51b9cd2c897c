"""Bad inputs: a clear error naming the input, a non-zero exit code, existing outputs untouched,
inputs never modified; and the security rules (no code from weights or configs, safe names)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from scaleseg import io
from scaleseg.cli import main


def tree_digest(root: Path) -> str:
    """One hash over every file's path, bytes and mode below ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mode).encode())
    return h.hexdigest()


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _zarr_json(image: Path) -> tuple[Path, dict]:
    path = image / "zarr.json"
    return path, json.loads(path.read_text())


# -- predict over a collection of bad images ---------------------------------------------------


@pytest.fixture(scope="module")
def bad_collection(tmp_path_factory):
    """One good image and one of every kind of bad image (all pass `open_collection`)."""
    root = tmp_path_factory.mktemp("bad") / "col"
    rng = np.random.default_rng(0)
    io.write_image(
        root / "good.zarr", rng.integers(0, 255, (1, 64, 64), dtype=np.uint8), n_levels=1
    )
    io.write_image(
        root / "u16.zarr", rng.integers(0, 65535, (1, 64, 64), dtype=np.uint16), n_levels=1
    )
    io.write_image(root / "f32.zarr", rng.random((1, 64, 64), dtype=np.float32), n_levels=1)
    io.write_image(root / "rgb.zarr", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8), n_levels=1)
    io.write_image(
        root / "tiny.zarr", rng.integers(0, 255, (1, 20, 20), dtype=np.uint8), n_levels=1
    )
    nan = rng.random((1, 64, 64), dtype=np.float32)
    nan[0, 3, 4] = np.nan
    io.write_image(root / "nan.zarr", nan, n_levels=1)
    inf = rng.random((1, 64, 64), dtype=np.float32)
    inf[0, 60, 9] = np.inf
    io.write_image(root / "inf.zarr", inf, n_levels=1)
    io.write_image(
        root / "zstack.zarr", rng.integers(0, 255, (1, 3, 64, 64), dtype=np.uint8), axes="czyx",
        n_levels=1,
    )  # fmt: skip
    # metadata says c, y, x but the array is 4-D
    io.write_image(
        root / "dims.zarr", rng.integers(0, 255, (1, 1, 64, 64), dtype=np.uint8), axes="czyx",
        n_levels=1,
    )  # fmt: skip
    path, meta = _zarr_json(root / "dims.zarr")
    ms = meta["attributes"]["ome"]["multiscales"][0]
    ms["axes"] = [a for a in ms["axes"] if a["name"] != "z"]
    for ds in ms["datasets"]:
        for tr in ds["coordinateTransformations"]:
            key = tr["type"]
            tr[key] = tr[key][:1] + tr[key][2:]
    path.write_text(json.dumps(meta))
    # an axis name outside t, c, z, y, x
    io.write_image(
        root / "axes.zarr", rng.integers(0, 255, (1, 64, 64), dtype=np.uint8), n_levels=1
    )
    path, meta = _zarr_json(root / "axes.zarr")
    meta["attributes"]["ome"]["multiscales"][0]["axes"][0]["name"] = "q"
    path.write_text(json.dumps(meta))
    # truncated chunk: valid metadata, unreadable pixels
    io.write_image(
        root / "truncated.zarr", rng.integers(0, 255, (1, 64, 64), dtype=np.uint8),
        chunks=(40, 40), n_levels=1,
    )  # fmt: skip
    chunk = next(
        p for p in sorted((root / "truncated.zarr" / "s0" / "c").rglob("*")) if p.is_file()
    )
    chunk.write_bytes(chunk.read_bytes()[: max(1, chunk.stat().st_size // 3)])
    return root


EXPECTED_PREDICT = {
    "good": None,
    "u16": None,
    "f32": None,
    "rgb": "3 channel(s), the ensemble expects 1",
    "tiny": None,  # smaller than the tile: one window filled by mirror reflection
    "nan": "image contains NaN or infinite pixels",
    "inf": "image contains NaN or infinite pixels",
    "zstack": "axis 'z' has size 3; only 2-D images",
    "dims": "array has 4 dimensions but the metadata names 3 axes",
    "axes": "unknown axes ['q']",
    "truncated": "Error",  # the codec's own message, recorded per image
}


def test_predict_bad_images_fail_alone_and_are_named(
    bad_collection, tiny_ensemble, client, tmp_path, capsys
):
    before = tree_digest(bad_collection)
    out = tmp_path / "pred"
    rc, stdout, _ = run_cli(
        ["predict", "--ensemble", tiny_ensemble, "--input", bad_collection, "--output", out,
         "--chunks", "32", "32", "--block", "64", "64", "--tta", "none",
         "--scheduler", client.scheduler.address],
        capsys,
    )  # fmt: skip
    assert rc == 3  # some images failed
    table = pd.read_parquet(out / "images.parquet").set_index("image")
    assert set(table.index) == set(EXPECTED_PREDICT)
    for name, message in EXPECTED_PREDICT.items():
        row = table.loc[name]
        if message is None:
            assert row["status"] == "ok", (name, row["error"])
            assert np.isfinite(row["U"]) or row["U_reason"]
        else:
            assert row["status"] == "failed", name
            assert message in row["error"], (name, row["error"])
            assert f"failed {name}: " in stdout
            if name != "truncated":  # the codec's message; the row and the line name the image
                assert name in row["error"], (name, row["error"])
    assert tree_digest(bad_collection) == before  # inputs opened read-only
    assert not (out / "complete").exists()


# -- weights and the ensemble manifest ---------------------------------------------------------


@pytest.fixture
def ens_copy(tiny_ensemble, tmp_path):
    dst = tmp_path / "ens"
    shutil.copytree(tiny_ensemble, dst)
    return dst


def _predict_cmd(ens, col, out):
    return ["predict", "--ensemble", ens, "--input", col, "--output", out, "--cluster", "local"]


def _one_image(tmp_path) -> Path:
    col = tmp_path / "one"
    io.write_image(col / "a.zarr", np.zeros((1, 64, 64), np.uint8), n_levels=1)
    return col


def _tamper(ens: Path) -> str:
    w = ens / "fold_1" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-64] + b"\x01" * 64)
    return "checksum mismatch"


def _missing(ens: Path) -> str:
    (ens / "fold_0" / "weights.safetensors").unlink()
    return "weight file missing"


def _bad_manifest(ens: Path) -> str:
    (ens / "ensemble.json").write_text('{"model": ')
    return "invalid ensemble manifest"


def _no_manifest(ens: Path) -> str:
    (ens / "ensemble.json").unlink()
    return "not an ensemble directory"


def _manifest_without_folds(ens: Path) -> str:
    m = json.loads((ens / "ensemble.json").read_text())
    m["folds"] = []
    (ens / "ensemble.json").write_text(json.dumps(m))
    return "the ensemble has no folds"


@pytest.mark.parametrize(
    "breakage", [_tamper, _missing, _bad_manifest, _no_manifest, _manifest_without_folds]
)
def test_bad_ensembles_stop_before_any_work(breakage, ens_copy, tmp_path, capsys):
    message = breakage(ens_copy)
    out = tmp_path / "out"
    rc, _, err = run_cli(_predict_cmd(ens_copy, _one_image(tmp_path), out), capsys)
    assert rc == 1 and message in err
    assert str(ens_copy) in err  # names the file or folder
    assert not out.exists()  # stopped before creating anything (or starting a cluster)


def test_truncated_weights_with_a_matching_checksum_are_unreadable(ens_copy):
    """A file cut short *and* re-listed in ensemble.json passes the checksum, not the header
    check on the driver (before any work is sent out), nor the loader."""
    from scaleseg.inference import get_models, read_ensemble, verify_ensemble
    from scaleseg.models import WeightsError, file_sha256

    w = ens_copy / "fold_0" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    m = json.loads((ens_copy / "ensemble.json").read_text())
    m["folds"][0]["sha256"] = file_sha256(w)
    (ens_copy / "ensemble.json").write_text(json.dumps(m))
    info = read_ensemble(ens_copy)
    with pytest.raises(WeightsError, match=r"weights\.safetensors: not a readable safetensors"):
        verify_ensemble(info)
    with pytest.raises(WeightsError, match=r"weights\.safetensors"):
        get_models(info, "cpu")


class _Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickled_weights_cannot_run_code(tmp_path):
    """torch checkpoints load with weights_only=True: a pickle with a payload is refused."""
    import torch

    from scaleseg.models import ModelSpec, WeightsError, build_model, load_weights

    marker = tmp_path / "pwned"
    payload = _Exploit()
    payload.marker = marker
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": payload}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    model = build_model(
        ModelSpec.from_dict(
            {"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2,
             "n_extra": 0, "encoder_weights": None}
        )
    )  # fmt: skip
    with pytest.raises(WeightsError, match=str(evil)):
        load_weights(model, evil)
    assert not marker.exists()


# -- existing outputs and unwritable locations -------------------------------------------------


def test_existing_outputs_are_never_replaced(tmp_path, tiny_ensemble, capsys):
    import tifffile

    col = _one_image(tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    tifffile.imwrite(files / "x.tif", np.zeros((32, 32), np.uint8))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    digest = tree_digest(foreign)
    cases = [
        _predict_cmd(tiny_ensemble, col, foreign),
        ["train", col, foreign, "--label", "truth"],
        ["convert", files, foreign],
        ["gt", col, foreign],
        ["evaluate", col, col, "-o", foreign, "--pred-label", "truth", "--ref-label", "truth"],
        ["demo-data", foreign],
    ]
    message = "was not written by scaleseg"
    for argv in cases:
        for extra in ([], ["--overwrite"]):  # a foreign folder is refused even with --overwrite
            rc, _, err = run_cli([*argv, *extra], capsys)
            assert rc == 1, (argv[0], extra, err)
            assert message in err and str(foreign) in err and "keep.txt" in err, (argv[0], err)
            assert tree_digest(foreign) == digest, (argv[0], extra)


@pytest.mark.parametrize(
    "where",
    [
        "read-only",
        "under-a-file",
    ],
)
def test_unwritable_output_location(where, tmp_path, tiny_ensemble, capsys):
    col = _one_image(tmp_path)
    if where == "read-only":
        out = Path("/sys/scaleseg-test-output")  # sysfs refuses new entries, even for root
        if not Path("/sys").is_dir():
            pytest.skip("no /sys")
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        out = blocker / "out"
    for argv in (
        _predict_cmd(tiny_ensemble, col, out),
        ["demo-data", out, "--images", "1", "--ood", "0", "--size", "32", "32"],
    ):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 1, (argv[0], err)
        assert str(out) in err or str(out.parent) in err, err
    assert not out.exists()


# -- labels: missing groups, unexpected values, shape mismatches -------------------------------


@pytest.fixture
def labelled(tmp_path):
    col = tmp_path / "lab"
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c", "d"):
        url = io.write_image(
            col / f"{name}.zarr", rng.integers(0, 255, (1, 96, 96), np.uint8), n_levels=1
        )
        lab = np.zeros((96, 96), np.uint8)
        lab[20:60, 30:70] = 1
        io.write_labels(url, "truth", lab, n_levels=1)
    return col


def _train_cmd(col, out, *extra):
    return [
        "train", col, out, "--encoder", "tu-resnet10t", "--encoder-weights", "none",
        "--folds", "2", "--epochs", "1", "--frozen-epochs", "0", "--tile", "64", "64",
        "--tiles-per-epoch", "4", *extra,
    ]  # fmt: skip


def test_missing_label_group(labelled, tmp_path, capsys):
    before = tree_digest(labelled)
    rc, _, err = run_cli(_train_cmd(labelled, tmp_path / "ens", "--label", "nope"), capsys)
    assert rc == 1 and "has no label image 'nope' (found: truth)" in err
    assert "a.zarr" in err and not (tmp_path / "ens").exists()
    rc, _, err = run_cli(
        ["evaluate", labelled, labelled, "-o", tmp_path / "ev", "--pred-label", "nope",
         "--ref-label", "truth"],
        capsys,
    )  # fmt: skip
    assert rc == 1 and "nope" in err and not (tmp_path / "ev").exists()
    assert tree_digest(labelled) == before


def _nan_image(col: Path) -> str:
    img = np.random.default_rng(2).random((1, 96, 96), dtype=np.float32)
    img[0, 5, 5] = np.nan
    url = io.write_image(col / "b.zarr", img, n_levels=1, overwrite=True)
    io.write_labels(url, "truth", np.ones((96, 96), np.uint8), n_levels=1)
    return "NaN"


def _tiny_image(col: Path) -> str:
    url = io.write_image(
        col / "b.zarr", np.zeros((1, 20, 20), np.uint8), n_levels=1, overwrite=True
    )
    io.write_labels(url, "truth", np.ones((20, 20), np.uint8), n_levels=1)
    return "20"


def _shape_mismatch(col: Path) -> str:
    # write_labels refuses a mismatch, so build it by hand: another image's label group
    small = io.write_image(col.parent / "small.zarr", np.zeros((1, 48, 96), np.uint8), n_levels=1)
    io.write_labels(small, "truth", np.ones((48, 96), np.uint8), n_levels=1)
    shutil.rmtree(col / "b.zarr" / "labels" / "truth")
    shutil.copytree(Path(small) / "labels" / "truth", col / "b.zarr" / "labels" / "truth")
    return "48"


def _label_values(col: Path) -> str:
    lab = np.zeros((96, 96), np.uint8)
    lab[10:30, 10:30] = 7  # 2 classes (0, 1) configured
    io.write_labels(col / "b.zarr", "truth", lab, n_levels=1, overwrite=True)
    return "7"


@pytest.mark.parametrize(
    "breakage",
    [
        _shape_mismatch,
        _label_values,
        _nan_image,
    ],
    ids=["shape-mismatch", "label-values", "nan"],
)
def test_train_bad_items(breakage, labelled, tmp_path, client, capsys):
    needle = breakage(labelled)
    before = tree_digest(labelled)
    out = tmp_path / "ens"
    argv = _train_cmd(labelled, out, "--label", "truth", "--scheduler", client.scheduler.address)
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1, err
    assert "b.zarr" in err and needle in err, err
    assert tree_digest(labelled) == before
    assert not (out / "ensemble.json").exists()


def test_train_image_smaller_than_a_tile_is_padded(labelled, tmp_path, client, capsys):
    """Unlike predict (which refuses), training pads small images; padded pixels are ignored."""
    _tiny_image(labelled)
    out = tmp_path / "ens"
    argv = _train_cmd(labelled, out, "--label", "truth", "--scheduler", client.scheduler.address)
    rc, _, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert len(json.loads((out / "ensemble.json").read_text())["folds"]) == 2


def test_evaluate_shape_mismatch(labelled, tmp_path, capsys):
    other = tmp_path / "other"
    for name in ("a", "b"):
        url = io.write_image(other / f"{name}.zarr", np.zeros((1, 50, 96), np.uint8), n_levels=1)
        io.write_labels(url, "truth", np.zeros((50, 96), np.uint8), n_levels=1)
    rc, _, err = run_cli(
        ["evaluate", other, labelled, "-o", tmp_path / "ev", "--pred-label", "truth",
         "--ref-label", "truth", "--no-experts"],
        capsys,
    )  # fmt: skip
    assert rc == 1, err
    assert "a" in err and "(50, 96)" in err and "(96, 96)" in err, err


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.full((32, 32), 0.5, np.float32), "non-integer mask values"),
        (np.zeros((16, 32), np.uint8), "shape"),
        (np.full((32, 32), -3, np.int16), "negative"),
    ],
    ids=["float-mask", "shape-mismatch", "negative"],
)
def test_convert_masks_with_unexpected_values(mask, message, tmp_path, capsys):
    import tifffile

    images = tmp_path / "images"
    masks = tmp_path / "masks" / "anna"
    images.mkdir()
    masks.mkdir(parents=True)
    tifffile.imwrite(images / "x.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(masks / "x.tif", mask)
    before = tree_digest(tmp_path)
    rc, _, err = run_cli(
        ["convert", images, tmp_path / "out", "--masks", tmp_path / "masks"], capsys
    )
    assert rc == 1, err
    assert "x.tif" in err and message in err, err
    assert not (tmp_path / "out").exists()
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    "dtype, channels", [("uint16", 1), ("float32", 1), ("uint8", 3)], ids=["16-bit", "float", "rgb"]
)
def test_convert_accepts_16bit_float_rgb(dtype, channels, tmp_path, capsys):
    import tifffile

    images = tmp_path / "images"
    images.mkdir()
    shape = (40, 40, 3) if channels == 3 else (40, 40)
    data = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    tifffile.imwrite(images / "x.tif", data, photometric="rgb" if channels == 3 else None)
    rc, _, err = run_cli(["convert", images, tmp_path / "out", "--levels", "1"], capsys)
    assert rc == 0, err
    img = io.open_image(tmp_path / "out" / "x.zarr")
    assert img.shape == (channels, 40, 40) and str(img.dtype) == dtype


def test_corrupt_metadata_is_named(tmp_path, capsys):
    col = tmp_path / "col"
    io.write_image(col / "a.zarr", np.zeros((1, 32, 32), np.uint8), n_levels=1)
    (col / "a.zarr" / "zarr.json").write_text("{not json")
    rc, _, err = run_cli(["info", col / "a.zarr"], capsys)
    assert rc == 1 and "a.zarr" in err and "cannot read zarr metadata" in err, err
    rc, _, err = run_cli(["info", tmp_path / "missing.zarr"], capsys)
    assert rc == 1 and "missing.zarr: no such file or directory" in err


# -- security ----------------------------------------------------------------------------------


def test_configs_cannot_name_python_callables(tmp_path, capsys):
    from scaleseg.config import ConfigError, RunConfig
    from scaleseg.models import ModelSpec, build_model

    for stage, values, key in [
        ("train", {"loss": "os.system"}, "loss"),
        ("train", {"optimizer": "torch.optim.SGD"}, "optimizer"),
        ("predict", {"tta": "builtins.eval"}, "tta"),
        ("gt", {"method": "subprocess.run"}, "method"),
    ]:
        path = tmp_path / f"{stage}-{key}.json"
        path.write_text(json.dumps({stage: values}))
        rc, _, err = run_cli(["config", "validate", path], capsys)
        assert rc == 1 and key in err, err
        with pytest.raises((ConfigError, ValueError)):
            RunConfig.model_validate({stage: values})
    with pytest.raises(ValueError, match="builtins.eval"):
        build_model(
            ModelSpec.from_dict(
                {"arch": "builtins.eval", "encoder": "tu-resnet10t", "in_channels": 1,
                 "n_classes": 2, "n_extra": 0, "encoder_weights": None}
            )
        )  # fmt: skip


def test_image_names_from_user_data_are_sanitised(tmp_path):
    col = tmp_path / "col"
    for name in ("my image;rm -rf ~.zarr", "..sneaky.zarr", "ü n i.zarr"):
        io.write_image(col / name, np.zeros((1, 32, 32), np.uint8), n_levels=1)
    names = {r.name for r in io.open_collection(col)}
    assert names == {"my_image_rm_-rf", "sneaky", "n_i"}
    for n in names:
        assert "/" not in n and not n.startswith(".") and Path(n).name == n
    from scaleseg.instances import sanitize_roi_name

    assert sanitize_roi_name("../../etc/passwd") == ".._.._etc_passwd"
    assert "/" not in sanitize_roi_name("a/b\\c:d")


def test_plate_paths_cannot_leave_the_plate(tmp_path):
    """Well and field paths come from plate metadata: ``..`` or absolute paths are refused."""
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    outside = tmp_path / "outside.zarr"
    io.write_image(outside, np.zeros((1, 32, 32), np.uint8), n_levels=1)
    store = parse_url(str(tmp_path / "plate.zarr"), mode="w", fmt=FormatV04()).store
    plate = zarr.open_group(store, mode="w", zarr_format=2)
    write_plate_metadata(plate, ["A"], ["1"], ["A/1"], fmt=FormatV04())
    well = plate.require_group("A").require_group("1")
    write_well_metadata(well, [{"path": "0"}], fmt=FormatV04())
    write_image(
        np.zeros((1, 32, 32), np.uint8), well.require_group("0"), axes="cyx", fmt=FormatV04()
    )
    assert len(io.open_collection(tmp_path / "plate.zarr")) == 1
    attrs = json.loads((tmp_path / "plate.zarr" / "A" / "1" / ".zattrs").read_text())
    attrs["well"]["images"][0]["path"] = "../../../outside.zarr"
    (tmp_path / "plate.zarr" / "A" / "1" / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(ValueError, match=r"plate\.zarr.*'\.\./\.\./\.\./outside\.zarr'"):
        io.open_collection(tmp_path / "plate.zarr")
