"""Instances in the same pass as prediction: a unit that predicts a whole image separates its
instances from the arrays it holds; the result equals the separate instance stage over the
stored outputs, resumes, and is never mixed with another instance request."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import scaleseg
from scaleseg import io
from scaleseg.config import InstancesConfig, PredictConfig
from scaleseg.instances import PASS_FILE, read_instances
from scaleseg.runs import OutputError
from scaleseg.unitlog import UnitLog

NAMES = ("p", "q", "r")  # p: 2 x 2 blocks (stitched after predict); q, r: one block each
COMPONENTS = InstancesConfig(method="components", min_size=0)
WATERSHED = InstancesConfig(method="watershed", min_size=0)


def _opts() -> PredictConfig:
    return PredictConfig(tile_shape=(64, 64), tta="none", batch_size=4, block_shape=(128, 128),
                         chunks=(32, 32))  # fmt: skip


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    col = tmp_path_factory.mktemp("pass") / "col"
    rng = np.random.default_rng(11)
    for name, shape in zip(NAMES, ((150, 133), (96, 96), (120, 64))):
        io.write_image(col / f"{name}.zarr", (rng.random((1, *shape)) * 255).astype(np.uint8),
                       chunks=(32, 32), n_levels=1)  # fmt: skip
    return col


@pytest.fixture(scope="module")
def separate(collection, tiny_ensemble, tmp_path_factory):
    """The reference: predict, then the instance stage over the stored outputs."""
    out = tmp_path_factory.mktemp("pass-sep") / "pred"
    scaleseg.predict(collection, tiny_ensemble, out, config=_opts(), progress=False)
    res = scaleseg.segment_instances(out, config=COMPONENTS, progress=False)
    assert res.in_pass == 0
    return out


def _labels(out, name, what="instances") -> np.ndarray:
    return io.open_labels(out / "images" / f"{name}.zarr", what).values


def _table(out) -> pd.DataFrame:
    return read_instances(out).sort_values(["image", "label"], ignore_index=True)


def assert_same_instances(out, ref) -> None:
    for name in NAMES:
        np.testing.assert_array_equal(_labels(out, name), _labels(ref, name), err_msg=name)
    pd.testing.assert_frame_equal(_table(out), _table(ref))
    per_image = [pd.read_parquet(o / "instances_images.parquet") for o in (out, ref)]
    pd.testing.assert_frame_equal(*per_image)


def _in_pass_records(out) -> dict:
    return {k[0]: r["instances"] for k, r in UnitLog(out / "manifest").read().items()
            if k[1] and "instances" in r}  # fmt: skip


def test_same_pass_equals_the_separate_stage(collection, tiny_ensemble, separate, tmp_path):
    out = tmp_path / "pred"
    res = scaleseg.predict(collection, tiny_ensemble, out, config=_opts(), instances=COMPONENTS,
                           progress=False)  # fmt: skip
    blocks = res.images.set_index("image")["n_blocks"]
    assert blocks["p"] == 4 and blocks["q"] == blocks["r"] == 1
    # q and r were separated by their predict unit, p after prediction (stitched)
    assert res.instances.in_pass == 2 and sorted(_in_pass_records(out)) == ["q", "r"]
    assert "2 of them in the prediction pass" in "\n".join(res.summary())
    record = json.loads((out / "run_instances.json").read_text())
    assert record["status"] == "ok" and record["summary"]["in_pass"] == 2
    assert _labels(out, "q").max() > 3
    assert_same_instances(out, separate)
    # the same array layout (chunks, shards, pyramid) as the stage writes
    for name in ("q", "p"):
        meta = [json.loads((o / "images" / f"{name}.zarr/labels/instances/s0/zarr.json")
                           .read_text()) for o in (out, separate)]  # fmt: skip
        assert meta[0] == meta[1]
    # the same request again: nothing runs, the instances are reused
    again = scaleseg.predict(collection, tiny_ensemble, out, config=_opts(),
                             instances=COMPONENTS, progress=False)  # fmt: skip
    assert again.units_run == 0 and again.instances.reused


def test_another_instance_request_is_refused_before_anything_runs(
    collection, tiny_ensemble, separate, tmp_path
):
    out = tmp_path / "pred"
    shutil.copytree(separate, out)
    # the copy's instance request names the original prediction folder: make it this one's
    spec = json.loads((out / "instances_spec.json").read_text())
    spec["inputs"]["prediction"] = str(out.resolve())
    (out / "instances_spec.json").write_text(json.dumps(spec))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(OutputError, match="config.method: 'components' -> 'watershed'"):
        scaleseg.predict(collection, tiny_ensemble, out, config=_opts(), instances=WATERSHED,
                         progress=False)  # fmt: skip
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # not even predict's record changed


def test_same_pass_resumes_after_a_failed_image(collection, tiny_ensemble, separate, tmp_path):
    col = tmp_path / "col"
    shutil.copytree(collection, col)
    chunk = next(p for p in sorted((col / "r.zarr" / "s0").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")  # fmt: skip
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 3)  # r's pixels cannot be read: its unit fails
    out = tmp_path / "pred"
    first = scaleseg.predict(col, tiny_ensemble, out, config=_opts(), instances=COMPONENTS,
                             progress=False)  # fmt: skip
    assert list(first.failed["image"]) == ["r"]
    assert first.instances is None and first.instances_waiting
    assert "Instances wait for the 1 failed image(s)" in "\n".join(first.summary())
    assert sorted(_in_pass_records(out)) == ["q"]  # kept for the re-run
    token = json.loads((out / PASS_FILE).read_text())["token"]
    chunk.write_bytes(good)
    second = scaleseg.predict(col, tiny_ensemble, out, config=_opts(), instances=COMPONENTS,
                              progress=False)  # fmt: skip
    assert second.units_run == 1 and second.failed.empty
    # q from the first pass, r from the second: both under the same request's token
    assert second.instances.in_pass == 2
    assert json.loads((out / PASS_FILE).read_text())["token"] == token
    assert {r["token"] for r in _in_pass_records(out).values()} == {token}
    assert_same_instances(out, separate)


def test_a_replaced_request_never_reuses_same_pass_results(
    collection, tiny_ensemble, separate, tmp_path, monkeypatch
):
    from scaleseg import executor

    out = tmp_path / "pred"
    scaleseg.predict(collection, tiny_ensemble, out, config=_opts(), instances=WATERSHED,
                     progress=False)  # fmt: skip
    water = pd.read_parquet(out / "instances_images.parquet").set_index("image")["n_instances"]
    want = pd.read_parquet(separate / "instances_images.parquet").set_index("image")
    assert (water[["q", "r"]] != want.loc[["q", "r"], "n_instances"]).any()
    # another request replaces it and is killed after its units wrote q's and r's parts
    # (before p is stitched): predict's records still carry the first request's token
    real = executor.map_units

    def killed_at_stitch(fn, units, *, stage, **kwargs):
        if stage == "stitch":
            raise KeyboardInterrupt
        return real(fn, units, stage=stage, **kwargs)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(executor, "map_units", killed_at_stitch)
        scaleseg.segment_instances(out, config=COMPONENTS, overwrite=True, progress=False)
    assert not (out / PASS_FILE).exists() and sorted(_in_pass_records(out)) == ["q", "r"]
    assert (out / "instances" / "part-q.parquet").is_file()
    # resumed: no token of its own, so none of those records counts; everything runs again
    back = scaleseg.segment_instances(out, config=COMPONENTS, progress=False)
    assert back.in_pass == 0 and not back.reused
    assert_same_instances(out, separate)
