"""Inference engines on CPU (issue 16): torch eager vs ONNX Runtime vs OpenVINO, one member.

For each model shape -- the CPU recipe (Unet + ResNet10t, decoder 128 64 32 16 16, 256²
windows) and DESIGN.md's default (Unet + ConvNeXt-Tiny, 512² windows), random weights -- one
member runs the same batches under every installed engine, in worker conditions (1 torch
thread, ``prepare_worker_process``), with the same batch size and one warm-up batch per engine.
Engines alternate (torch, onnxruntime, openvino, torch, ...) for ``--repeats`` rounds; the
figure per engine is the median seconds per window and the median over rounds of its
ratio to torch in the same round. The largest
absolute difference of the logits and of the pooled features against torch is reported too.

    python benchmarks/bench_engines.py [--repeats 7] [--batch 1] [--threads 1] [--json F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = {
    "recipe": ({"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1, "n_classes": 2,
                "decoder_channels": [128, 64, 32, 16, 16], "encoder_weights": None}, 256),
    "convnext": ({"arch": "Unet", "encoder": "tu-convnext_tiny", "in_channels": 1,
                  "n_classes": 2, "encoder_weights": None}, 512),
}  # fmt: skip


def _time(model, x, windows: int) -> float:
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for _b in range(0, windows, x.shape[0]):
            model(x)
    return (time.perf_counter() - t0) / windows


def case(name: str, repeats: int, batch: int, threads: int, cache: Path) -> dict:
    import numpy as np
    import torch

    from scaleseg.models import (
        ModelSpec,
        available_engines,
        build_model,
        capture_encoder_features,
        file_sha256,
        load_graph_model,
        save_weights,
    )
    from scaleseg.worker import prepare_worker_process

    prepare_worker_process(threads)
    spec, tile = SHAPES[name]
    model = build_model(ModelSpec.from_dict(spec), seed=0).eval()
    sha = save_weights(model, cache / f"{name}.safetensors")
    assert sha == file_sha256(cache / f"{name}.safetensors")
    engines = {"torch": model}
    t0 = time.perf_counter()
    for e in available_engines()[1:]:
        engines[e] = load_graph_model(e, model, weights_sha256=sha, tile_shape=(tile, tile),
                                      in_channels=1, threads=threads)  # fmt: skip
    t_export = time.perf_counter() - t0
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, 1, tile, tile))
                         .astype(np.float32))  # fmt: skip
    f: dict = {"tile": tile, "batch": batch, "threads": threads,
               "graph_load_and_export_s": round(t_export, 1)}  # fmt: skip
    with torch.inference_mode():
        with capture_encoder_features(model) as fr:
            ref = model(x).numpy()
        for e, m in engines.items():
            _time(m, x, batch)  # warm-up: one batch each
            if e != "torch":
                with capture_encoder_features(m) as fg:
                    got = m(x).numpy()
                f[f"{e}_max_abs_logits"] = float(np.abs(got - ref).max())
                f[f"{e}_max_abs_features"] = float(np.abs(fg[0].numpy() - fr[0].numpy()).max())
    times: dict[str, list[float]] = {e: [] for e in engines}
    windows = max(batch, 4 if tile >= 512 else 8)
    for _ in range(repeats):
        for e, m in engines.items():
            times[e].append(_time(m, x, windows))
    for e, t in times.items():
        f[f"{e}_s_per_window"] = round(statistics.median(t), 4)
        # ratio per alternating round, then the median over rounds
        f[f"{e}_ratio"] = round(statistics.median(a / b for a, b in zip(t, times["torch"])), 3)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--json")
    args = ap.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        os.environ["SCALESEG_CACHE"] = tmp  # graphs exported here, not into the user's cache
        for name in args.shapes:
            for k, v in case(name, args.repeats, args.batch, args.threads, Path(tmp)).items():
                figures[f"{name}_{k}"] = v
    emit("engines", figures, args.json)


if __name__ == "__main__":
    main()
