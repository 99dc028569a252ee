"""Low-precision CPU deployment: int8 QDQ ONNX from a checkpoint and image folders, end to end on
generated data. (OpenVINO IR: test_openvino.py; the folded model in bf16: test_folding.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_and_calibrate

import nextvit
from nextvit.images import ImageFileError, find_images, labelled_images
from nextvit.preprocess import Preprocessing

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """10 classes (as many as the tiny model's head), a few images each."""
    from nextvit.synthetic import make_classification_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_classification_dataset(root, num_classes=10, train_per_class=3, val_per_class=2, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10), size=64)
    return nextvit.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def quantized(import_script, shapes, tiny_checkpoint, tmp_path_factory):
    """One end-to-end run of deployment/quantize.py, shared by the checks below."""
    script = import_script("deployment", "quantize")
    output = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    code = script.main([
        "--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
        "--calib-dir", str(shapes / "train"), "--calib-images", "16", "--eval-dir", str(shapes / "val"),
        "--max-drop", "100", "--latency-runs", "3", "--output", str(output),
    ])  # fmt: skip
    assert code == 0
    return output


def test_quantize_writes_a_qdq_model_and_its_record(quantized):
    model = onnx.load(str(quantized))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    # per-channel weights: some DequantizeLinear has a vector of scales
    inits = {i.name: i for i in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    record = json.loads(quantized.with_name(quantized.name + ".json").read_text())
    q = record["quantization"]
    assert q["format"] == "QDQ" and q["calibration_images"] == 16 and q["per_channel"] and q["method"] == "minmax"
    assert q["activations"] == "uint8 asymmetric" and q["reduce_range"] == (not q["cpu_vnni"])
    acc = record["accuracy"]
    assert acc["images"] == 20
    for key in ("top1_fp32", "top1_int8", "top1_agreement"):
        assert 0.0 <= acc[key] <= 100.0
    assert acc["top1_drop"] == pytest.approx(acc["top1_fp32"] - acc["top1_int8"], abs=1e-3)
    assert 0.9 < acc["logit_cosine_mean"] <= 1.0 + 1e-6 and acc["logit_cosine_min"] <= acc["logit_cosine_mean"]
    assert record["check"]["cosine_min"] > 0.9
    assert record["latency"]["fp32_ms"] > 0 and record["latency"]["int8_ms"] > 0
    assert record["checkpoint"]["sha256"] and record["versions"]["onnxruntime"]


def test_quantized_model_tracks_pytorch(quantized, tiny_checkpoint, shapes):
    """The int8 model's logits on real images point where the fp32 model's do."""
    from nextvit.export import onnx_session

    model = nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=tiny_checkpoint).eval()
    images = find_images(shapes / "val", limit=8)
    x = np.stack([Preprocessing(64)(p) for p in images])
    got = onnx_session(quantized).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.9


def test_tensorrt_target_is_symmetric_int8(import_script, shapes, tiny_checkpoint, tmp_path):
    script = import_script("deployment", "quantize")
    output = tmp_path / "trt.onnx"
    assert script.main(["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
                        "--calib-dir", str(shapes / "train"), "--calib-images", "4", "--target", "tensorrt",
                        "--latency-runs", "0", "--output", str(output)]) == 0  # fmt: skip
    model = onnx.load(str(output))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]  # fmt: skip
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def _run_cli(args, cwd, env_extra=None):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)  # fmt: skip


