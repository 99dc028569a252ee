"""The package alone: `import nextvit` stays light, and every test file belongs to a tier."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TIER_OF_FILE

HEAVY = ("mmengine", "mmcv", "mmdet", "mmseg", "onnx", "onnxruntime", "openvino", "coremltools", "tensorrt",
         "matplotlib", "huggingface_hub", "timm", "fvcore", "PIL")  # fmt: skip


def test_import_nextvit_pulls_in_no_optional_dependency():
    code = f"import sys, nextvit; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "", f"import nextvit imported optional modules: {result.stdout}"


def test_every_test_file_has_a_tier():
    files = sorted(p.stem for p in Path(__file__).parent.glob("test_*.py"))
    assert [f for f in files if f not in TIER_OF_FILE] == [], "add them to TIERS in tests/conftest.py"


def test_import_of_the_export_and_benchmark_packages_stays_light():
    """Each exporter's toolkit (onnx, coremltools, TensorRT, OpenVINO) is imported when it is used."""
    heavy = ("onnx", "onnxruntime", "openvino", "coremltools", "tensorrt", "mmengine", "timm", "matplotlib")
    code = f"import sys, nextvit.export, nextvit.benchmark; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "", f"imported optional modules: {result.stdout}"
