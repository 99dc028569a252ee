#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine, with nothing downloaded.
#   1. the backbone: S/B/L built, counted, saved and reloaded, folded and compared;
#   2. classification: a generated 10-class shapes dataset, nextvit_tiny trained on it through
#      classification/train.sh (the same entry point as ImageNet training), then evaluated with
#      its BatchNorms folded;
#   3. deployment: the trained model quantized to a static int8 ONNX model (calibrated on training
#      images), its val Acc@1 and ONNX Runtime latency against fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=data/demo_shapes
OUT=output/demo_classification
EPOCHS=${DEMO_EPOCHS:-30}

echo "== 1/4 backbone =="
$PY scripts/backbone_demo.py

echo
echo "== 2/4 training nextvit_tiny on generated shapes ($EPOCHS epochs, CPU) =="
if [ ! -d "$DATA/val" ]; then
    $PY -m nextvit.synthetic classification --output "$DATA" --num-classes 10 --train-per-class 150 \
        --val-per-class 30 --size 64 --seed 0
fi
rm -rf "$OUT"
start=$(date +%s)
PYTHON=$PY bash classification/train.sh 1 --model nextvit_tiny --data-path "$DATA" --input-size 64 \
    --epochs "$EPOCHS" --batch-size 32 --lr 2e-2 --warmup-epochs 2 --mixup 0 --cutmix 0 --reprob 0 \
    --aa rand-m5-mstd0.5-inc1 --num-workers 2 --print-freq 20 --output-dir "$OUT"
elapsed=$(( $(date +%s) - start ))

echo
echo "== 3/4 evaluating the best checkpoint with BatchNorm folded =="
PYTHON=$PY bash classification/train.sh 1 --model nextvit_tiny --data-path "$DATA" --input-size 64 \
    --batch-size 32 --num-workers 2 --eval --resume "$OUT/checkpoint_best.pth" --output-dir "$OUT" \
    | grep -E "^\* Acc|test images"
$PY - "$OUT" "$elapsed" <<'PY'
import json, sys
from pathlib import Path
out, elapsed = Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
best = max(rows, key=lambda r: r["test_acc1"])
print(f"\ndemo: {len(rows)} epochs in {elapsed // 60} min {elapsed % 60} s, best val Acc@1 {best['test_acc1']:.1f}% "
      f"(epoch {best['epoch']}; chance is 10%), last {rows[-1]['test_acc1']:.1f}%")
print(f"run folder: {out}/ (log.txt, curves.png, checkpoints, model.safetensors, config.json)")
if best["test_acc1"] < 30:
    raise SystemExit("demo: accuracy did not rise clearly above chance")
PY

echo
echo "== 4/4 int8: quantizing the trained model (static QDQ ONNX) and comparing it with fp32 =="
# --max-drop 2.0: on 300 val images one image is 0.33 points, and runs differ by a few images
$PY deployment/quantize.py --model nextvit_tiny --checkpoint "$OUT/model.safetensors" \
    --calib-dir "$DATA/train" --calib-images 200 --eval-dir "$DATA/val" --max-drop 2.0 \
    --output "$OUT/nextvit_tiny_int8.onnx"
