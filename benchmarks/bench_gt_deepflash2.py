"""deepflash2 GT side by side (issue 9, item 3): STAPLE masks and time on PV-in-HC.

All 36 PV-in-HC images with 5 expert masks (../shared/data/pv_hc_multiexpert_deepflash_temp).

* deepflash2 0.3.0 (its own environment, ``benchmarks/deepflash2_env.sh``):
  ``GTEstimator(...).gt_estimation("STAPLE", save_dir=...)`` in one process (``_df2_gt.py``).
  It runs SimpleITK's ``MultiLabelSTAPLEImageFilter`` with undecided pixels set to
  ``Config.vote_undec = 0`` on masks read with ``_read_msk`` (0/255 -> 0/1).
* scaleseg: ``estimate_collection`` (what ``scaleseg gt`` runs) on a LocalCluster of 2
  single-threaded workers, in two settings:

  - ``default``: binary masks (K = 1) go through the binary ``STAPLEImageFilter`` (foreground
    value 1, probability >= 0.5);
  - ``matched``: ``n_classes=2, undecided="background"``, which sends the same binary masks
    through ``MultiLabelSTAPLEImageFilter`` with undecided -> 0, i.e. deepflash2's call;
  - ``matched_dice_only``: as ``matched`` and ``instance_scores=False`` (``scaleseg gt
    --no-instance-scores``): experts scored by Dice only, as deepflash2 does -- the like-for-like
    time. The other two also compute per-expert mAP / AP50 and the consensus bound.

Figures: identical pixels (fraction over all images), images whose masks are identical, and the
time ratio (scaleseg on 2 workers vs deepflash2 single process; cluster start-up excluded, both
write their outputs: deepflash2 PNG masks + CSV/XLSX, scaleseg OME-Zarr GT + agreement + tables).

    python benchmarks/bench_gt_deepflash2.py [--json results/gt_deepflash2.json] [--images N]

Without the deepflash2 environment it prints ``gt_deepflash2.skipped = ...`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from bench_deepflash2 import df2_env, df2_python  # noqa: E402

HERE = Path(__file__).resolve().parent
SUFFIX = "_Parv"
SETTINGS = {
    "default": {},
    "matched": {"n_classes": 2, "undecided": "background"},
    # deepflash2 scores experts by Dice only: like for like in time (``gt --no-instance-scores``)
    "matched_dice_only": {"n_classes": 2, "undecided": "background", "instance_scores": False},
}
SETTING_NOTES = {
    "default": "binary STAPLEImageFilter, threshold 0.5",
    "matched": "n_classes=2, undecided='background' (MultiLabelSTAPLE, undecided -> 0)",
    "matched_dice_only": "as matched, instance_scores=False (Dice only, no mAP/AP50 or "
    "consensus bound: what deepflash2 computes)",
}


def _scaleseg(sets, tmp: Path, workers: int) -> dict:
    import numpy as np
    from distributed import Client, LocalCluster

    from scaleseg.gt._collection import estimate_collection
    from scaleseg.io import open_labels

    out = {}
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cl,
        Client(cl) as client,
    ):
        client.run(lambda: __import__("scaleseg.gt._collection"))  # warm imports
        for key, kw in SETTINGS.items():
            dest = tmp / f"scaleseg_{key}"
            t0 = time.perf_counter()
            res = estimate_collection(sets, str(dest), client=client, chunks=(512, 512), **kw)
            secs = time.perf_counter() - t0
            masks = {
                s.name: np.asarray(
                    open_labels(dest / "images" / f"{s.name}.zarr", "est_gt").data.compute()
                )
                for s in sets
            }
            n_undec = int(res["images"]["n_undecided"].sum())
            unit_s = float(res["images"]["seconds"].sum())
            out[key] = {"seconds": secs, "masks": masks, "n_undecided": n_undec, "unit_s": unit_s}
            print(f"[scaleseg] GT {key}: {secs:.1f} s for {len(sets)} images", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--images", type=int, default=36)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    load0 = os.getloadavg()[0]
    py, why = df2_python()
    if py is None:
        emit("gt_deepflash2", {"skipped": why}, args.json)
        return

    import numpy as np

    from scaleseg.datasets import shared_data_dir
    from scaleseg.gt._collection import mask_sets

    data = shared_data_dir() / "pv_hc_multiexpert_deepflash_temp"
    sets = mask_sets(data / "labels", suffix=SUFFIX)[: args.images]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        proc = subprocess.run(
            [
                str(py),
                str(HERE / "_df2_gt.py"),
                str(data),
                "labels",
                str(tmp / "df2"),
                str(args.images),
            ],
            env=df2_env(2),
            cwd=tmp,
            check=False,
        )
        if proc.returncode:
            emit("gt_deepflash2", {"failed": f"deepflash2 GT exited {proc.returncode}"}, args.json)
            sys.exit(1)
        df2 = json.loads((tmp / "df2" / "result.json").read_text())
        with np.load(tmp / "df2" / "masks.npz") as z:
            ref = {Path(k).stem.removesuffix(SUFFIX): z[k] for k in z.files}
        ss = _scaleseg(sets, tmp, args.workers)

    names = [s.name for s in sets]
    if sorted(ref) != sorted(names):
        raise SystemExit(f"image names differ: deepflash2 {sorted(ref)[:3]}, scaleseg {names[:3]}")
    figures = {
        "images": len(names),
        "experts": df2["experts"],
        "deepflash2": f"{df2['versions']['deepflash2']}, GTEstimator STAPLE (MultiLabelSTAPLE, "
        f"undecided -> {df2['vote_undec']}), 1 process, SimpleITK {df2['versions']['SimpleITK']} "
        f"with {df2['itk_threads']} threads",
        "scaleseg": f"estimate_collection, LocalCluster {args.workers} workers x 1 thread",
    }
    for key, res in ss.items():
        same = [int((ref[n] == res["masks"][n]).sum()) for n in names]
        total = sum(ref[n].size for n in names)
        identical = sum(int(np.array_equal(ref[n], res["masks"][n])) for n in names)
        worst = min(range(len(names)), key=lambda i: same[i] / ref[names[i]].size)
        figures.update(
            {
                f"{key}_settings": SETTING_NOTES[key],
                f"{key}_identical_pixel_fraction": round(sum(same) / total, 7),
                f"{key}_pixels_differing": int(total - sum(same)),
                f"{key}_masks_identical": f"{identical}/{len(names)}",
                f"{key}_worst_image": f"{names[worst]} "
                f"({ref[names[worst]].size - same[worst]} pixels differ)",
                f"{key}_undecided_pixels_scaleseg": res["n_undecided"],
                f"{key}_seconds_scaleseg": round(res["seconds"], 2),
                f"{key}_unit_seconds_sum_scaleseg": round(res["unit_s"], 2),
            }
        )
    figures["seconds_deepflash2"] = df2["seconds"]
    figures["load_average_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    for key in ss:
        figures[f"{key}_time_ratio_scaleseg_vs_deepflash2"] = round(
            ss[key]["seconds"] / df2["seconds"], 3
        )
    emit("gt_deepflash2", figures, args.json)


if __name__ == "__main__":
    main()
