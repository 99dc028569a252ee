"""deployment/predict.py over every artifact kind that runs here, the exporters' sidecars carrying a
training run's preprocessing and class names, the single loading path, the int8 recipe's graph."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import nextvit
from nextvit.export import ExportError, load_source
from nextvit.predict import PredictError, load_predictor, predict_images
from nextvit.synthetic import SHAPE_CLASSES, make_classification_dataset

DEPLOYMENT = Path(__file__).resolve().parents[1] / "deployment"
CLASSES = sorted(SHAPE_CLASSES[:10])  # as ImageFolder orders them, and main.py records them


def run(script: str, *args, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(DEPLOYMENT / script), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    if result.returncode != expect:
        raise AssertionError(
            f"{script} exited {result.returncode}, expected {expect}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def run_folder(tiny_calibrated, tmp_path_factory) -> Path:
    """A training run's output as classification/main.py leaves it: weights and config.json."""
    folder = tmp_path_factory.mktemp("run")
    nextvit.save_checkpoint(tiny_calibrated, folder / "model.safetensors")
    config = dict(arch="nextvit_tiny", num_classes=10, input_size=64, crop_pct=0.875, interpolation="bicubic",
                  mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], kv_pool="1d", class_names=CLASSES)  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return make_classification_dataset(root, num_classes=10, train_per_class=3, val_per_class=2, size=80, seed=3)


@pytest.fixture(scope="module")
def artifacts(run_folder, shapes, tmp_path_factory) -> dict[str, Path]:
    """ONNX fp32, OpenVINO fp32 and int8 QDQ exports of the run, by the scripts, with only --checkpoint."""
    out = tmp_path_factory.mktemp("exports")
    ckpt = run_folder / "model.safetensors"
    run("export_onnx.py", "--checkpoint", ckpt, "--dynamic-batch", "--output", out / "fp32.onnx", cwd=out)
    run("export_openvino.py", "--checkpoint", ckpt, "--output", out / "fp32.xml", "--latency-runs", "0", cwd=out)
    run("quantize.py", "--checkpoint", ckpt, "--calib-dir", shapes / "train", "--calib-images", "20",
        "--latency-runs", "0", "--output", out / "int8.onnx", cwd=out)  # fmt: skip
    return {"checkpoint": ckpt, "onnx": out / "fp32.onnx", "openvino": out / "fp32.xml", "int8": out / "int8.onnx"}


def test_exporters_carry_the_runs_size_preprocessing_and_class_names(artifacts):
    for kind in ("onnx", "openvino", "int8"):
        record = json.loads(Path(str(artifacts[kind]) + ".json").read_text())
        assert record["model"] == "nextvit_tiny", kind
        assert record["input"]["shape"][2:] == [64, 64], kind
        assert record["class_names"] == CLASSES, kind
        prep = record["preprocessing"]
        assert prep["center_crop"] == [64, 64] and prep["resize_shorter_side"] == 73 and prep["crop_pct"] == 0.875


def test_coreml_bakes_in_the_runs_normalisation_and_records_its_classes(run_folder, tmp_path):
    pytest.importorskip("coremltools")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((run_folder / "model.safetensors").read_bytes())
    config = json.loads((run_folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 0.5])))
    run("export_coreml_model.py", "--checkpoint", folder / "model.safetensors", "--output", tmp_path / "m.mlpackage",
        cwd=tmp_path)  # fmt: skip
    record = json.loads((tmp_path / "m.mlpackage.json").read_text())
    assert record["class_names"] == CLASSES and record["input"]["shape"] == [1, 3, 64, 64]
    prep = record["preprocessing"]
    assert prep["mean"] == [0.5, 0.5, 0.5] and prep["image_type_bias"] == [-0.5, -0.5, -0.5]
    assert prep["channel_multiplier"] == [4.0, 2.0, 2.0] and record["check"]["trace"]["passed"]


def test_tensorrt_sidecar_carries_the_runs_settings(import_script, run_folder, tmp_path, monkeypatch):
    from test_deployment import _stand_in_trtexec

    trt_script, trtexec = _stand_in_trtexec(import_script, tmp_path, monkeypatch)
    argv = ["--checkpoint", str(run_folder / "model.safetensors"), "--datatype", "fp16", "--trtexec-path",
            str(trtexec), "--output", str(tmp_path / "tiny.trt")]  # fmt: skip
    assert trt_script.main(argv) == 0
    record = json.loads((tmp_path / "tiny.trt.json").read_text())
    assert record["class_names"] == CLASSES and record["input"]["shape"] == [1, 3, 64, 64]
    assert record["onnx"]["opset"] == 17


