#!/usr/bin/env bash
# bash scripts/gpu_check.sh OUTDIR: check what the project does on CUDA, on one GPU, in about 8 minutes.
#
# Steps, each under `timeout`, its output in OUTDIR/<step>.log and one line in OUTDIR/summary.txt
# (step, exit code, seconds; or why it was skipped); OUTDIR/gpu_check.tgz holds everything and is
# repacked after every step, so an interrupted check still leaves one file to copy back:
#   env          nvidia-smi, Python, torch, torchvision, timm, pytest, the GPU torch sees
#   cuda_tests   the tests marked `cuda` and not `slow` (pytest -m "cuda and not slow") in the test files that
#                import here; train_sh below is the slow one's end-to-end run
#   bench_train  classification/benchmark_train.py --device cuda, short: fp16 NCHW, channels_last, compile
#   bench_infer  deployment/benchmark.py --device cuda, fp16, 224, batch 8: Next-ViT-S folded, as a CUDA
#                graph, compiled (graph replay) and as an AOTInductor .pt2, against ResNet-101 (and timm's port)
#   predict_cuda deployment/predict.py --device cuda --dtype fp16 on a checkpoint, then export_aoti.py --device
#                cuda and predict.py on that .pt2 (nextvit_tiny, 64x64, generated images)
#   train_sh     bash classification/train.sh 1 on generated shapes, a few epochs, default loader workers
#
# The step limits add up to about 8 minutes; the compile steps usually end well before theirs. For device
# calls of at most 5 minutes each, run the two halves apart:
#   GPU_CHECK_ONLY="env cuda_tests bench_train train_sh"   (training, 4.3 minutes of limits)
#   GPU_CHECK_ONLY="env bench_infer predict_cuda"           (deployment, 3.8 minutes of limits)
# The CUDA tests that compile (marked slow as well) are left to `pytest -m cuda`: bench_infer and
# predict_cuda run the same paths with their own output checks.
#
# It needs python3 with torch, torchvision and timm (pytest for the tests), and nothing of the
# project installed: it installs nothing, runs the checkout through PYTHONPATH (with
# GPU_CHECK_PYTHONPATH in front, e.g. a folder holding fvcore), and skips what is missing with a
# line saying so. Environment:
#   PYTHON               the interpreter (default python3)
#   GPU_CHECK_PYTHONPATH extra import folders
#   GPU_CHECK_ONLY       run only these steps (e.g. "env train_sh"); the others are skipped
#   GPU_CHECK_ALLOW_CPU  1: without a GPU, run the steps at tiny sizes on the CPU (to test this script;
#                        time limits x3)
# Exit status: 0 when every step that ran passed; 1 when one failed, or when there is no GPU to check;
# 2 for a usage error.
set -uo pipefail

