"""The CLI, called in-process through main(argv)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from scaleseg import io
from scaleseg.cli import main


def test_help_lists_only_working_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("convert", "demo-data", "info", "config"):
        assert cmd in out


def test_config_show_validate_export(tmp_path, capsys):
    assert main(["config", "show", "--stage", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["encoder"] == "tu-convnext_tiny"
    assert main(["config", "export", str(tmp_path / "c.json")]) == 0
    assert main(["config", "validate", str(tmp_path / "c.json")]) == 0
    assert main(["config", "export", str(tmp_path / "c.json")]) == 1  # exists, no --overwrite
    (tmp_path / "bad.json").write_text(json.dumps({"train": {"lr": -1}}))
    capsys.readouterr()
    assert main(["config", "validate", str(tmp_path / "bad.json")]) == 1
    assert "train.lr" in capsys.readouterr().err


def test_demo_data_info_and_run_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--images", "3", "--ood", "2", "--size", "64", "80"]) == 0
    refs = io.open_collection(out / "images")
    assert len(refs) == 5
    assert "truth" in io.list_labels(refs[0])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["summary"]["images"] == 5
    capsys.readouterr()
    assert main(["info", str(out / "images")]) == 0
    text = capsys.readouterr().out
    assert "5 image(s)" in text and "1x64x80" in text and "expert_1" in text
    assert main(["info", str(refs[0].url), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["shape"] == [1, 64, 80]
    # the archive is deterministic
    assert (
        main(
            [
                "demo-data",
                str(tmp_path / "again"),
                "--images",
                "3",
                "--ood",
                "2",
                "--size",
                "64",
                "80",
            ]
        )
        == 0
    )
    a = io.open_image(out / "images" / "syn_0001.zarr").values
    b = io.open_image(tmp_path / "again" / "images" / "syn_0001.zarr").values
    np.testing.assert_array_equal(a, b)


def test_existing_output_is_an_error_not_a_loss(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    assert main(["demo-data", str(out), "--images", "1", "--ood", "0"]) == 1
    assert "was not written by scaleseg" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep"
    assert not (out / "run.json").exists()


def test_convert_cli(tmp_path, capsys, rng):
    (tmp_path / "img").mkdir()
    (tmp_path / "masks" / "e1").mkdir(parents=True)
    img = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    iio.imwrite(tmp_path / "img" / "a.png", img)
    iio.imwrite(tmp_path / "masks" / "e1" / "a.png", (img > 100).astype(np.uint8) * 255)
    out = tmp_path / "col"
    rc = main(
        [
            "convert",
            str(tmp_path / "img"),
            str(out),
            "--masks",
            str(tmp_path / "masks"),
            "--chunks",
            "16",
            "16",
            "--levels",
            "2",
            "--ngff",
            "0.4",
        ]
    )
    assert rc == 0
    assert "Wrote 1 images" in capsys.readouterr().out
    info = io.image_info(out / "a.zarr")
    assert info["ngff_version"] == "0.4" and info["chunks"] == [1, 16, 16]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["chunks"] == [16, 16]
    assert run["inputs"]["images"]["files"] == 1


def test_convert_bad_input_exit_code(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(b"garbage")
    assert main(["convert", str(tmp_path / "img"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "x.png" in err and "unreadable" in err
    assert not (tmp_path / "out").exists()


def test_info_on_non_ome_zarr(tmp_path, capsys):
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    assert main(["info", str(tmp_path / "plain.zarr")]) == 1
    assert "no OME-Zarr images" in capsys.readouterr().err


def test_cluster_flags_and_performance_report(tmp_path, capsys):
    report = tmp_path / "report.html"
    rc = main(
        [
            "demo-data",
            str(tmp_path / "demo"),
            "--images",
            "2",
            "--ood",
            "0",
            "--size",
            "48",
            "48",
            "--cluster",
            "local",
            "--workers",
            "1",
            "--performance-report",
            str(report),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "dashboard: http" in out and "performance report" in out
    assert "Dask Performance Report" in report.read_text()
