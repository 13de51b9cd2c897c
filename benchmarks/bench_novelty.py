"""What the novelty map (U_novel) costs predict: seconds per window with and without it.

``U_novel`` reuses the forward passes predict runs anyway (the encoder's deepest map comes out
of the same graph); what it adds is numpy work per batch -- the Mahalanobis distance of every
cell (one ``(cells, D) x (D, D)`` product), the upsampling to the window, the inverse flip and
one more weighted sum. This runs :func:`scaleseg.inference.predict_region` on one window of
``--window`` pixels with ``--members`` members of the CPU recipe (Unet + ResNet10t, decoder
128 64 32 16 16, random weights) under the engine predict uses on CPUs (ONNX Runtime graphs,
exported into a temporary cache), flips TTA, the same batch, one warm-up call per setting, and
alternates three settings for ``--repeats`` rounds: no feature statistics, pooled statistics only
(``ood_distance``, what predict computed before U_novel) and pooled + per-cell statistics
(``ood_distance`` and ``U_novel``). Figures: median seconds per call and the median over rounds
of the per-round ratio to the pooled-only setting.

    python benchmarks/bench_novelty.py [--window 1024] [--batch 2] [--members 4]
                                       [--repeats 5] [--json F]
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
from _common import RECIPE_MEMBER, emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("none", "pooled", "pooled+cells")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ["SCALESEG_CACHE"] = tempfile.mkdtemp(prefix="bench-novelty-")

    import numpy as np
    import torch

    from scaleseg.inference import predict_region
    from scaleseg.models import GraphModel, ModelSpec, build_model
    from scaleseg.uncertainty import CellNovelty, FeatureStats, fit_feature_stats

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    spec = ModelSpec.from_dict(RECIPE_MEMBER)
    w = args.window
    members, stats = [], {"none": None, "pooled": [], "pooled+cells": []}
    train = torch.from_numpy(rng.normal(size=(8, 1, 256, 256)).astype(np.float32))
    for k in range(args.members):
        net = build_model(spec, seed=k).eval()
        with torch.inference_mode():
            maps = net.encoder(train)[-1].numpy()
        pooled = fit_feature_stats(maps.mean(axis=(2, 3)) + rng.normal(size=(8, 512)) * 1e-3)
        cells = fit_feature_stats(np.moveaxis(maps, 1, -1).reshape(-1, maps.shape[1]))
        stats["pooled"].append(pooled)
        stats["pooled+cells"].append(
            FeatureStats(
                pooled.mean, pooled.precision, 8, pooled.shrinkage, CellNovelty(cells, 50.0)
            )  # fmt: skip
        )
        members.append(GraphModel("onnxruntime", lambda net=net: net, weights_sha256=f"bench{k}",
                                  in_channels=1, threads=1))  # fmt: skip
    image = rng.normal(size=(1, w, w)).astype(np.float32)
    full = (slice(0, w), slice(0, w))

    def run(mode: str) -> float:
        t0 = time.perf_counter()
        predict_region(members, image, read_origin=(0, 0), windows=[(0, 0)], region=full,
                       tile_shape=(w, w), n_classes=2, tta="flips", batch_size=args.batch,
                       feature_stats=stats[mode])  # fmt: skip
        return time.perf_counter() - t0

    for mode in MODES:  # warm-up: graph export and load, the first ORT runs
        run(mode)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            times[mode].append(run(mode))
    figures = {
        "window": w,
        "batch": args.batch,
        "members": args.members,
        "repeats": args.repeats,
    }
    for mode in MODES:
        ratios = [a / b for a, b in zip(times[mode], times["pooled"])]
        figures[f"{mode}.seconds_median"] = round(statistics.median(times[mode]), 3)
        figures[f"{mode}.ratio_to_pooled_median"] = round(statistics.median(ratios), 4)
    emit("novelty", figures, args.json)


if __name__ == "__main__":
    main()
