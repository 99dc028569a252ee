"""Low-precision CPU deployment: int8 QDQ ONNX from a checkpoint and image folders, end to end on
generated data. (OpenVINO IR: test_openvino.py; the folded model in bf16: test_folding.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_and_calibrate

import nextvit
from nextvit.images import ImageFileError, ImageReader, find_images, labelled_images
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
    assert q["fp32_groups"] == ["stages.3.e_mhsa"]  # the default recipe: the last stage's attention stays fp32
    assert any("/stages.3/" in n and "/e_mhsa/" in n for n in q["fp32_nodes_kept"])
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
        result.update(top1_int8=result["top1_fp32"] - 2.0, top1_drop=2.0, top1_drop_interval95=[-1.0, 5.0])
        return result

    monkeypatch.setattr(quantize, "evaluate_onnx", worse)
    output = tmp_path / "int8.onnx"
    code = script.main(["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
                        "--calib-dir", str(shapes / "train"), "--calib-images", "2", "--eval-dir", str(shapes / "val"),
                        "--max-drop", "0.5", "--latency-runs", "0", "--output", str(output)])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 1 and "loses 2.00 points" in printed.err
    assert "interval is +-3.00 points, more than half the 0.5-point gate" in printed.out  # 20 images see little
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


def test_layer_groups_name_stage_and_block_part():
    from nextvit.export.layer_groups import group_of_node

    assert group_of_node("/stages/stages.2/blocks/blocks.4/e_mhsa/MatMul") == "stages.2.e_mhsa"
    assert group_of_node("/stages/stages.0/blocks/blocks.1/mlp/fc2/Add") == "stages.0.mlp"
    assert group_of_node("/stages/stages.3/blocks/blocks.0/Concat_1") == "stages.3.block"
    assert group_of_node("/stem/stem.0/conv/Conv") == "stem"
    assert group_of_node("/head/fc/Gemm") == "head"
    assert group_of_node("Constant_12") == "graph"


def test_keep_fp32_leaves_the_named_groups_unquantized(shapes, tiny_checkpoint, tmp_path):
    from nextvit.export.layer_groups import layer_groups
    from nextvit.export.quantize import QuantizeError, checked_fp32_export, quantize_qdq
    from nextvit.export.source import load_source

    source = load_source("nextvit_tiny", tiny_checkpoint, image_size=64)
    fp32 = tmp_path / "fp32.onnx"
    checked_fp32_export(source, fp32)
    groups = layer_groups(fp32)
    assert {"stem", "stages.0.mhca", "stages.2.e_mhsa", "stages.3.mlp", "norm", "head"} <= set(groups)
    calib = find_images(shapes / "train", 8)
    prep = ImageReader(Preprocessing((64, 64)).array)
    settings = quantize_qdq(fp32, tmp_path / "int8.onnx", calib, prep, keep_fp32=["stages.2.e_mhsa"])
    kept = set(settings["fp32_nodes_kept"])
    assert settings["fp32_groups"] == ["stages.2.e_mhsa"]
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    in_int8 = {n.name for n in int8.graph.node}  # ONNX Runtime's preparation folds some constants away
    assert set(groups["stages.2.e_mhsa"]) & in_int8 <= kept and not set(groups["stages.1.mhca"]) & kept
    produced_by = {o: n.op_type for n in int8.graph.node for o in n.output}

    def weight_sources(group: str) -> set:  # what feeds the weight input of the group's linear layers
        return {produced_by.get(n.input[1], "initializer") for n in int8.graph.node
                if n.name in groups[group] and n.op_type == "MatMul" and n.name.endswith("/MatMul")
                and "/proj/" in n.name}  # fmt: skip

    assert weight_sources("stages.2.e_mhsa") == {"initializer"}  # fp32 weights, used as they are
    assert weight_sources("stages.1.e_mhsa") == {"DequantizeLinear"}  # int8 weights
    with pytest.raises(QuantizeError, match="no layer group stages.9.mlp .*its groups are stem"):
        quantize_qdq(fp32, tmp_path / "bad.onnx", calib, prep, keep_fp32=["stages.9.mlp"])
    assert not (tmp_path / "bad.onnx").exists()


def test_sensitivity_writes_a_row_per_group_and_no_model(import_script, shapes, tiny_checkpoint, tmp_path):
    script = import_script("deployment", "quantize")
    report_path = tmp_path / "sensitivity.json"
    common = ["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
              "--calib-dir", str(shapes / "train"), "--calib-images", "8"]  # fmt: skip
    code = script.main([*common, "--eval-dir", str(shapes / "val"), "--sensitivity", "keep-fp32",
                        "--keep-fp32", "stem", "--output", str(report_path)])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sensitivity.json"]
    report = json.loads(report_path.read_text())
    assert report["mode"] == "keep-fp32" and report["images"] == 20 and report["keep_fp32"] == ["stem"]
    rows = {r["group"]: r for r in report["groups"]}
    assert "stem" not in rows and "head" in rows and "stages.2.e_mhsa" in rows and "graph" not in rows
    for row in rows.values():
        lo, hi = row["top1_drop_interval95"]
        assert lo <= row["top1_drop"] <= hi and row["nodes"] > 0
        assert row["effect"] == pytest.approx(report["baseline"]["top1_drop"] - row["top1_drop"], abs=1e-3)
    effects = [r["effect"] for r in report["groups"]]
    assert effects == sorted(effects, reverse=True)
    with pytest.raises(SystemExit) as exit_info:  # it measures top-1: labelled images are needed
        script.main([*common, "--sensitivity", "int8-only"])
    assert exit_info.value.code == 2


# The demo's recipe (scripts/demo.sh, steps 2 and 4). A shorter training run (10 epochs, 52% top-1)
# does not show the demo model's sensitivity: its many near-ties flip under any layer's int8 error.
DEMO_TRAIN = ("--model nextvit_tiny --input-size 64 --epochs 30 --batch-size 32 --lr 2e-2 --warmup-epochs 2 --mixup 0 "
              "--cutmix 0 --reprob 0 --aa rand-m5-mstd0.5-inc1 --num-workers 2 --print-freq 20").split()  # fmt: skip
DEMO_QUANTIZE = "--calib-images 200 --calib-method percentile --max-drop 0.5 --latency-runs 0".split()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo's generated sets: 10 classes x (150 train + 30 val), and 10,000 held-out images."""
    from nextvit.synthetic import make_classification_dataset

    root = tmp_path_factory.mktemp("demo")
    train = make_classification_dataset(root / "shapes", num_classes=10, train_per_class=150, val_per_class=30,
                                        size=64, seed=0)  # fmt: skip
    held_out = make_classification_dataset(root / "eval", num_classes=10, train_per_class=0, val_per_class=1000,
                                           size=64, seed=1)  # fmt: skip
    return train, held_out / "val"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["--channels-last", "--no-channels-last"])
