#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA device (under 8 minutes on one recent GPU):
#   1. the GPU-marked tests (tests/test_gpu.py: CUDA matches CPU, fp16 blocks, a short AMP run);
#   2. the network speed of this checkout against f9c9d9f at 32, 64 and 256 px, in fp32 and with
#      the 4 highest resolutions in fp16 (when the git history is here);
#   3. the full LAFITE training step at 32, 64 and 256 px: fp32, mixed precision, torch.compile.
# Everything lands as JSON (and the test log) in $OUT, default results/gpu_check.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh needs a CUDA device; none is visible')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__)" | tee "$OUT/device.txt"

"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/tests.txt"

if git rev-parse -q --verify f9c9d9f^{commit} >/dev/null 2>&1; then
    "$PY" benchmarks/network_speed.py --device cuda --rounds 3 --json "$OUT/network_speed_fp32.json"
    "$PY" benchmarks/network_speed.py --device cuda --rounds 3 --low-precision-blocks 4 --json "$OUT/network_speed_fp16.json"
else
    echo "no git history here: skipping the comparison with f9c9d9f" | tee "$OUT/network_speed_skipped.txt"
fi

STEP=(benchmarks/training_throughput.py --device cuda --resolutions 32 --compare official64 paper256 --repeats 5)
AMP=(--set mixed_precision=true --set network.num_fp16_res=4 --set network.conv_clamp=256)
"$PY" "${STEP[@]}" --json "$OUT/training_step_fp32.json"
"$PY" "${STEP[@]}" "${AMP[@]}" --json "$OUT/training_step_amp.json"
"$PY" "${STEP[@]}" "${AMP[@]}" --set compile=true --json "$OUT/training_step_amp_compile.json"
echo "gpu_check: results in $OUT"
