"""Inference engines: ONNX Runtime and OpenVINO members equal the torch members (logits,
deepest feature maps, predicted probabilities within 1e-5), their graphs are cached per user by the
weights' SHA-256 and never written into the ensemble, and the engine is part of the request."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import scaleseg
from scaleseg import io
from scaleseg.config import PredictConfig
from scaleseg.inference import clear_model_cache, get_models, read_ensemble
from scaleseg.models import (
    available_engines,
    capture_encoder_features,
    graph_path,
    resolve_engine,
)
from scaleseg.runs import OutputError

GRAPH_ENGINES = [
    pytest.param(
        e,
        marks=pytest.mark.skipif(
            e not in available_engines(), reason=f"{e} (or onnx / onnxscript) not installed"
        ),
    )
    for e in ("onnxruntime", "openvino")
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SCALESEG_CACHE", str(folder))
    clear_model_cache()
    yield folder / "engines"
    clear_model_cache()


def _tree(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("engine", GRAPH_ENGINES)
def test_graph_members_equal_torch_members(engine, tiny_ensemble, cache):
    info = read_ensemble(tiny_ensemble)
    before = _tree(tiny_ensemble)
    torch_models = get_models(info, torch.device("cpu"))
    graphs = get_models(info, torch.device("cpu"), engine)
    assert [g.engine for g in graphs] == [engine, engine]
    # one graph per member in the user's cache, named by the member's weights; nothing written
    # into the ensemble
    for fold, g in zip(info.folds, graphs):
        path = g.load(info.tile_shape)
        assert path == graph_path(fold.sha256, info.tile_shape, info.in_channels)
        assert str(path).startswith(str(cache)) and path.is_file()
    assert _tree(tiny_ensemble) == before
    rng = np.random.default_rng(3)
    # the tile, and another window shape (a transposed tile): a graph per shape met
    for shape in ((3, 1, *info.tile_shape), (2, 1, info.tile_shape[0], info.tile_shape[1] // 2)):
        x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
        for ref, g in zip(torch_models, graphs):
            with torch.inference_mode(), capture_encoder_features(ref) as fr:
                want = ref(x)
            with capture_encoder_features(g) as fg:
                got = g(x)
            assert got.dtype == torch.float32 and got.shape == want.shape
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
            assert fg[0].shape == fr[0].shape == (len(x), 512, shape[2] // 32, shape[3] // 32)
            np.testing.assert_allclose(fg[0].numpy(), fr[0].numpy(), atol=1e-5, rtol=1e-5)
            assert g.feature_store == {}  # the capture ended
    assert len(list(cache.glob("*.onnx"))) == 2 * len(info.folds)
    # loaded again (another process would find the cached graphs): no new export
    mtimes = [graph_path(f.sha256, info.tile_shape, 1).stat().st_mtime_ns for f in info.folds]
    clear_model_cache()
    get_models(info, torch.device("cpu"), engine)
    assert [graph_path(f.sha256, info.tile_shape, 1).stat().st_mtime_ns
            for f in info.folds] == mtimes  # fmt: skip


_ARENA_CHILD = r"""
import os, sys, torch
from scaleseg.models import ModelSpec, build_model, load_graph_model, save_weights
from pathlib import Path
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
spec = {"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2,
        "encoder_weights": None}
model = build_model(ModelSpec.from_dict(spec), seed=0).eval()
sha = save_weights(model, Path(sys.argv[1]) / "m.safetensors")
members = [load_graph_model("onnxruntime", model, weights_sha256=sha, tile_shape=(512, 512),
                            in_channels=1, threads=1) for _ in range(3)]
for m in members:
    m.load((512, 512))
x = torch.randn(2, 1, 512, 512)
before = rss()
members[0](x)
one = rss() - before
for m in members[1:]:
    m(x)
