#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine, with nothing downloaded.
#   1. the backbone: S/B/L built, counted, saved and reloaded, folded and compared;
#   2. classification: a generated 10-class shapes dataset, nextvit_tiny trained on it through
#      classification/train.sh (the same entry point as ImageNet training);
#   3. the best checkpoint evaluated with its BatchNorms folded;
#   4. deployment: the best checkpoint quantized to a static int8 ONNX model (calibrated on training
#      images), gated at 0.5 points of top-1 against fp32 on 10,000 newly generated images, with
#      ONNX Runtime latency of both;
#   5. prediction: the int8 model classifies images, top-5 classes with their names, to a CSV.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=data/demo_shapes
OUT=output/demo_classification
EVAL=data/demo_shapes_eval10k
EPOCHS=${DEMO_EPOCHS:-30}

echo "== 1/5 backbone =="
$PY scripts/backbone_demo.py

echo
echo "== 2/5 training nextvit_tiny on generated shapes ($EPOCHS epochs, CPU) =="
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
echo "== 3/5 evaluating the best checkpoint with BatchNorm folded =="
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
echo "== 4/5 int8: quantizing the best checkpoint (static QDQ ONNX), gated against fp32 on 10,000 new images =="
# A separate generated set (another seed than the training data): 10,000 images, so that the 95%
# interval of the drop is about +-0.2 points and the 0.5-point gate sees what it guards. (The demo's
# model with every layer in int8 lost 0.45 points on the 2,000 images used before, 0.06 on 10,000:
# the rest was the sample.) The default recipe keeps the last stage's E-MHSA in fp32, the one layer
# group whose int8 error moved the result (deployment/README.md#which-layers-int8-hurts).
if [ ! -d "$EVAL/val" ]; then
    $PY -m nextvit.synthetic classification --output "$EVAL" --num-classes 10 --train-per-class 0 \
        --val-per-class 1000 --size 64 --seed 1
fi
$PY deployment/quantize.py --checkpoint "$OUT/checkpoint_best.pth" --calib-dir "$DATA/train" --calib-images 200 \
    --calib-method percentile --eval-dir "$EVAL/val" --max-drop 0.5 --output "$OUT/nextvit_tiny_int8.onnx"

echo
echo "== 5/5 predict: the int8 model on images, top-5 classes with names =="
$PY deployment/predict.py "$OUT/nextvit_tiny_int8.onnx" "$DATA/val/circle/circle_00000.png" \
    "$DATA/val/star/star_00000.png" "$EVAL/val/square" --topk 5 --output "$OUT/predictions.csv" --quiet
head -n 3 "$OUT/predictions.csv"