def test_demo_int8_step_passes_with_margin_for_either_training_layout(import_script, demo_data, layout, tmp_path):
    """The demo's int8 step, on the demo's model trained either way, passes its 0.5-point gate with room
    to spare: on 10,000 images the drop's whole 95% interval is below the gate. Keeping the last
    stage's E-MHSA in fp32 (the default recipe) is what buys the room: it removes most of the images
    on which int8 and fp32 disagree, against the same model with every layer in int8."""
    train, held_out = demo_data
    out = tmp_path / "run"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2")  # the demo's threads
    command = ["bash", str(REPO / "classification" / "train.sh"), "1", *DEMO_TRAIN, layout]
    result = subprocess.run([*command, "--data-path", str(train), "--output-dir", str(out)], capture_output=True,
                            text=True, env=env, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    script = import_script("deployment", "quantize")
    records = {}
    for recipe, extra in (("default", []), ("all-int8", ["--keep-fp32", "--max-drop", "100"])):
        output = tmp_path / f"{recipe}.onnx"
        code = script.main(["--checkpoint", str(out / "checkpoint_best.pth"), "--calib-dir", str(train / "train"),
                            *DEMO_QUANTIZE, "--eval-dir", str(held_out), "--output", str(output), *extra])  # fmt: skip
        assert code == 0, recipe
        records[recipe] = json.loads(output.with_name(output.name + ".json").read_text())
    default, full = records["default"]["accuracy"], records["all-int8"]["accuracy"]
    assert default["images"] == 10_000 and records["default"]["quantization"]["fp32_groups"] == ["stages.3.e_mhsa"]
    assert default["top1_drop_interval95"][1] < 0.5, default
    assert 100 - default["top1_agreement"] < 0.7 * (100 - full["top1_agreement"]), (default, full)