def test_refusals_leave_no_file(shapes, tiny_checkpoint, tmp_path):
    script = REPO / "deployment" / "quantize.py"
    base = [script, "--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--image-size", "64",
            "--latency-runs", "0", "--output", tmp_path / "out.onnx"]  # fmt: skip
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "notes.txt").write_text("not an image")
    result = _run_cli([*base, "--calib-dir", empty], tmp_path)
    assert result.returncode == 2 and f"--calib-dir {empty} holds no images" in result.stderr
    # an eval folder of other classes than the checkpoint's head
    from PIL import Image

    four = tmp_path / "four"
    for name in "abcd":
        (four / name).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(four / name / "x.png")
    result = _run_cli([*base, "--calib-dir", shapes / "train", "--calib-images", "2", "--eval-dir", four], tmp_path)
    assert result.returncode == 2 and "has 4 class folders but the classifier has 10 outputs" in result.stderr
    # no runtime: an import of onnxruntime that fails
    fake = tmp_path / "no_ort"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    result = _run_cli([*base, "--calib-dir", shapes / "train"], tmp_path, {"PYTHONPATH": str(fake)})
    assert result.returncode == 3 and "ONNX Runtime is not installed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("out.onnx*")) and not list(tmp_path.glob(".out.onnx*"))


def test_accuracy_drop_above_the_limit_fails(import_script, shapes, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import nextvit.export.quantize as quantize

    script = import_script("deployment", "quantize")
    real = quantize.evaluate_onnx

    def worse(*args, **kwargs):
        result = real(*args, **kwargs)
        result.update(top1_int8=result["top1_fp32"] - 2.0, top1_drop=2.0)
        return result

    monkeypatch.setattr(quantize, "evaluate_onnx", worse)
    output = tmp_path / "int8.onnx"
    code = script.main(["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
                        "--calib-dir", str(shapes / "train"), "--calib-images", "2", "--eval-dir", str(shapes / "val"),
                        "--max-drop", "0.5", "--latency-runs", "0", "--output", str(output)])  # fmt: skip
    assert code == 1 and "loses 2.00 points" in capsys.readouterr().err
    assert not output.exists() and not list(tmp_path.glob(".int8.onnx*"))


def test_image_folder_helpers(shapes, tmp_path):
    picked = find_images(shapes / "train", limit=10)
    assert len({p.parent.name for p in picked}) == 10  # one per class before any class gets a second
    samples, classes = labelled_images(shapes / "val", 10)
    assert len(samples) == 20 and classes == sorted(classes)
    with pytest.raises(ImageFileError, match="differ from the model's classes"):
        labelled_images(shapes / "val", 10, class_names=[f"c{i}" for i in range(10)])
    with pytest.raises(ImageFileError, match="no such folder"):
        find_images(tmp_path / "missing", flag="--calib-dir")
    x = Preprocessing(64)(picked[0])
    assert x.shape == (3, 64, 64) and x.dtype == np.float32 and -3 < x.mean() < 3


def test_a_corrupt_image_stops_quantization_or_is_skipped_and_counted(
    import_script, shapes, tiny_checkpoint, tmp_path, capsys
):
    import shutil

    calib, val = tmp_path / "calib", tmp_path / "val"
    shutil.copytree(shapes / "train", calib)
    shutil.copytree(shapes / "val", val)
    for folder in (calib, val):
        good = next((folder / "circle").glob("*.png"))
        (folder / "circle" / "broken.png").write_bytes(good.read_bytes()[:60])
    script = import_script("deployment", "quantize")
    output = tmp_path / "q.onnx"
    base = ["--checkpoint", str(tiny_checkpoint), "--image-size", "64", "--calib-dir", str(calib),
            "--calib-images", "40", "--eval-dir", str(val), "--max-drop", "100", "--latency-runs", "0",
            "--output", str(output)]  # fmt: skip
    assert script.main(base) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "broken.png" in err and "--skip-corrupt" in err and "Traceback" not in err
    assert not output.exists()
    assert script.main([*base, "--skip-corrupt"]) == 0
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
    record = json.loads(output.with_name(output.name + ".json").read_text())
    assert record["skipped_images"]["count"] == 2
    assert record["quantization"]["calibration_images"] == 24  # 30 readable, in equal batches of 8
    assert record["accuracy"]["images"] == 20 and record["accuracy"]["skipped"] == 1
