"""Training benchmark: fold-parallel speedup, and the idle tail of an uneven last wave.

(a) issue 4: the same 2-fold ensemble (tu-resnet10t, 128-pixel tiles, 3 epochs of 32 tiles) is
trained on a LocalCluster with one worker and with two, one torch thread each; each fold is one
task. (b) issue 13: 3 folds on 2 workers -- the third fold runs alone. With the tail widened (the
default) it gets both cores as torch threads; without, one thread while the other core idles.
Runs alternate (widened, plain, widened, plain, ...; ``--repeats``), medians reported. The
per-tile step times of the default and the test model are in bench_train_step.py.

    python benchmarks/bench_train.py [--repeats 2] [--json results/train.json]
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
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per case in (b)")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from scaleseg.config import TrainConfig
    from scaleseg.datasets import write_demo_archive
    from scaleseg.models import ModelSpec
    from scaleseg.training import train_ensemble, training_items

    spec = ModelSpec(
        arch="Unet",
        encoder="tu-resnet10t",
        in_channels=1,
        n_classes=2,
        n_extra=0,
        encoder_weights=None,
    )
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
    )
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
                        model=spec,
                        config=cfg,
                        client=client,
                        torch_threads=1,
                    )
                    times[n] = time.perf_counter() - t0
        tail = _tail_case(items, spec, cfg, Path(tmp), args.repeats)
    emit(
        "train",
        {
            "folds": 2,
            "seconds_1_worker": round(times[1], 2),
            "seconds_2_workers": round(times[2], 2),
            "fold_parallel_speedup": round(times[1] / times[2], 3),
            "target": 1.7,
            **tail,
        },
        args.json,
    )


def _tail_case(items, spec, cfg, tmp: Path, repeats: int) -> dict:
    """3 folds on 2 workers, the lone third fold widened to 2 threads vs left at 1."""
    import json
    import statistics

    from distributed import Client, LocalCluster

    from scaleseg.config import TrainConfig
    from scaleseg.training import _ensemble, train_ensemble

    real = _ensemble.fold_threads
    cfg3 = TrainConfig(**{**cfg.model_dump(), "n_folds": 3})
    out = {"widened": [], "plain": []}
    threads = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cl:
        with Client(cl) as client:
            client.run(lambda: __import__("scaleseg.models"))
            for r in range(repeats):
                for case in ("widened", "plain"):
                    if case == "plain":  # every fold one thread, as before issue 13
                        _ensemble.fold_threads = lambda n, hosts, *, torch_threads, gpus=False: (
                            [torch_threads] * n
                        )
                    try:
                        t0 = time.perf_counter()
                        ens = tmp / f"tail-{case}-{r}"
                        train_ensemble(
                            items, ens, model=spec, config=cfg3, client=client,
                            torch_threads=1,
                        )  # fmt: skip
                        out[case].append(time.perf_counter() - t0)
                        threads[case] = [
                            json.loads((ens / f"fold_{k}" / "fold.json").read_text())[
                                "torch_threads"
                            ]
                            for k in range(3)
                        ]
                    finally:
                        _ensemble.fold_threads = real
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "tail_folds": 3,
        "tail_workers": 2,
        "tail_threads_widened": threads["widened"],
        "tail_threads_plain": threads["plain"],
        "tail_seconds_widened": [round(v, 2) for v in out["widened"]],
        "tail_seconds_plain": [round(v, 2) for v in out["plain"]],
        "tail_speedup_median": round(med["plain"] / med["widened"], 3),
    }


if __name__ == "__main__":
    main()