print(one, rss() - before)
"""


@pytest.mark.skipif("onnxruntime" not in available_engines(), reason="onnxruntime not installed")
def test_onnxruntime_members_share_one_memory_arena(tmp_path):
    """Loaded members must not each keep their peak activations between runs: with a memory
    arena per ONNX Runtime session, 4 members x a few window shapes held 9.5 GiB and paused a
    12 GiB worker for good. Three members run one after another keep what one keeps."""
    env = dict(os.environ, SCALESEG_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _ARENA_CHILD, str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    one, three = (float(v) for v in out.split()[-2:])
    assert one > 100, f"one member's run kept only {one:.0f} MiB: nothing to measure"
    assert three < 1.3 * one, f"one member kept {one:.0f} MiB, three kept {three:.0f} MiB"


@pytest.mark.parametrize("engine", GRAPH_ENGINES)
def test_predict_with_a_graph_engine_equals_torch(engine, tiny_ensemble, cache, tmp_path):
    col = tmp_path / "col"
    img = (np.random.default_rng(4).random((1, 100, 90)) * 255).astype(np.uint8)
    io.write_image(col / "a.zarr", img, n_levels=1)
    outs = {}
    for name in ("torch", engine):
        opts = PredictConfig(tile_shape=(64, 64), tta="flips", batch_size=4,
                             probabilities_dtype="float32", engine=name)  # fmt: skip
        res = scaleseg.predict(col, tiny_ensemble, tmp_path / name, config=opts, progress=False)
        assert res.failed.empty
        assert res.images["engine"].tolist() == [name]  # recorded: what ran the members
        url = tmp_path / name / "images" / "a.zarr"
        outs[name] = (io.open_image(url / "probabilities").values,
                      io.open_labels(url, "semantic").values, res.images["U"].iloc[0])  # fmt: skip
    (pt, lt, ut), (pe, le, ue) = outs["torch"], outs[engine]
    np.testing.assert_allclose(pe, pt, atol=1e-5, rtol=0)
    near_tie = np.abs(pt[1] - pt[0]) < 1e-4  # labels may differ only where p is a tie
    assert np.array_equal(le[~near_tie], lt[~near_tie])
    assert abs(ue - ut) < 1e-4
    # the engine is part of the request: resuming the other engine's output is refused
    opts = PredictConfig(tile_shape=(64, 64), tta="flips", probabilities_dtype="float32",
                         engine="torch")  # fmt: skip
    with pytest.raises(OutputError, match=f"config.engine: '{engine}' -> 'torch'"):
        scaleseg.predict(col, tiny_ensemble, tmp_path / engine, config=opts, progress=False)


@pytest.mark.skipif("onnxruntime" not in available_engines(), reason="onnxruntime not installed")
def test_auto_engine_on_a_non_square_tile_with_dihedral_tta(tiny_ensemble, cache, tmp_path):
    """The default engine (auto = ONNX Runtime on a CPU worker) on windows of another shape
    than the ensemble's and their transposes equals torch; the table records what ran."""
    col = tmp_path / "col"
    io.write_image(col / "a.zarr", (np.random.default_rng(5).random((1, 90, 70)) * 255)
                   .astype(np.uint8), n_levels=1)  # fmt: skip
    probs = {}
    for name in ("torch", "auto"):
        opts = PredictConfig(tile_shape=(64, 48), tta="dihedral", probabilities_dtype="float32",
                             engine=name)  # fmt: skip
        res = scaleseg.predict(col, tiny_ensemble, tmp_path / name, config=opts, progress=False)
        assert res.failed.empty
        assert res.images["engine"].tolist() == [resolve_engine(name, torch.device("cpu"))]
        probs[name] = io.open_image(tmp_path / name / "images/a.zarr/probabilities").values
    assert res.images["engine"].tolist() == ["onnxruntime"]
    np.testing.assert_allclose(probs["auto"], probs["torch"], atol=1e-5, rtol=0)
    assert (
        sorted(p.stem.split("-")[2] for p in cache.glob("*.onnx")) == ["48x64"] * 2 + ["64x48"] * 2
    )


def test_graph_engine_on_an_accelerator_is_refused(tiny_ensemble, cache):
    info = read_ensemble(tiny_ensemble)
    with pytest.raises(ValueError, match="runs on the CPU"):
        get_models(info, torch.device("meta"), "onnxruntime")
    # auto picks torch there
    assert resolve_engine("auto", torch.device("meta")) == "torch"