usage() { echo "usage: bash scripts/gpu_check.sh OUTDIR  (see the comments at the top of the script)"; }
if [ $# -eq 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; }; then
    usage
    exit 0
fi
if [ $# -ne 1 ] || [ -z "$1" ] || [[ "$1" == -* ]]; then
    usage >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
PYTHON=${PYTHON:-python3}
export PYTHONPATH="${GPU_CHECK_PYTHONPATH:+$GPU_CHECK_PYTHONPATH:}$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export ROOT OUT PYTHON
: >"$OUT/summary.txt"
FAILED=0
# a CPU, maybe a busy one, is no GPU: the 6-minute budget is the GPU's
LIMIT_SCALE=1
[ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ] && LIMIT_SCALE=3

# -------------------------------------------------------------------------------------------------
# helpers: `step NAME SECONDS COMMAND...` runs a check; `skip NAME REASON` records one not run
# -------------------------------------------------------------------------------------------------

pack() {  # everything in OUTDIR (no checkpoints) into OUTDIR/gpu_check.tgz, replaced atomically
    tar -czf "$OUT/.gpu_check.tgz.tmp" -C "$OUT" --exclude=./gpu_check.tgz --exclude=./.gpu_check.tgz.tmp \
        --exclude='*.pth' --exclude='*.safetensors' . 2>/dev/null
    mv -f "$OUT/.gpu_check.tgz.tmp" "$OUT/gpu_check.tgz"
}

record() {  # one summary line, on the console too
    echo "$*" | tee -a "$OUT/summary.txt"
}

wanted() {  # whether GPU_CHECK_ONLY (when set) names this step
    [ -z "${GPU_CHECK_ONLY:-}" ] || [[ " $GPU_CHECK_ONLY " == *" $1 "* ]]
}

step() {
    local name=$1 limit=$(($2 * ${LIMIT_SCALE:-1})) start=$SECONDS rc note=""
    shift 2
    if ! wanted "$name"; then
        skip "$name" "not in GPU_CHECK_ONLY"
        return
    fi
    echo "== $name (at most ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note=" (timed out after ${limit}s)"; fi
    [ "$rc" -ne 0 ] && FAILED=1
    record "$(printf '%-12s exit %-3s %4ss%s' "$name" "$rc" "$((SECONDS - start))" "$note")"
    pack
}

skip() {
    record "$(printf '%-12s skipped: %s' "$1" "$2")"
    pack
}

has_module() {
    "$PYTHON" -c "import $1" >/dev/null 2>&1
}

# -------------------------------------------------------------------------------------------------
# the checks (functions run by `bash -c` under timeout; on the CPU, with GPU_CHECK_ALLOW_CPU=1, at tiny sizes)
# -------------------------------------------------------------------------------------------------

env_report() {
    date -u +"date %Y-%m-%dT%H:%M:%SZ"
    (cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /') || true
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    "$PYTHON" - <<'PY'
import importlib, importlib.metadata, importlib.util, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
for name in ("torchvision", "timm", "pytest"):  # what the steps need: imported
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as err:  # noqa: BLE001 - any failure means: not usable here
        print(f"{name}: not available ({type(err).__name__})")
for name in ("fvcore", "onnxruntime", "tensorrt"):  # optional: looked up, not imported
    if importlib.util.find_spec(name) is None:
        print(f"{name}: not installed")
        continue
    try:
        print(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        print(f"{name} (version unknown)")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, cuDNN {torch.backends.cudnn.version()}")
else:
    print("GPU: none visible to torch")
PY
}

run_cuda_tests() {
    cd "$ROOT" || return 1
    local files=() good=() collect
    mapfile -t files < <(grep -l -E "mark\.cuda|cuda\.is_available\(\)" tests/test_*.py)
    # files whose imports fail here (a missing optional package) are left out, each with its reason
    collect=$("$PYTHON" -m pytest --collect-only -q -m "cuda and not slow" -p no:cacheprovider \
        --continue-on-collection-errors "${files[@]}" 2>&1)
    for f in "${files[@]}"; do
        if grep -q "^ERROR $f" <<<"$collect"; then
            echo "skipped $f: $(grep -m1 "^ERROR $f" <<<"$collect" | sed "s|^ERROR $f - ||")"
        else
            good+=("$f")
        fi
    done
    echo "test files: ${good[*]}"
    "$PYTHON" -m pytest -m "cuda and not slow" -p no:cacheprovider -q -rs "${good[@]}"
}

bench_train() {
    cd "$ROOT" || return 1
    if [ "$DEVICE" = cuda ]; then
        "$PYTHON" classification/benchmark_train.py --device cuda --modes fp16 fp16-cl fp16-cl-compile --peers \
            --steps 10 --warmup 3 --output "$OUT/benchmark_train_cuda.json"
    else
        "$PYTHON" classification/benchmark_train.py --device cpu --model nextvit_tiny --sizes 32 --batch-size 2 \
            --modes fp32-cl --peers resnet18 --steps 1 --warmup 1 --output "$OUT/benchmark_train_cpu.json"
    fi
}

bench_infer() {
    cd "$ROOT" || return 1
    local entries reference=()
    if [ "$DEVICE" = cuda ]; then
        entries=(nextvit_small:folded:float16 nextvit_small:cudagraph:float16 nextvit_small:compile:float16
            nextvit_small:aoti:float16)
        if has_module timm; then
            entries+=(timm:nextvit_small:cudagraph:float16 timm:resnet101:folded:float16
                timm:resnet101:cudagraph:float16)
            reference=(--reference timm:resnet101)
        fi
        "$PYTHON" deployment/benchmark.py --device cuda --entries "${entries[@]}" "${reference[@]}" \
            --input-sizes 224 --batch-sizes 8 --warmup 10 --runs 60 --isolation none \
            --output "$OUT/benchmark_infer_cuda.json" --markdown "$OUT/benchmark_infer_cuda.md"
    else
        "$PYTHON" deployment/benchmark.py --device cpu --entries nextvit_tiny:eager nextvit_tiny:folded \
            --input-sizes 32 --batch-sizes 1 --warmup 1 --runs 2 --isolation none \
            --output "$OUT/benchmark_infer_cpu.json"
    fi
}

predict_cuda() {  # predict.py on a checkpoint in fp16, then on the .pt2 of the same weights
    cd "$ROOT" || return 1
    local work device=cuda dtype=fp16 per_class=20
    work=$(mktemp -d) || return 1
    trap 'rm -rf "$work"' RETURN
    if [ "$DEVICE" != cuda ]; then device=cpu dtype=fp32 per_class=2; fi
    "$PYTHON" -m nextvit.synthetic classification --output "$work/shapes" --num-classes 10 --train-per-class 1 \
        --val-per-class "$per_class" --size 73 --seed 0 || return 1
    "$PYTHON" -c "import sys, nextvit; nextvit.save_checkpoint(nextvit.create_model('nextvit_tiny', num_classes=10), \
sys.argv[1])" "$work/model.safetensors" || return 1
    "$PYTHON" deployment/predict.py "$work/model.safetensors" "$work/shapes/val" \
        --image-size 64 --device "$device" --dtype "$dtype" --batch-size 64 --quiet \
        --output "$OUT/predict_checkpoint.csv" || return 1
    "$PYTHON" deployment/export_aoti.py --checkpoint "$work/model.safetensors" --model nextvit_tiny \
        --image-size 64 --device "$device" --dtype "$dtype" --batch-size 8 --output "$work/model.pt2" || return 1
    cp "$work/model.pt2.json" "$OUT/predict_model.pt2.json"
    "$PYTHON" deployment/predict.py "$work/model.pt2" "$work/shapes/val" --batch-size 64 --quiet \
        --output "$OUT/predict_pt2.csv"
}

train_sh() {
    cd "$ROOT" || return 1
    local data
    data=$(mktemp -d) || return 1
    trap 'rm -rf "$data"' RETURN
    if [ "$DEVICE" = cuda ]; then
        "$PYTHON" -m nextvit.synthetic classification --output "$data" --num-classes 10 --train-per-class 150 \
            --val-per-class 30 --size 64 --seed 0 || return 1
        # the default loader workers (--num-workers 10): the data-wait figure is the one users get
        PYTHON=$PYTHON bash classification/train.sh 1 --model nextvit_tiny --data-path "$data" --input-size 64 \
            --epochs 4 --batch-size 64 --lr 2e-2 --warmup-epochs 1 --mixup 0 --cutmix 0 --reprob 0 \
            --aa rand-m5-mstd0.5-inc1 --print-freq 20 --output-dir "$OUT/train_run"
    else
        "$PYTHON" -m nextvit.synthetic classification --output "$data" --num-classes 2 --train-per-class 8 \
            --val-per-class 2 --size 32 --seed 0 || return 1
        PYTHON=$PYTHON bash classification/train.sh 1 --model nextvit_tiny --data-path "$data" --input-size 32 \
            --epochs 1 --batch-size 8 --num-workers 1 --mixup 0 --cutmix 0 --reprob 0 --aa none \
            --output-dir "$OUT/train_run"
    fi
}

export -f env_report run_cuda_tests bench_train bench_infer predict_cuda train_sh has_module

# -------------------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------------------

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    record "$(printf '%-12s skipped: %s' all "$PYTHON cannot import torch: nothing to check")"
    pack
    exit 1
fi
step env 20 bash -c env_report

if "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    export DEVICE=cuda
elif [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
    export DEVICE=cpu
    record "no CUDA device: GPU_CHECK_ALLOW_CPU=1, so the steps run on the CPU at tiny sizes (time limits x3)"
else
    for name in cuda_tests bench_train bench_infer predict_cuda train_sh; do
        skip "$name" "no CUDA device visible to torch (GPU_CHECK_ALLOW_CPU=1 runs the steps on the CPU)"
    done
    exit 1
fi

if ! has_module pytest; then
    skip cuda_tests "pytest is not installed"
else
    step cuda_tests 50 bash -c run_cuda_tests
fi

if ! has_module timm; then
    skip bench_train "timm is not installed (it is the benchmark's reference)"
else
    step bench_train 120 bash -c bench_train
fi

step bench_infer 120 bash -c bench_infer
step predict_cuda 90 bash -c predict_cuda

if ! has_module timm; then
    skip train_sh "timm is not installed (classification/main.py uses its data, mixup and optimizer code)"
else
    step train_sh 70 bash -c train_sh
fi

echo "summary: $OUT/summary.txt; everything: $OUT/gpu_check.tgz"
exit "$FAILED"
