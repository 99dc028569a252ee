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


# Imported by the package but not declared, on purpose: TensorRT comes with NVIDIA's install (its
# PyPI wheels fetch from NVIDIA's index), the ONNX simplifiers are used when present.
UNDECLARED = {"tensorrt", "onnxsim", "onnxslim"}
DISTRIBUTION = {"PIL": "pillow", "mmseg": "mmsegmentation"}  # import name -> distribution, where they differ


def test_every_third_party_import_of_the_package_is_declared():
    import ast
    import re

    import pytest

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml without a dependency")

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    imported = set()
    for path in (root / "nextvit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "nextvit"} - UNDECLARED
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in declared}
    assert missing == set(), f"imported by nextvit/ but not in pyproject.toml: {sorted(missing)}"


def test_the_core_tier_runs_with_the_package_alone():
    """`pytest -m core` with every optional stack made unimportable, as after `pip install -e .`."""
    optional = ("timm", "fvcore", "torchvision", "PIL", "matplotlib", "onnx", "onnxruntime", "onnxscript", "openvino",
                "coremltools", "mmengine", "mmcv", "mmdet", "mmseg")  # fmt: skip
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({optional!r})); import pytest; "
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-m', 'core', "
        "'-k', 'not test_the_core_tier_runs_with_the_package_alone']))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=1200)
    tail = result.stdout[-2000:]
    assert result.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail.lower(), tail
