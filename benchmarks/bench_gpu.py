"""GPU throughput (issue 16, item 4): fields of view per second for 2048x2048 images with the
default ensemble shape (Unet + ConvNeXt-Tiny, M = 5 random-weight members, T = 4 flips, 512^2
windows at overlap 0.5), one LocalCUDACluster worker per GPU, the default precision (float16
autocast on CUDA) and the torch engine (channels_last); the GPU utilisation and memory are
sampled with nvidia-smi every 250 ms during the timed run. Each batch size is warmed up on one
image first (models loaded, cuDNN set up); the timed runs alternate between batch sizes.

    python benchmarks/bench_gpu.py [--images 8] [--batch-sizes 4 16] [--repeats 1] [--json F]

Without a CUDA device it prints ``gpu.skipped = ...`` and exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Sampler:
    """nvidia-smi utilisation / memory samples while active."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "250"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        rows = [r.split(",") for r in out.strip().splitlines() if r.strip()]
        self.util = [float(r[0]) for r in rows]
        self.mem = [float(r[1]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        emit("gpu", {"skipped": "no CUDA device"}, args.json)
        return
    import numpy as np
    from conftest import make_random_ensemble

    import scaleseg
    from scaleseg.cluster import get_client
    from scaleseg.config import PredictConfig
    from scaleseg.io import write_image

    figures: dict = {"device": torch.cuda.get_device_name(0), "images": args.images,
                     "size": args.size, "models": args.models, "tta": "flips"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        tmp = Path(tmp)
        os.environ["SCALESEG_CACHE"] = str(tmp / "cache")
        ens = make_random_ensemble(tmp / "ens", n_models=args.models, encoder="tu-convnext_tiny",
                                   tile=(512, 512))  # fmt: skip
        rng = np.random.default_rng(0)
        col, warm = tmp / "col", tmp / "warm"
        for i in range(args.images):
            img = (rng.random((1, args.size, args.size)) * 255).astype(np.uint8)
            write_image(col / f"img_{i:03d}.zarr", img, chunks=(512, 512), n_levels=1)
            if i == 0:
                write_image(warm / "img_000.zarr", img, chunks=(512, 512), n_levels=1)
        client = get_client("local-cuda")
        try:
            times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
            util: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
            mem: dict[int, float] = {b: 0.0 for b in args.batch_sizes}
            for b in args.batch_sizes:  # warm-up of every case
                scaleseg.predict(warm, ens, tmp / f"warm{b}", config=PredictConfig(batch_size=b),
                                 client=client, progress=False)  # fmt: skip
            for _ in range(args.repeats):
                for b in args.batch_sizes:
                    out = tmp / f"out{b}"
                    with _Sampler() as s:
                        t0 = time.perf_counter()
                        res = scaleseg.predict(col, ens, out, config=PredictConfig(batch_size=b),
                                               client=client, overwrite=True,
                                               progress=False)  # fmt: skip
                        times[b].append(time.perf_counter() - t0)
                    assert res.failed.empty, res.failed
                    util[b] += s.util
                    mem[b] = max([mem[b], *s.mem])
                    figures[f"batch{b}_precision"] = ",".join(sorted(set(res.images["precision"])))
                    figures[f"batch{b}_n_forward"] = int(res.images["n_forward"].sum())
        finally:
            client.close()
            client.cluster.close()
    for b in args.batch_sizes:
        wall = statistics.median(times[b])
        figures[f"batch{b}_seconds"] = round(wall, 2)
        figures[f"batch{b}_fov_per_s"] = round(args.images / wall, 3)
        figures[f"batch{b}_windows_per_s"] = round(figures[f"batch{b}_n_forward"] / wall, 1)
        figures[f"batch{b}_gpu_util_mean_pct"] = round(float(np.mean(util[b])), 1)
        figures[f"batch{b}_gpu_util_median_pct"] = round(float(np.median(util[b])), 1)
        figures[f"batch{b}_gpu_mem_peak_mib"] = mem[b]
    emit("gpu", figures, args.json)


if __name__ == "__main__":
    main()
