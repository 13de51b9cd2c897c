"""deepflash2 side of bench_gt_deepflash2.py; runs INSIDE the deepflash2 environment.

    .venv-deepflash2/bin/python benchmarks/_df2_gt.py DATA_DIR EXP_DIR OUT [N_IMAGES]

``deepflash2.gt.GTEstimator(exp_dir=EXP_DIR, path=DATA_DIR).gt_estimation("STAPLE", save_dir=...)``
as deepflash2's GUI runs it (one process; SimpleITK with its default thread count), timed.
Writes ``OUT/masks.npz`` (estimated masks by mask file name) and ``OUT/result.json``.
With N_IMAGES, only the first N mask names are estimated (the estimator's own loop, truncated).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path


def main() -> None:
    data, exp_dir, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else None
    warnings.simplefilter("ignore")
    import importlib.metadata as md

    import numpy as np
    import SimpleITK as sitk
    from deepflash2.gt import GTEstimator

    out.mkdir(parents=True, exist_ok=True)
    est = GTEstimator(exp_dir=exp_dir, path=data, verbose=0)
    if n is not None:
        est.masks = dict(list(est.masks.items())[:n])
    t0 = time.perf_counter()
    est.gt_estimation(method="STAPLE", save_dir=str(out / "deepflash2_gt"))
    secs = time.perf_counter() - t0
    refs = est.gt["STAPLE"]
    np.savez_compressed(out / "masks.npz", **{k: np.asarray(v) for k, v in refs.items()})
    result = {
        "seconds": round(secs, 3),
        "images": len(refs),
        "experts": len(est.experts),
        "vote_undec": est.config.vote_undec,
        "itk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "versions": {p: md.version(p) for p in ("deepflash2", "SimpleITK")},
        "mean_expert_dice": float(est.df_res["dice_score"].mean()),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"[df2] GT STAPLE: {secs:.1f} s for {len(refs)} images", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
