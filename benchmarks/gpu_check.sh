#!/usr/bin/env bash
# The GPU checks of issue 16 as one prepared command for a CUDA machine lent by the `device`
# tool (15 minutes of device time per session in all, 10 per command; nothing reachable there;
# its python3 is 3.12 with torch, timm, onnx, onnxruntime, pandas, scikit-image ... but no dask,
# zarr, pydantic, smp or albumentations: those travel as wheels, <= 64 MiB per call).
#
#   benchmarks/gpu_check.sh --fetch      here, once: download the missing wheels into .whl/
#                                        (cp312, manylinux x86_64; .whl/ is git-ignored) and
#                                        print their total size
#   benchmarks/gpu_check.sh              there (device run with carry [".whl"]), about 6 min:
#     1. nvidia-smi and the versions seen
#     2. the `gpu` tests (tests/test_gpu.py): one fold trained with mixed precision on a
#        LocalCUDACluster worker; predict there in float16 and bfloat16 against CPU float32
#        predict (probabilities within 1e-3, >= 99.9 % identical labels)
#     3. benchmarks/bench_gpu.py: FOV/s of 2048^2 images with the default ensemble shape
#        (Unet + ConvNeXt-Tiny, M=5, T=4, 512^2 windows) and the GPU utilisation
#   Logs and figures go to $OUT (device tool) or ./gpu-check (elsewhere).
#
# The device call:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
# the versions of requirements/lock-py311-linux-x86_64.txt, except dask / distributed: the
# 2026.7.1 that dask-cuda 26.10 (rapids-dask-dependency 26.10) is built against
WHEELS=(
  dask==2026.7.1 distributed==2026.7.1 dask-cuda==26.10.0 rapids-dask-dependency==26.10.0
  tornado==6.6.1 zict==3.0.0 tblib==3.2.2 partd==1.4.2 locket==1.0.0
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  ome-zarr==0.18.0 ome-zarr-models==1.7 rangehttpserver==1.4.0 deprecated==1.3.1
  segmentation-models-pytorch==0.6.0 pydantic==2.12.5 pydantic-core==2.41.5
  annotated-types==0.8.0 typing-inspection==0.4.5
  albumentations==2.0.8 albucore==0.0.24 stringzilla==5.3.2 simsimd==6.5.16
  roifile==2026.2.10
)
if [ "${1:-}" = "--fetch" ]; then
  grep -qx "/$WHL/" .git/info/exclude 2>/dev/null || echo "/$WHL/" >>.git/info/exclude
  mkdir -p "$WHL"
  PY="${SCALESEG_VENV:-.venv}/bin/python"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "${WHEELS[@]}" \
    2> >(grep -v "is ignored: it is neither" >&2)
  echo "[gpu_check] $(ls "$WHL"/*.whl | wc -l) wheels, $(du -sh "$WHL" | cut -f1) in $WHL/ (limit 64 MiB with the tree)"
  exit 0
fi
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ -d "$WHL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHL"/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  nvidia-smi || true
  python3 - <<'PY'
import torch, dask, distributed, zarr
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("dask", dask.__version__, "distributed", distributed.__version__, "zarr", zarr.__version__)
PY
} 2>&1 | tee "$OUT/env.log"
set +e
timeout 330 python3 -m pytest -p no:cacheprovider -o addopts="" -m gpu -q -s -rA \
  --timeout 300 tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 180 python3 benchmarks/bench_gpu.py --json "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
echo "[gpu_check] tests rc=$tests_rc, benchmark rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
