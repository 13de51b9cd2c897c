"""Run every benchmark script, collect their JSON figures, write results.json and results.md.

    python benchmarks/run_all.py [--only gt metrics ...] [--out benchmarks/results]

Each script measures its ratios within one run (machines are noisy); this driver only runs them
one after another and tabulates what they print. A benchmark's old ``<name>.json`` is deleted
before it runs; its return code is one row of the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "metrics": ["bench_metrics.py"],
    "gt": ["bench_gt.py"],
    "train_step": ["bench_train_step.py"],
    "train": ["bench_train.py"],
    "predict": ["bench_predict.py"],
    "instances": ["bench_instances.py"],
    "stitch": ["bench_stitch.py"],
    "archive": ["bench_archive.py"],  # N = 100, 1000 end to end + a 10^5-image stub (~1 h)
    "engines": ["bench_engines.py"],
    "ort_memory": ["bench_ort_memory.py"],
    "novelty": ["bench_novelty.py"],
    # needs a scripts/verify_pv_hc output in pv-hc-check/; without it it prints "skipped"
    "frontier": ["bench_frontier.py"],
    # needs a CUDA device (benchmarks/gpu_check.sh); without one it prints "skipped"
    "gpu": ["bench_gpu.py"],
    # need .venv-deepflash2 (benchmarks/deepflash2_env.sh); without it they print "skipped"
    "deepflash2": ["bench_deepflash2.py"],
    "gt_deepflash2": ["bench_gt_deepflash2.py"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=sorted(SCRIPTS))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "benchmarks": {}}
    for name in args.only or SCRIPTS:
        target = out / f"{name}.json"
        target.unlink(missing_ok=True)  # a failed run must not report the previous figures
        t0 = time.perf_counter()
        cmd = [sys.executable, str(HERE / SCRIPTS[name][0]), "--json", str(target)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, check=False)
        entry = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
        if target.exists():
            data = json.loads(target.read_text())
            entry["figures"] = data.get("figures", data)
        results["benchmarks"][name] = entry
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"Benchmarks on {results['machine']['host']} ({results['machine']['cpu_count']} cores, "
        f"{results['machine']['memory_gib']} GiB), {results['machine']['date']}",
        "",
        "| benchmark | figure | value |",
        "|---|---|---|",
    ]
    for name, entry in results["benchmarks"].items():
        lines.append(f"| {name} | returncode | {entry['returncode']} |")
        for k, v in entry.get("figures", {"failed": f"exit {entry['returncode']}"}).items():
            lines.append(f"| {name} | {k} | {v} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