def test_every_runtime_gives_the_checkpoints_top1(artifacts, shapes):
    images = sorted((shapes / "val").rglob("*.png"))
    results = {}
    for kind in ("checkpoint", "onnx", "openvino", "int8"):
        predictor = load_predictor(artifacts[kind])
        assert predictor.class_names == CLASSES and predictor.preprocessing.input_size == (64, 64)
        predictions, summary = predict_images(predictor, images, batch_size=7, topk=3)
        assert summary.images == len(images) == 20 and summary.images_per_s > 0
        results[kind] = predictions
    reference = results["checkpoint"]
    for kind in ("onnx", "openvino"):
        for a, b in zip(reference, results[kind]):
            assert a.path == b.path and a.indices[0] == b.indices[0], kind
            assert np.allclose(a.probabilities, b.probabilities, atol=1e-4), (kind, a, b)
    agree = np.mean([a.indices[0] == b.indices[0] for a, b in zip(reference, results["int8"])])
    assert agree >= 0.8, agree  # random (calibrated) weights: int8 agreement measured 0.95-1.0
    for pred in reference:
        assert pred.probabilities == sorted(pred.probabilities, reverse=True) and sum(pred.probabilities) <= 1 + 1e-6
        assert pred.names == [CLASSES[i] for i in pred.indices]


