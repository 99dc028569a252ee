#!/usr/bin/env bash
# Create .venv and install the tested set of requirements.txt into it. Idempotent: when
# requirements.txt, pyproject.toml and this script are unchanged since the last success, and
# torch sees the same kind of machine (CPU only, or a CUDA GPU), it returns at once.
# `--print-digest` prints what the up-to-date check compares and exits.
#
# Order matters:
#   1. torch and torchvision (the registry's standard build), numpy, setuptools<81;
#   2. mmcv 2.1.0, built from its source release with its ops against that torch. The first build
#      takes about 10 minutes on an idle 2-core machine (25 when the machine is busy). The wheel is
#      kept in a cache folder keyed by torch version, Python tag and CPU/CUDA, and reused after;
#   3. everything else in requirements.txt, and this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.nextvit-setup"

# cpu or cuda, as the installed torch sees this machine ("none" before torch is installed). mmcv's
# ops are compiled for CUDA only where torch sees a GPU, so an install made on a CPU-only machine
# must be redone on a GPU machine (and back). NEXTVIT_FLAVOUR overrides the probe (for tests).
flavour() {
    if [ -n "${NEXTVIT_FLAVOUR:-}" ]; then
        echo "$NEXTVIT_FLAVOUR"
    else
        "$VENV/bin/python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null ||
            echo none
    fi
}
setup_digest() {
    { cat requirements.txt pyproject.toml scripts/setup_env.sh; echo "flavour $(flavour)"; } | sha256sum | cut -d' ' -f1
}
if [ "${1:-}" = "--print-digest" ]; then
    setup_digest
    exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(setup_digest)" ]; then
    exit 0
fi

say() { printf '\n[setup] %s\n' "$*"; }
requirement() { grep -E "^$1[=<>!]" requirements.txt | sed 's/#.*//' | tr -d ' '; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip)

say "installing torch, torchvision, numpy"
"${pip[@]}" install --upgrade "setuptools>=77.0.3,<81" wheel
"${pip[@]}" install "$(requirement torch)" "$(requirement torchvision)" "$(requirement numpy)" \
    "setuptools>=77.0.3,<81"

read -r torch_version py_tag flavour < <("$VENV/bin/python" -c '
import sys, torch
print(torch.__version__.split("+")[0], f"cp{sys.version_info[0]}{sys.version_info[1]}",
      "cuda" if torch.cuda.is_available() else "cpu")')
mmcv_req=$(requirement mmcv)
cache_root=${NEXTVIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nextvit-wheels}
wheel_dir="$cache_root/torch-$torch_version-$py_tag-$flavour"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    say "building $mmcv_req from source against torch $torch_version ($flavour ops); about 10 minutes on 2 idle cores, once"
    mkdir -p "$wheel_dir"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${pip[@]}" wheel --no-build-isolation --no-deps "$mmcv_req" -w "$wheel_dir"
else
    say "reusing the mmcv wheel built earlier: $(ls "$wheel_dir"/mmcv-*.whl)"
fi

say "installing requirements.txt"
# the wheel of this flavour replaces an mmcv 2.1.0 installed for the other one (same version: pip would keep it)
"${pip[@]}" install --force-reinstall --no-deps "$wheel_dir"/mmcv-*.whl
"${pip[@]}" install --find-links "$wheel_dir" -r requirements.txt
"${pip[@]}" install --no-deps --no-build-isolation -e .

say "checking the install"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, torchvision, mmcv, mmdet, mmseg, mmengine
from mmcv.ops import nms, roi_align  # fails when mmcv was built without its ops
import nextvit
if torch.cuda.is_available():  # fails when mmcv's ops were built without CUDA
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]], device="cuda")
    nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), 0.5)
expected = {l.split("==")[0]: l.split("==")[1].split(",")[0].strip()
            for l in open("requirements.txt") if "==" in l and not l.startswith("#")}
for name, version in expected.items():
    version = version.split("#")[0].strip()
    got = md.version(name)
    if got.split("+")[0] != version:
        raise SystemExit(f"[setup] {name} is {got}, requirements.txt pins {version}")
ops = "CUDA" if torch.cuda.is_available() else "CPU"
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__} "
      f"({ops} ops ok), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, nextvit {nextvit.__version__}")
PY
setup_digest > "$STAMP"