def test_missing_engine_packages_are_named(tiny_ensemble, cache, monkeypatch):
    from scaleseg.models import _engines, _export, build_model, export_onnx

    monkeypatch.setattr(_engines, "_EXPORT_PACKAGES", ("onnx", "no_such_exporter_package"))
    assert available_engines() == ("torch",)
    assert resolve_engine("auto", torch.device("cpu")) == "torch"  # auto falls back
    with pytest.raises(RuntimeError, match="'onnxruntime' is not installed here"):
        get_models(read_ensemble(tiny_ensemble), torch.device("cpu"), "onnxruntime")
    monkeypatch.setattr(_export, "_ONNX_PACKAGES", ("onnx", "no_such_exporter_package"))
    spec = {**read_ensemble(tiny_ensemble).model, "encoder_weights": None}
    from scaleseg.models import ModelSpec

    with pytest.raises(RuntimeError, match="no_such_exporter_package"):
        export_onnx(build_model(ModelSpec.from_dict(spec), seed=0), cache / "m.onnx")
    assert not (cache / "m.onnx").exists()


def test_bfloat16_on_the_cpu_is_close_to_float32_and_recorded(tiny_ensemble, cache, tmp_path):
    """bfloat16 members (torch autocast, or OpenVINO where the CPU has bf16) stay close to
    float32; the images table records the precision and the engine that ran."""
    col = tmp_path / "col"
    io.write_image(col / "a.zarr", (np.random.default_rng(6).random((1, 80, 80)) * 255)
                   .astype(np.uint8), n_levels=1)  # fmt: skip
    out = {}
    for engine, precision in (("torch", "float32"), ("torch", "bfloat16"), ("auto", "bfloat16")):
        opts = PredictConfig(tile_shape=(64, 64), probabilities_dtype="float32", engine=engine,
                             precision=precision)  # fmt: skip
        res = scaleseg.predict(col, tiny_ensemble, tmp_path / f"{engine}-{precision}",
                               config=opts, progress=False)  # fmt: skip
        assert res.failed.empty
        row = res.images.iloc[0]
        assert row["precision"] == precision
        assert row["engine"] == resolve_engine(engine, torch.device("cpu"), precision)
        url = tmp_path / f"{engine}-{precision}" / "images" / "a.zarr"
        out[engine, precision] = (io.open_image(url / "probabilities").values,
                                  io.open_labels(url, "semantic").values)  # fmt: skip
    p32, l32 = out["torch", "float32"]
    for key in (("torch", "bfloat16"), ("auto", "bfloat16")):
        p, lab = out[key]
        assert 0 < np.abs(p - p32).max() < 0.02, key  # bf16 arithmetic, not float32
        assert (lab == l32).mean() >= 0.99, key


def test_impossible_engine_precision_pairs_are_refused():
    from pydantic import ValidationError

    from scaleseg.models import resolve_precision

    with pytest.raises(ValidationError, match="onnxruntime runs float32 only"):
        PredictConfig(engine="onnxruntime", precision="bfloat16")
    with pytest.raises(ValidationError, match="float16 is not offered"):
        PredictConfig(engine="openvino", precision="float16")
    with pytest.raises(ValueError, match="float16 runs on GPUs"):
        resolve_precision("float16", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cuda")) == "float16"
    assert resolve_precision("auto", torch.device("cpu")) == "float32"


@pytest.mark.parametrize("engine", ["torch", *GRAPH_ENGINES])
def test_feature_captures_in_concurrent_threads_stay_apart(engine, tiny_ensemble, cache):
    """A worker with two threads runs units on the same cached members: each thread's capture
    holds the features of its own passes only (else distances would be swapped or missing)."""
    from concurrent.futures import ThreadPoolExecutor

    info = read_ensemble(tiny_ensemble)
    model = get_models(info, torch.device("cpu"), engine)[0]
    ref = get_models(info, torch.device("cpu"), "torch")[0] if engine != "torch" else model
    rng = np.random.default_rng(7)
    xs = [torch.from_numpy(rng.normal(size=(1, 1, 64, 64)).astype(np.float32)) for _ in range(2)]
    with torch.inference_mode():
        want = []
        for x in xs:
            with capture_encoder_features(ref) as f:
                ref(x)
            want.append(f[0].numpy())
    if engine != "torch":
        model = get_models(info, torch.device("cpu"), engine)[0]

    def work(i):
        got = []
        with torch.inference_mode(), capture_encoder_features(model) as f:
            for _ in range(20):
                model(xs[i])
                got.append(f.pop().numpy())
        return got

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(work, [0, 1]))
    for i, got in enumerate(results):
        for g in got:
            np.testing.assert_allclose(g, want[i], atol=1e-5, rtol=1e-5)
