"""The GPU path (marker ``gpu``; skipped without a CUDA device): one fold trained with mixed
precision on a LocalCUDACluster worker, and its prediction there in float16 and bfloat16
against the CPU's float32 prediction of the same ensemble. Run with
``benchmarks/gpu_check.sh`` on a machine with CUDA (or ``pytest -m gpu tests/test_gpu.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_client():
    pytest.importorskip("dask_cuda")
    from scaleseg.cluster import get_client

    client = get_client("local-cuda", n_workers=1)
    yield client
    client.close()
    client.cluster.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("gpu") / "demo"
    write_demo_archive(out, n_images=6, n_ood=0, shape=(256, 256), seed=5)
    return out


@pytest.fixture(scope="module")
def gpu_ensemble(archive, cuda_client, tmp_path_factory):
    """One fold (of 2) trained on the GPU worker with mixed precision (float16 autocast + scaler)."""
    import scaleseg
    from scaleseg.config import TrainConfig

    out = tmp_path_factory.mktemp("gpu") / "ens"
    cfg = TrainConfig(encoder="tu-resnet10t", encoder_weights=None, n_folds=2, n_models=1,
                      epochs=12, frozen_epochs=0, tile_shape=(128, 128), tiles_per_epoch=128,
                      batch_size=8, mixed_precision=True)  # fmt: skip
    res = scaleseg.train(archive / "images", out, config=cfg, label="truth", client=cuda_client,
                         progress=False)  # fmt: skip
    return out, res


def test_train_one_fold_with_mixed_precision_on_the_gpu(gpu_ensemble):
    import pandas as pd

    out, _ = gpu_ensemble
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    folds = sorted(out.glob("fold_*/fold.json"))
    assert len(folds) == 1
    fold = json.loads(folds[0].read_text())
    # what happened is recorded: the fold ran on CUDA under float16 autocast, and learned
    assert fold["device"] == "cuda" and fold["mixed_precision"] is True
    history = pd.read_csv(folds[0].parent / "history.csv")
    assert np.isfinite(history["train_loss"]).all()
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert fold["valid_dice"] > 0.3


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_cuda_predict_equals_cpu_predict(precision, gpu_ensemble, archive, cuda_client, tmp_path):
    """LocalCUDACluster predict in ``precision`` against CPU float32 predict of the same
    ensemble: probabilities within 1e-3 (mean absolute difference; the largest is printed)
    and >= 99.9 % identical labels; the images table records device precision and engine."""
    import scaleseg
    from scaleseg import io
    from scaleseg.cluster import get_client
    from scaleseg.config import PredictConfig

    ens, _ = gpu_ensemble
    outs = {}
    cpu_client = get_client("local", n_workers=2, threads_per_worker=1)
    try:
        for name, client, cfg in (
            ("cpu", cpu_client, PredictConfig(engine="torch", precision="float32",
                                              probabilities_dtype="float32")),
            ("gpu", cuda_client, PredictConfig(precision=precision, batch_size=4,
                                               probabilities_dtype="float32")),
        ):  # fmt: skip
            res = scaleseg.predict(archive / "images", ens, tmp_path / name, config=cfg,
                                   client=client, progress=False)  # fmt: skip
            assert res.failed.empty
            outs[name] = res
    finally:
        cpu_client.close()
        cpu_client.cluster.close()
    gpu = outs["gpu"].images
    assert set(gpu["precision"]) == {precision} and set(gpu["engine"]) == {"torch"}
    dp, same, n = [], 0, 0
    for name in outs["cpu"].images["image"]:
        a = [tmp_path / k / "images" / f"{name}.zarr" for k in ("cpu", "gpu")]
        pa, pb = (io.open_image(u / "probabilities").values for u in a)
        la, lb = (io.open_labels(u, "semantic").values for u in a)
        dp.append(np.abs(pa - pb).ravel())
        same += int((la == lb).sum())
        n += la.size
    dp = np.concatenate(dp)
    print(f"{precision}: mean |dp| {dp.mean():.2e}, max {dp.max():.2e}, labels {same / n:.5f}")
    assert dp.mean() <= 1e-3
    assert same / n >= 0.999
