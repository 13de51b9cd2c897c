#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment with deepflash2 0.3.0 from the package registry,
# for the side-by-side benchmarks (bench_deepflash2.py, bench_gt_deepflash2.py).
#
#   bash benchmarks/deepflash2_env.sh
#
# The venv lives in $SCALESEG_DF2_VENV (default: .venv-deepflash2 in the repository root). deepflash2
# brings its own fastai stack and needs zarr < 3, so it never goes into scaleseg's environment. The
# torch + torchvision pair is pinned to the one scaleseg's setup installs (a registry CUDA build pair
# that imports cleanly on CPU), so pip reuses its cached wheels. Nothing is patched after install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SCALESEG_DF2_VENV:-.venv-deepflash2}"
PY="${PYTHON:-python3}"
TORCH_PIN="${SCALESEG_DF2_TORCH:-torch==2.15.0 torchvision==0.29.2}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[df2-env] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
start=$(date +%s)
log="$VENV/install.log"
echo "[df2-env] installing deepflash2==0.3.0 with $TORCH_PIN (log: $log)"
# shellcheck disable=SC2086
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
    deepflash2==0.3.0 $TORCH_PIN SimpleITK >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -30
  echo "[df2-env] pip install failed (full log: $log)" >&2
  exit 1
fi
NO_ALBUMENTATIONS_UPDATE=1 "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import deepflash2.inference, deepflash2.gt  # noqa: F401  (imports cleanly, no patching)
names = ["deepflash2", "fastai", "fastcore", "torch", "torchvision", "segmentation_models_pytorch",
         "timm", "zarr", "numpy", "SimpleITK", "albumentations", "scikit-image", "opencv-python-headless"]
print("[df2-env] " + ", ".join(f"{n} {md.version(n)}" for n in names))
PY
echo "[df2-env] done in $(( $(date +%s) - start )) s; environment size $(du -sh "$VENV" | cut -f1)"
