"""OpenVINO IR in fp32, bf16 and int8 from deployment/export_openvino.py, checked against PyTorch.

The int8 IR converts a QDQ model; it is made here with the library's quantizer (deployment/quantize.py
has its own tests in test_quantize.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_and_calibrate

import nextvit


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10), size=64)
    return nextvit.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def qdq_model(tiny_checkpoint, tmp_path_factory):
    """The checkpoint's folded fp32 ONNX export, quantized to int8 QDQ on a few generated images."""
    import onnx

    from nextvit.export.onnx import export_onnx
    from nextvit.export.quantize import quantize_qdq
    from nextvit.images import find_images
    from nextvit.preprocess import Preprocessing
    from nextvit.synthetic import make_classification_dataset

    root = tmp_path_factory.mktemp("int8")
    make_classification_dataset(root / "shapes", num_classes=10, train_per_class=2, val_per_class=1, size=64, seed=0)
    model = nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=tiny_checkpoint)
    fp32 = root / "tiny_fp32.onnx"
    onnx.save(export_onnx(nextvit.fold_batchnorm(model), torch.randn(1, 3, 64, 64), dynamic_batch=True), str(fp32))
    output = root / "tiny_int8.onnx"
    quantize_qdq(fp32, output, find_images(root / "shapes" / "train", limit=16), Preprocessing(64))
    return output


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_export_checks_against_pytorch(import_script, tiny_checkpoint, qdq_model, tmp_path, precision):
    script = import_script("deployment", "export_openvino")
    output = tmp_path / f"tiny_{precision}.xml"
    args = ["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
            "--precision", precision, "--latency-runs", "2", "--output", str(output)]  # fmt: skip
    if precision == "int8":  # random weights: int8 logits on random images stay within cosine 0.95, not 0.99
        args += ["--onnx", str(qdq_model), "--min-cosine", "0.95"]
    assert script.main(args) == 0
    assert output.is_file() and output.with_suffix(".bin").is_file()
    record = json.loads(output.with_name(output.name + ".json").read_text())
    assert record["precision"] == precision and record["check"]["passed"] and record["latency"]["ms"] > 0
    if precision == "fp32":
        assert record["check"]["max_rel_diff"] < 1e-4
    else:
        assert record["check"]["cosine_min"] >= (0.95 if precision == "int8" else 0.99)
    assert record["check"]["effective_precision"] in ("f32", "bf16")


def test_openvino_says_when_it_exports_random_weights(tmp_path):
    script = Path(__file__).resolve().parents[1] / "deployment" / "export_openvino.py"
    result = subprocess.run([sys.executable, str(script), "--model", "nextvit_tiny", "--image-size", "64",
                             "--num-classes", "10", "--random-weights", "--latency-runs", "0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note: exporting random weights (--random-weights): for latency measurements only" in result.stderr


def test_openvino_int8_needs_a_qdq_file(import_script, tiny_checkpoint, tmp_path):
    script = import_script("deployment", "export_openvino")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "int8"])
    assert exit_info.value.code == 2
