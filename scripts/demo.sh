#!/usr/bin/env bash
# The main job end to end on the built-in sample: generate pages -> convert -> train model1 ->
# evaluate -> predict -> report. Everything goes to ${DEMO_DIR:-demo_out}. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
OUT=${DEMO_DIR:-demo_out}
rm -rf "$OUT"

$PY -m tfrecords_tool.sample --output_dir="$OUT/sample" --pages_per_class=24 --seed=0
$PY -m tfrecords_tool.convert --labels="$OUT/sample/labels.txt" --images_dir="$OUT/sample/images" \
  --output_dir="$OUT/records" --image_size=128 --val_fraction=0.2 --seed=0 --num_shards=4
$PY -m tfrecords_tool.verify --data_dir="$OUT/records"
# --weights=none because this machine cannot download the ImageNet weights; use the default
# (imagenet) or a local weights file on a real run.
$PY -m trainer.main --flagfile=configs/sample_demo.cfg --model=model1 \
  --data_dir="$OUT/records" --model_dir="$OUT/model1"
$PY -m trainer.evaluate --model_dir="$OUT/model1" --data_dir="$OUT/records" --split=val
$PY -m trainer.predict --model_dir="$OUT/model1" "$OUT"/sample/images/invoice/invoice_0000.tif \
  "$OUT"/sample/images/memo/memo_0001.tif
$PY -m trainer.report --log_dir="$OUT/model1/logs" --output="$OUT/report"
echo
echo "TensorBoard logs: $OUT/model1/logs  (open with: .venv/bin/tensorboard --logdir $OUT/model1/logs)"
echo "Evaluation:       $OUT/model1/eval-val/metrics.json, confusion_matrix.png"
echo "Report:           $OUT/report/index.html"
