"""Training benchmark (issue 4): fold-parallel speedup, 2 workers vs 1, one torch thread each.

The same 2-fold ensemble (tu-resnet10t, 128-pixel tiles, 3 epochs of 32 tiles) is trained on a
LocalCluster with one worker and with two; each fold is one task. The per-tile step times of the
default and the test model are in bench_train_step.py.

    python benchmarks/bench_train.py [--json results/train.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from scaleseg.config import TrainConfig
    from scaleseg.datasets import write_demo_archive
    from scaleseg.training import train_ensemble, training_items

    spec = {
        "arch": "Unet",
        "encoder": "tu-resnet10t",
        "in_channels": 1,
        "n_classes": 2,
        "n_extra": 0,
        "encoder_weights": None,
    }
    cfg = TrainConfig(
        encoder="tu-resnet10t",
        encoder_weights=None,
        tile_shape=(128, 128),
        frozen_epochs=0,
        epochs=3,
        n_folds=2,
        tiles_per_epoch=32,
        batch_size=4,
        augmentations=("flip", "rotate90"),
    ).model_dump(mode="json")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        demo = write_demo_archive(Path(tmp) / "demo", n_images=4, n_ood=0, shape=(192, 192))
        items, _, _ = training_items(demo["collection"], label="truth")
        for n in (1, 2):
            with LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0") as cl:
                with Client(cl) as client:
                    client.run(lambda: __import__("scaleseg.models"))
                    t0 = time.perf_counter()
                    train_ensemble(
                        items,
                        Path(tmp) / f"ens{n}",
                        model_spec=spec,
                        train_cfg=cfg,
                        client=client,
                        torch_threads=1,
                    )
                    times[n] = time.perf_counter() - t0
    emit(
        "train",
        {
            "folds": 2,
            "seconds_1_worker": round(times[1], 2),
            "seconds_2_workers": round(times[2], 2),
            "fold_parallel_speedup": round(times[1] / times[2], 3),
            "target": 1.7,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
