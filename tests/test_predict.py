"""`scaleseg predict`: blocked vs whole image, resume, bad inputs, plates, the lazy API."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_qa import tree_digest

from scaleseg import io
from scaleseg.cli import main
from scaleseg.inference import predict_collection, read_ensemble
from scaleseg.inference import predict_lazy as predict


def _opts(block, chunks=(32, 32), tta="flips"):
    from scaleseg.config import PredictConfig

    return PredictConfig(
        tile_shape=(64, 64), tta=tta, batch_size=4, block_shape=tuple(block),
        chunks=tuple(chunks), probabilities_dtype="float32",
    )  # fmt: skip


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred") / "col"
    rng = np.random.default_rng(0)
    for name, shape in (("a", (131, 97)), ("b", (64, 150))):
        img = (rng.random((1, *shape)) * 6000).astype(np.uint16)
        io.write_image(root / f"{name}.zarr", img, chunks=(40, 40), n_levels=2)
    return root


def _read_outputs(out, name):
    url = out / "images" / f"{name}.zarr"
    return (
        io.open_image(url).values,
        io.open_image(url / "probabilities").values,
        io.open_labels(url, "semantic").values,
    )


def test_blocked_equals_whole_image(collection, tiny_ensemble, tmp_path):
    info = read_ensemble(tiny_ensemble)
    refs = io.open_collection(collection)
    whole = predict_collection(
        refs, info, tmp_path / "whole", config=_opts((4096, 4096), chunks=(256, 256))
    )
    blocked = predict_collection(
        refs, info, tmp_path / "blocked", config=_opts((64, 64), chunks=(64, 64))
    )
    assert (blocked["images"]["n_blocks"] > 1).all() and (whole["images"]["n_blocks"] == 1).all()
    for name in ("a", "b"):
        uw, pw, lw = _read_outputs(tmp_path / "whole", name)
        ub, pb, lb = _read_outputs(tmp_path / "blocked", name)
        np.testing.assert_array_equal(lb, lw)
        np.testing.assert_allclose(pb, pw, atol=1e-5)
        np.testing.assert_allclose(ub, uw, atol=1e-5)
    tw = whole["images"].set_index("image")
    tb = blocked["images"].set_index("image")
    np.testing.assert_allclose(tb.loc[["a", "b"], "U"], tw.loc[["a", "b"], "U"], atol=1e-6)
    # lower pyramid levels written block by block equal the whole-image pyramid
    url_b = tmp_path / "blocked" / "images" / "a.zarr"
    url_w = tmp_path / "whole" / "images" / "a.zarr"
    np.testing.assert_array_equal(
        io.open_labels(url_b, "semantic", level=1).values,
        io.open_labels(url_w, "semantic", level=1).values,
    )


def test_per_image_scaling_blocked_equals_whole_and_ignores_gain(collection, tmp_path):
    """An ensemble with per-image percentile scaling: every block of an image uses the whole
    image's percentiles (blocked == whole), and an image recorded 3x brighter with an offset
    gives the same prediction."""
    from conftest import make_random_ensemble

    ens = make_random_ensemble(
        tmp_path / "ens", normalization={"mean": [0.2], "std": [0.25], "percentiles": [1.0, 99.8]}
    )
    info = read_ensemble(ens)
    a = io.open_image(collection / "a.zarr").values
    col = tmp_path / "col"
    io.write_image(col / "a.zarr", a, chunks=(40, 40), n_levels=1)
    io.write_image(col / "a_bright.zarr", a * 3 + 500, chunks=(40, 40), n_levels=1)
    refs = io.open_collection(col)
    predict_collection(refs, info, tmp_path / "whole", config=_opts((4096, 4096)))
    blocked = predict_collection(refs, info, tmp_path / "blocked", config=_opts((64, 64)))
    assert (blocked["images"]["n_blocks"] > 1).all()
    uw, pw, lw = _read_outputs(tmp_path / "whole", "a")
    for out, name in (("blocked", "a"), ("whole", "a_bright"), ("blocked", "a_bright")):
        u, p, lab = _read_outputs(tmp_path / out, name)
        np.testing.assert_array_equal(lab, lw)
        np.testing.assert_allclose(p, pw, atol=1e-5)
        np.testing.assert_allclose(u, uw, atol=1e-5)
    assert np.unique(lw).size == 2  # a real two-class prediction, not a constant one


def test_image_smaller_than_the_tile_equals_its_reflected_padding(tiny_ensemble, tmp_path):
    """A 40 x 50 image with a 64 x 64 tile is one window filled by mirror reflection: the same
    as predicting the image padded with ``np.pad(mode="reflect")`` and cropping."""
    rng = np.random.default_rng(4)
    small = (rng.random((1, 40, 50)) * 6000).astype(np.uint16)
    padded = np.pad(small, ((0, 0), (0, 24), (0, 14)), mode="reflect")
    col = tmp_path / "col"
    io.write_image(col / "small.zarr", small, chunks=(32, 32), n_levels=1)
    io.write_image(col / "padded.zarr", padded, chunks=(32, 32), n_levels=1)
    info = read_ensemble(tiny_ensemble)
    res = predict_collection(
        io.open_collection(col), info, tmp_path / "out", config=_opts((64, 64))
    )
    assert (res["images"]["status"] == "ok").all()
    us, ps, ls = _read_outputs(tmp_path / "out", "small")
    up, pp, lp = _read_outputs(tmp_path / "out", "padded")
    assert ls.shape == (40, 50)
    np.testing.assert_array_equal(ls, lp[:40, :50])
    np.testing.assert_allclose(ps, pp[:, :40, :50], atol=1e-5)
    np.testing.assert_allclose(us, up[:, :40, :50], atol=1e-5)


def test_lazy_api_matches_batch(collection, tiny_ensemble, tmp_path):
    info = read_ensemble(tiny_ensemble)
    ref = io.open_collection(collection / "a.zarr")[0]
    res = predict_collection([ref], info, tmp_path / "o", config=_opts((64, 64)))
    ds = predict(collection / "a.zarr", tiny_ensemble, block_shape=(48, 48), tile_shape=(64, 64))
    assert ds.labels.dims == ("y", "x") and ds.probabilities.shape == (2, 131, 97)
    u, _, labels = _read_outputs(tmp_path / "o", "a")
    np.testing.assert_array_equal(ds.labels.values, labels)
    np.testing.assert_allclose(ds.uncertainty.values, u[0], atol=1e-5)
    assert float(ds.U) == pytest.approx(res["images"]["U"].iloc[0], abs=1e-6)
    tree = predict(collection, tiny_ensemble)
    assert set(tree.children) == {"a", "b"}
    assert np.isfinite(float(tree["b"].ds.U)) or tree["b"].ds.labels.values.max() == 0


def test_default_window_is_the_scaled_tile_fitted_to_each_image(collection, tiny_ensemble,
                                                               tmp_path):  # fmt: skip
    """tile_shape None: the ensemble's 64² tile times tile_scale 2, cut to what each image needs
    (a: 131 x 97 -> 128 x 128; b: 64 x 150 -> 64 x 128), recorded per image, and equal to an
    explicit run with that window."""
    info = read_ensemble(tiny_ensemble)
    refs = io.open_collection(collection)
    auto = _opts((48, 48)).model_copy(update={"tile_shape": None, "tile_scale": 2})
    res = predict_collection(refs, info, tmp_path / "auto", config=auto)
    windows = res["images"].set_index("image")["window"].to_dict()
    assert windows == {"a": "128x128", "b": "64x128"}
    for name, window in (("a", (128, 128)), ("b", (64, 128))):
        ref = [r for r in refs if r.name == name]
        explicit = _opts((48, 48)).model_copy(update={"tile_shape": window})
        predict_collection(ref, info, tmp_path / f"explicit_{name}", config=explicit)
        got, want = (
            _read_outputs(tmp_path / "auto", name),
            _read_outputs(tmp_path / f"explicit_{name}", name),
        )
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_array_equal(got[0], want[0])
    one = _opts((48, 48)).model_copy(update={"tile_shape": None, "tile_scale": 1})
    res1 = predict_collection(refs, info, tmp_path / "scale1", config=one)
    assert set(res1["images"]["window"]) == {"64x64"}


def test_cli_bad_images_recorded_rest_complete(tmp_path, tiny_ensemble, capsys):
    col = tmp_path / "col"
    rng = np.random.default_rng(1)
    io.write_image(col / "good.zarr", (rng.random((1, 80, 80)) * 200).astype(np.uint8), n_levels=1)
    io.write_image(col / "rgb.zarr", rng.integers(0, 255, (3, 80, 80), dtype=np.uint8), n_levels=1)
    io.write_image(col / "tiny.zarr", rng.integers(0, 255, (1, 20, 20), dtype=np.uint8), n_levels=1)
    nan = rng.random((1, 80, 80)).astype(np.float32)
    nan[0, 5, 5] = np.nan
    io.write_image(col / "nan.zarr", nan, n_levels=1)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--ensemble",
            str(tiny_ensemble),
            "--input",
            str(col),
            "--output",
            str(out),
            "--chunks",
            "32",
            "32",
            "--block",
            "64",
            "64",
        ]
    )
    assert rc == 3
    table = pd.read_parquet(out / "images.parquet").set_index("image")
    assert table.loc["good", "status"] == "ok" and table.loc["good", "rank"] == 1
    assert "3 channel(s), the ensemble expects 1" in table.loc["rgb", "error"]
    assert table.loc["tiny", "status"] == "ok"  # smaller than the tile: reflected into one window
    assert "NaN or infinite" in table.loc["nan", "error"]
    assert (out / "images.csv").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["failed"] == 2 and len(run["models"]) == 2


def test_resume_and_rerun(collection, tiny_ensemble, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "predict",
        "--ensemble",
        str(tiny_ensemble),
        "--input",
        str(collection),
        "--output",
        str(out),
        "--chunks",
        "32",
        "32",
        "--block",
        "64",
        "64",
        "--tta",
        "none",
    ]
    assert main(argv) == 0
    first = _read_outputs(out, "a")
    table1 = pd.read_parquet(out / "images.parquet")
    # the run's unit records are one compacted log, not a file per unit
    assert [p.name for p in (out / "manifest").iterdir()] == ["units.jsonl"]
    # simulate an interrupted run: some units never finished (no record; the last one cut
    # mid-line by a kill)
    log = out / "manifest" / "units.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    units = [ln for ln in lines if '"block"' in ln and '"image":"a"' in ln]
    dropped = units[::2]
    kept = [ln for ln in lines if ln not in dropped]
    log.write_text("".join(kept) + dropped[-1][: len(dropped[-1]) // 2])
    (out / "complete").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{len(dropped)} units run" in capsys.readouterr().out
    for x, y in zip(first, _read_outputs(out, "a")):
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(
        table1.drop(columns=[c for c in table1 if c.startswith("seconds")]),
        pd.read_parquet(out / "images.parquet").drop(
            columns=[c for c in table1 if c.startswith("seconds")]
        ),
    )
    assert main(argv) == 0  # finished, same request: nothing runs
    assert "(0 units run," in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] and [p["status"] for p in run["previous"]] == ["ok", "ok"]
    # an execution setting (batch size) may change: still the same prediction, nothing to do
    assert main([*argv, "--batch-size", "3"]) == 0
    assert "(0 units run," in capsys.readouterr().out
    spec = json.loads((out / "run_spec.json").read_text())
    assert "batch_size" not in spec["config"] and "retries" not in spec["config"]
    # other settings on the same output: refused with the difference, nothing touched
    before = tree_digest(out)
    assert main([*argv[:-2], "--tta", "flips"]) == 1
    err = capsys.readouterr().err
    assert "config.tta: 'none' -> 'flips'" in err and "--overwrite" in err
    assert tree_digest(out) == before


def test_corrupt_weights_and_foreign_output(collection, tiny_ensemble, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ensemble, bad)
    w = bad / "fold_1" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100] + b"x" * 100)
    rc = main(
        [
            "predict",
            "--ensemble",
            str(bad),
            "--input",
            str(collection),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 1 and "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    rc = main(
        [
            "predict",
            "--ensemble",
            str(tiny_ensemble),
            "--input",
            str(collection),
            "--output",
            str(foreign),
        ]
    )
    assert rc == 1 and "was not written by scaleseg" in capsys.readouterr().err
    assert (foreign / "mine.txt").read_text() == "keep"
    plain = tmp_path / "plain.zarr"
    import zarr

    zarr.open_group(str(plain), mode="w")
    rc = main(
        [
            "predict",
            "--ensemble",
            str(tiny_ensemble),
            "--input",
            str(plain),
            "--output",
            str(tmp_path / "p"),
        ]
    )
    assert rc == 1 and "no OME-Zarr images" in capsys.readouterr().err


def test_on_cluster_and_plate(tmp_path, tiny_ensemble, client):
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    store = parse_url(str(tmp_path / "plate.zarr"), mode="w", fmt=FormatV04()).store
    plate = zarr.open_group(store, mode="w", zarr_format=2)
    write_plate_metadata(plate, ["A"], ["1"], ["A/1"], fmt=FormatV04())
    well = plate.require_group("A").require_group("1")
    write_well_metadata(well, [{"path": "0"}, {"path": "1"}], fmt=FormatV04())
    rng = np.random.default_rng(2)
    for f in ("0", "1"):
        write_image(
            rng.integers(0, 255, (1, 70, 70), dtype=np.uint8),
            well.require_group(f),
            axes="cyx",
            fmt=FormatV04(),
            storage_options={"chunks": (1, 70, 70)},
        )
    refs = io.open_collection(tmp_path / "plate.zarr")
    info = read_ensemble(tiny_ensemble)
    local = predict_collection(refs, info, tmp_path / "local", config=_opts((64, 64)))
    dist = predict_collection(refs, info, tmp_path / "dist", config=_opts((64, 64)), client=client)
    assert list(dist["images"]["status"]) == ["ok", "ok"]
    np.testing.assert_allclose(dist["images"]["U"], local["images"]["U"], atol=1e-6)
    for r in refs:
        np.testing.assert_array_equal(
            _read_outputs(tmp_path / "dist", r.name)[2],
            _read_outputs(tmp_path / "local", r.name)[2],
        )


def test_cli_predict_with_instances(collection, tiny_ensemble, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--ensemble",
            str(tiny_ensemble),
            "--input",
            str(collection),
            "--output",
            str(out),
            "--tta",
            "none",
            "--instances",
            "components",
            "--min-size",
            "3",
        ]
    )
    assert rc == 0
    assert "instances in 2 images" in capsys.readouterr().out
    table = pd.read_parquet(out / "images.parquet").merge(
        pd.read_parquet(out / "instances_images.parquet"), on="image"
    )  # the instance stage adds its own per-image table; predict's stays as predict wrote it
    assert (table["instance_method"] == "components").all()
    inst = pd.read_parquet(out / "instances")  # one part per image
    assert (inst["area"] >= 3).all()
    assert table["n_instances"].sum() == len(inst)


def _files(url) -> list[str]:
    from pathlib import Path

    return sorted(str(p.relative_to(url)) for p in Path(url).rglob("*") if p.is_file())


def test_sharded_outputs_keep_the_file_count_and_read_alike(tiny_ensemble, tmp_path):
    """NGFF 0.5 outputs are sharded by the work unit's block: a 1024² image with 256² chunks has
    as many files as a 256² image (one shard per array and level), the chunk grid is unchanged,
    and zarr, ome-zarr-py and scaleseg's lazy reader read the same pixels. NGFF 0.4 outputs stay
    unsharded (one file per chunk)."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    rng = np.random.default_rng(8)
    col = tmp_path / "col"
    for name, side in (("small", 256), ("large", 1024)):
        img = (rng.random((1, side, side)) * 6000).astype(np.uint16)
        io.write_image(col / f"{name}.zarr", img, chunks=(256, 256), n_levels=1)
    refs = io.open_collection(col)
    info = read_ensemble(tiny_ensemble)
    cfg = _opts((2048, 2048), chunks=(256, 256), tta="none")
    predict_collection(refs, info, tmp_path / "v05", config=cfg)
    small, large = (_files(tmp_path / "v05" / "images" / f"{n}.zarr") for n in ("small", "large"))
    assert len(small) == len(large) and small == large  # same files, shards instead of chunks
    url = tmp_path / "v05" / "images" / "large.zarr"
    arr = zarr.open_array(url / "labels" / "semantic" / "s0", mode="r")
    assert arr.chunks == (256, 256) and arr.shards == (1024, 1024)
    node = next(iter(Reader(parse_url(str(url / "probabilities")))()))
    via_ome = np.asarray(node.data[0])
    via_zarr = zarr.open_array(url / "probabilities" / "s0", mode="r")[:]
    via_lazy = io.open_image(url / "probabilities").values
    np.testing.assert_array_equal(via_ome, via_zarr)
    np.testing.assert_array_equal(via_lazy, via_zarr)
    # a 4-block image: each unit owns its shards, blocked output equals the single-block one
    blocked = predict_collection(
        refs, info, tmp_path / "blocked", config=_opts((512, 512), chunks=(256, 256), tta="none")
    )
    assert blocked["images"].set_index("image").loc["large", "n_blocks"] == 4
    got = io.open_image(tmp_path / "blocked" / "images" / "large.zarr" / "probabilities").values
    np.testing.assert_allclose(got, via_zarr, atol=1e-6)
    sem = zarr.open_array(tmp_path / "blocked" / "images" / "large.zarr" / "labels/semantic/s1")
    assert sem.shards == (256, 256) and sem.chunks == (128, 128)  # halved with the level
    # NGFF 0.4 (zarr v2): unsharded, the large image has more files
    v04 = cfg.model_copy(update={"ngff_version": "0.4"})
    predict_collection(refs, info, tmp_path / "v04", config=v04)
    n04 = {n: len(_files(tmp_path / "v04" / "images" / f"{n}.zarr")) for n in ("small", "large")}
    assert n04["large"] > n04["small"]
