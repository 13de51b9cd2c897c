"""run.json: config, versions, git commit, host, inputs with cheap hashes, outputs, status."""

from __future__ import annotations

import json

import pytest

from scaleseg.config import RunConfig
from scaleseg.runrecord import RunRecord, cheap_hash, package_versions


def test_record_written(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    with RunRecord("convert", tmp_path / "out", config=RunConfig(), argv=["convert", "x"]) as rec:
        rec.add_input(tmp_path / "in.txt", name="images")
        rec.add_output(tmp_path / "out", name="collection")
        rec.set_summary(images=3)
    data = json.loads((tmp_path / "out" / "run.json").read_text())
    assert data["status"] == "ok" and data["command"] == "convert"
    assert data["config"]["train"]["encoder"] == "tu-convnext_tiny"
    assert data["inputs"]["images"]["bytes"] == 5
    for pkg in ("python", "dask", "zarr", "ome-zarr", "torch", "cellpose", "SimpleITK"):
        assert pkg in data["versions"]
    assert data["versions"]["zarr"] is not None
    assert data["summary"] == {"images": 3}
    assert data["host"]["hostname"]
    assert data["seconds"] >= 0 and data["finished"] >= data["started"]


def test_failure_never_touches_an_existing_folder(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "run.json").write_text("earlier run")
    with pytest.raises(RuntimeError):
        with RunRecord("convert", out):
            raise RuntimeError("boom")
    assert (out / "run.json").read_text() == "earlier run"


def test_failure_recorded_in_folder_it_created(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with RunRecord("predict", out):
            out.mkdir()
            raise RuntimeError("boom")
    data = json.loads((out / "run.json").read_text())
    assert data["status"] == "failed" and "boom" in data["error"]


def test_cheap_hash_changes_with_content(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"a" * 100)
    h1 = cheap_hash(f)
    f.write_bytes(b"b" * 100)
    assert cheap_hash(f)["blake2b"] != h1["blake2b"]
    d = tmp_path / "d"
    d.mkdir()
    (d / "zarr.json").write_text("{}")
    h2 = cheap_hash(d)
    (d / "zarr.json").write_text('{"a": 1}')
    assert cheap_hash(d)["blake2b"] != h2["blake2b"]


def test_package_versions_missing_is_none():
    v = package_versions(("numpy", "surely-not-installed-pkg"))
    assert v["numpy"] and v["surely-not-installed-pkg"] is None