def test_predict_script_writes_csv_and_jsonl(artifacts, shapes, tmp_path):
    result = run("predict.py", artifacts["int8"], shapes / "val" / "circle", str(shapes / "val" / "star" / "*.png"),
                 "--topk", "5", "--output", tmp_path / "p.csv", "--quiet", cwd=tmp_path)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 4 and all(r["top1_name"] in CLASSES for r in rows)
    assert set(rows[0]) >= {"path", "top5_name", "top5_probability"} and "images/s" in result.stderr
    run("predict.py", artifacts["onnx"], shapes / "val" / "ring", "--output", tmp_path / "p.jsonl", cwd=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and len(lines[0]["topk"]) == 5 and lines[0]["topk"][0]["name"] in CLASSES


def test_refusals_name_the_problem(artifacts, run_folder, shapes, tmp_path):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(artifacts["onnx"].read_bytes())  # no sidecar
    image = next((shapes / "val").rglob("*.png"))
    err = run("predict.py", bare, image, cwd=tmp_path, expect=2).stderr
    assert "no preprocessing is known" in err and "--image-size" in err
    run("predict.py", bare, image, "--image-size", "64", cwd=tmp_path)  # the flag is enough
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    err = run("predict.py", artifacts["onnx"], image, "--class-names", tmp_path / "three.txt", cwd=tmp_path,
              expect=2).stderr  # fmt: skip
    assert "3 class names but the model has 10 outputs" in err
    err = run("predict.py", artifacts["openvino"], image, "--num-classes", "7", cwd=tmp_path, expect=2).stderr
    assert "10 outputs, but 7 classes" in err
    lone = tmp_path / "lone" / "model.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((run_folder / "model.safetensors").read_bytes())  # no config.json beside it
    err = run("predict.py", lone, image, cwd=tmp_path, expect=2).stderr
    assert "no config.json" in err and "--image-size" in err


def test_static_input_size_disagreeing_with_the_flag_is_refused(run_folder, tmp_path):
    run(
        "export_onnx.py",
        "--checkpoint",
        run_folder / "model.safetensors",
        "--output",
        tmp_path / "s.onnx",
        cwd=tmp_path,
    )
    with pytest.raises(PredictError, match="takes 64x64 inputs but --image-size gives 96x96"):
        load_predictor(tmp_path / "s.onnx", preprocessing=dict(input_size=96))


def test_unreadable_image_stops_or_is_skipped(artifacts, shapes, tmp_path):
    good = sorted((shapes / "val" / "circle").glob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(good[0].read_bytes()[:60])
    err = run("predict.py", artifacts["onnx"], *good, broken, cwd=tmp_path, expect=2).stderr
    assert f"cannot read image {broken}" in err and "--skip-corrupt" in err
    result = run("predict.py", artifacts["onnx"], *good, broken, "--skip-corrupt", cwd=tmp_path)
    assert "skipped 1 unreadable image(s)" in result.stderr and "2 image(s) in" in result.stderr


def test_one_loading_path_refuses_a_kv_pool_conflict(tiny_calibrated, tmp_path):
    model = nextvit.create_model("nextvit_tiny", num_classes=10, kv_pool="2d")
    path = nextvit.save_checkpoint(model, tmp_path / "pool2d.safetensors")
    with pytest.raises(ValueError, match="trained with kv_pool='2d'"):
        nextvit.create_model("nextvit_tiny", checkpoint_path=path, num_classes=10, kv_pool="1d")
    with pytest.raises(ExportError, match="trained with kv_pool='2d'") as info:
        load_source("nextvit_tiny", path, image_size=64, kv_pool="1d")
    assert info.value.param == "kv_pool"
    assert load_source("nextvit_tiny", path, image_size=64).kv_pool == "2d"  # the checkpoint's, when unset
    err = run("export_onnx.py", "--checkpoint", path, "--model", "nextvit_tiny", "--image-size", "64", "--kv-pool",
              "1d", cwd=tmp_path, expect=2).stderr  # fmt: skip
    assert "--kv-pool 1d" in err


def test_int8_recipes_and_their_graph_statistics(run_folder, shapes, tmp_path):
    records = {}
    for ops in ("all", "conv-matmul"):
        out = tmp_path / f"{ops}.onnx"
        run("quantize.py", "--checkpoint", run_folder / "model.safetensors", "--calib-dir", shapes / "train",
            "--calib-images", "10", "--latency-runs", "0", "--ops", ops, "--output", out, cwd=tmp_path)  # fmt: skip
        records[ops] = json.loads(Path(str(out) + ".json").read_text())
    for ops, record in records.items():
        graph = record["int8_graph"]
        assert graph["int8_nodes"] > 0 and graph["nodes"] == sum(graph["op_types"].values()), ops
        assert record["quantization"]["quantized_ops"] == ops
        (head,) = record["quantization"]["fp32_nodes_kept"]  # the classifier stays fp32 by default
        model = onnx.load(str(tmp_path / f"{ops}.onnx"))
        node = next(n for n in model.graph.node if n.name == head)
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        assert node.op_type == "Gemm" and producers.get(node.input[1]) != "DequantizeLinear"
    # quantizing every op type keeps more of the graph in int8 and converts less often
    assert records["all"]["int8_graph"]["int8_nodes"] > records["conv-matmul"]["int8_graph"]["int8_nodes"]
    assert records["all"]["int8_graph"]["fp32_nodes"] < records["conv-matmul"]["int8_graph"]["fp32_nodes"]


def test_accuracy_report_has_intervals(run_folder, shapes, tmp_path):
    out = tmp_path / "gated.onnx"
    result = run("quantize.py", "--checkpoint", run_folder / "model.safetensors", "--calib-dir", shapes / "train",
                 "--calib-images", "10", "--latency-runs", "0", "--eval-dir", shapes / "val", "--max-drop", "100",
                 "--output", out, cwd=tmp_path)  # fmt: skip
    accuracy = json.loads(Path(str(out) + ".json").read_text())["accuracy"]
    low, high = accuracy["top1_agreement_interval95"]
    assert low <= accuracy["top1_agreement"] <= high and accuracy["images"] == 20
    lo, hi = accuracy["top1_drop_interval95"]
    assert lo <= accuracy["top1_drop"] <= hi and accuracy["one_image_points"] == 5.0
    assert "too coarse to see a 0.5-point drop" in result.stderr


def test_paired_interval_and_wilson_interval():
    from nextvit.export.verify import paired_difference_interval, wilson_interval

    a = [True] * 1900 + [False] * 100
    b = [True] * 1890 + [False] * 110
    d = paired_difference_interval(a, b)
    assert d["difference"] == pytest.approx(0.5) and d["one_image_points"] == 0.05
    # ten images lost, none gained: se = sd/sqrt(n) of ten ones among 2,000
    expected_se = np.std([1] * 10 + [0] * 1990, ddof=1) / np.sqrt(2000) * 100
    assert d["standard_error"] == pytest.approx(expected_se, abs=1e-3)
    low, high = wilson_interval(1970, 2000)
    assert 97.8 < low < 98.5 < high < 99.0
    assert wilson_interval(10, 10)[1] == 100.0 and wilson_interval(10, 10)[0] < 100.0


def test_predictor_checks_its_outputs(artifacts, shapes):
    predictor = load_predictor(artifacts["onnx"])
    predictor.run = lambda x: np.zeros((len(x), 3), np.float32)  # a model that returns the wrong width
    with pytest.raises(ValueError, match="expected \\(batch, 10\\)"):
        predict_images(predictor, sorted((shapes / "val").rglob("*.png"))[:2])
