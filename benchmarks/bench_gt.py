"""GT benchmarks (issue 3): STAPLE seconds per megapixel and GT throughput, 2 workers vs 1.

Uses the 36 PV-in-HC images with 5 experts from ../shared/data. Each figure is measured in
one run; the throughput ratio compares the same work on LocalClusters of 1 and 2 single-
threaded worker processes (cluster start-up excluded).

    python benchmarks/bench_gt.py [--json results/gt.json] [--images N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--images", type=int, default=36)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from scaleseg.datasets import shared_data_dir
    from scaleseg.gt import staple
    from scaleseg.gt._collection import _read_experts, estimate_collection, mask_sets

    sets = mask_sets(
        shared_data_dir() / "pv_hc_multiexpert_deepflash_temp" / "labels", suffix="_Parv"
    )
    sets = sets[: args.images]
    masks = _read_experts(sets[0])
    mp = next(iter(masks.values())).size / 1e6
    t = time.perf_counter()
    for _ in range(3):
        staple(masks)
    staple_s = (time.perf_counter() - t) / 3

    def run(n_workers: int) -> float:
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as cl:
            with Client(cl) as client, tempfile.TemporaryDirectory() as tmp:
                client.run(lambda: __import__("scaleseg.gt._collection"))  # warm imports
                t0 = time.perf_counter()
                estimate_collection(sets, tmp, client=client, chunks=(512, 512))
                return time.perf_counter() - t0

    t1 = run(1)
    t2 = run(2)
    emit(
        "gt",
        {
            "images": len(sets),
            "experts": len(masks),
            "staple_seconds_per_megapixel": round(staple_s / mp, 4),
            "seconds_1_worker": round(t1, 2),
            "seconds_2_workers": round(t2, 2),
            "throughput_ratio_2_vs_1": round(t1 / t2, 3),
            "target_ratio": 1.7,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
