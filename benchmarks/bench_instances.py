"""Instance post-processing time per megapixel (issue 6), one thread.

Touching disks on a 1024x1024 image; the watershed and components methods on the semantic map,
the flows method on exact cellpose flows of the true labels (what a perfect flows ensemble
would give). Stitching time and memory for 8192x8192 are in bench_stitch.py.

    python benchmarks/bench_instances.py [--json results/instances.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    import numpy as np
    import torch
    from skimage.draw import disk

    from scaleseg.instances import components_instances, flows_instances, watershed_instances
    from scaleseg.metrics import average_precision
    from scaleseg.training._data import flow_targets

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = args.size
    lab = np.zeros((n, n), np.uint32)
    k = 1
    for _ in range(int(n * n / 900)):
        r, c = rng.integers(10, n - 10, 2)
        rr, cc = disk((r, c), rng.integers(5, 10), shape=lab.shape)
        free = lab[rr, cc] == 0
        lab[rr[free], cc[free]] = k
        k += 1
    sem = (lab > 0).astype(np.uint8)
    mp = n * n / 1e6
    figures = {"image": f"{n}x{n}", "true_objects": int(len(np.unique(lab)) - 1)}
    t = time.perf_counter()
    flows = flow_targets(lab)
    figures["flow_targets_s_per_mp"] = round((time.perf_counter() - t) / mp, 3)
    for name, fn in (
        ("components", lambda: components_instances(sem)),
        ("watershed", lambda: watershed_instances(sem)),
        ("flows", lambda: flows_instances(sem, flows, min_size=0)),
    ):
        t = time.perf_counter()
        out, _ = fn()
        figures[f"{name}_s_per_mp"] = round((time.perf_counter() - t) / mp, 3)
        figures[f"{name}_ap50"] = round(float(average_precision(lab, out)[0]), 3)
    emit("instances", figures, args.json)


if __name__ == "__main__":
    main()
