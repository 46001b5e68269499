#!/usr/bin/env bash
# GPU readiness: the bench's training stage (trainer/benchmarks/training_stages.training_steps:
# model.fit steps fed by the records' pipeline vs by one batch held in memory, GPU utilisation
# from nvidia-smi) for model1 and model3 at 224 px under mixed_float16, with XLA on and off, on
# 1 GPU and (with several) all GPUs, into one JSON. Under 10 minutes on a GPU machine with the
# project installed (bash scripts/setup_env.sh). What to expect: docs/benchmarks.md#gpu_check.
#
#   bash scripts/gpu_check.sh [OUTPUT.json]        # default gpu_check.json
#
# GPU_CHECK_FLAGS (extra bench flags, they win: e.g. "--train_steps=40"), GPU_CHECK_STRATEGIES,
# GPU_CHECK_JIT and GPU_CHECK_PRECISION override the grid; GPU_CHECK_ALLOW_CPU=1 runs without a
# GPU (tests/test_gpu_check.py does, at a tiny size).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-gpu_check.json}
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT

GPUS=$("$PY" -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null)
if [ "$GPUS" -lt 1 ] && [ -z "${GPU_CHECK_ALLOW_CPU:-}" ]; then
  echo "error: TensorFlow sees no GPU (check nvidia-smi and the CUDA libraries)" >&2
  exit 2
fi
STRATEGIES=one_device
[ "$GPUS" -gt 1 ] && STRATEGIES="one_device mirrored"
for strategy in ${GPU_CHECK_STRATEGIES:-$STRATEGIES}; do
  for jit in ${GPU_CHECK_JIT:-on off}; do
    echo "[gpu_check] $strategy, XLA $jit" >&2
    # 20 pages per class at 1000 px, converted once per run; 20 timed steps of batch 256.
    # A hung GPU or driver must not hang the check: each run gets GPU_CHECK_TIMEOUT seconds.
    timeout "${GPU_CHECK_TIMEOUT:-900}" "$PY" -m trainer.bench --stages=training --train_models=model1,model3 --image_size=224 \
      --precision="${GPU_CHECK_PRECISION:-mixed_float16}" --jit_compile="$jit" \
      --strategy="$strategy" --pages_per_class=20 --train_batch_size=256 --train_steps=20 \
      --repeats=2 --output="$RUNS/$strategy-$jit.json" ${GPU_CHECK_FLAGS:-} >&2
  done
done
"$PY" -m trainer.benchmarks.gpu_summary "$RUNS"/*.json > "$OUT"
echo "wrote $OUT" >&2
