"""deployment/predict.py over every artifact kind that runs here, the exporters' sidecars carrying a
training run's preprocessing and class names, the single loading path, the int8 recipe's graph, a
checkpoint on CUDA and in bf16/fp16 (`--device`, `--dtype`; .pt2 packages: test_aoti.py)."""

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
from nextvit.export import load_source
from nextvit.loading import LoadError
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
    with pytest.raises(LoadError, match="trained with kv_pool='2d'") as info:
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
        kept = record["quantization"]["fp32_nodes_kept"]  # the classifier and the last stage's E-MHSA
        (head,) = [n for n in kept if n.startswith("/head/")]
        assert record["quantization"]["fp32_groups"] == ["stages.3.e_mhsa"]
        assert all(n.startswith(("/head/", "/stages/stages.3/")) and "/e_mhsa/" in n or n == head for n in kept)
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


# --------------------------------------------------------------------------------------------
# Bad input: lone checkpoints, malformed sidecars, failed runs, huge images, --help
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predict_script(import_script):
    return import_script("deployment", "predict")


@pytest.fixture(scope="module")
def lone_training_checkpoint(tiny_calibrated, tmp_path_factory) -> Path:
    """A checkpoint.pth of classification/main.py copied alone: no config.json, its own args inside."""
    import torch

    path = tmp_path_factory.mktemp("lone") / "checkpoint.pth"
    args = dict(model="nextvit_tiny", input_size=64, crop_pct=0.875, kv_pool="1d", lr=5e-4)
    torch.save(dict(model=tiny_calibrated.state_dict(), epoch=0, args=args), path)
    return path


def test_a_lone_training_checkpoint_predicts_and_exports_at_its_own_size(
    lone_training_checkpoint, run_folder, shapes, predict_script, capsys, tmp_path
):
    image = str(next((shapes / "val").rglob("*.png")))
    ckpt = str(lone_training_checkpoint)
    assert predict_script.main([ckpt, image, "--image-size", "64"]) == 0  # once a traceback (nextvit_small assumed)
    assert predict_script.main([ckpt, image]) == 0
    err = capsys.readouterr().err
    assert "nextvit_tiny (its training args), input 64x64 (its training args)" in err
    run("export_onnx.py", "--checkpoint", ckpt, "--output", tmp_path / "lone.onnx", cwd=tmp_path)
    record = json.loads((tmp_path / "lone.onnx.json").read_text())
    assert record["model"] == "nextvit_tiny" and record["input"]["shape"] == [1, 3, 64, 64]  # not 224
    args = "its training args"
    assert record["decided_from"] == dict(
        variant=args, input_size=args, kv_pool=args, num_classes="the weights' classifier"
    )
    err = run("export_onnx.py", "--checkpoint", ckpt, "--model", "nextvit_small", cwd=tmp_path, expect=2).stderr
    assert err.startswith("error: --model nextvit_small: the weights of") and "are a nextvit_tiny" in err
    assert len(err.strip().splitlines()) == 1  # no key lists


def test_predict_names_its_own_model_flag(lone_training_checkpoint, shapes, predict_script, capsys):
    image = str(next((shapes / "val").rglob("*.png")))
    with pytest.raises(SystemExit) as exit_info:
        predict_script.main([str(lone_training_checkpoint), image, "--model-name", "foo"])
    assert exit_info.value.code == 2 and "--model-name: invalid choice: 'foo'" in capsys.readouterr().err
    assert predict_script.main([str(lone_training_checkpoint), image, "--model-name", "nextvit_small"]) == 2
    err = capsys.readouterr().err
    assert "error: --model-name nextvit_small: the weights of" in err and "--model " not in err


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(class_names="abcdefghij"), "class_names must be a list of strings"),
        (dict(preprocessing=dict(center_crop="64")), "center_crop '64' takes one size"),
    ],
)
def test_a_malformed_sidecar_is_refused(artifacts, shapes, predict_script, capsys, tmp_path, changes, message):
    model = tmp_path / "m.onnx"
    model.write_bytes(artifacts["onnx"].read_bytes())
    record = json.loads(Path(str(artifacts["onnx"]) + ".json").read_text())
    Path(str(model) + ".json").write_text(json.dumps(dict(record, **changes)))
    assert predict_script.main([str(model), str(next((shapes / "val").rglob("*.png")))]) == 2
    err = capsys.readouterr().err
    assert message in err and "m.onnx.json" in err and "Traceback" not in err


def test_a_failed_run_leaves_no_misleading_output(artifacts, shapes, predict_script, capsys, tmp_path):
    good = [str(p) for p in sorted((shapes / "val" / "circle").glob("*.png"))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(good[0]).read_bytes()[:60])
    out = tmp_path / "p.csv"
    partial = tmp_path / ".p.csv.partial"
    common = [str(artifacts["onnx"]), "--output", str(out), "--batch-size", "1", "--quiet"]
    assert predict_script.main([*common[:1], str(broken), *good, *common[1:]]) == 2  # fails before any prediction
    err = capsys.readouterr().err
    assert "cannot read image" in err and "partial" not in err and not out.exists() and not partial.exists()
    assert predict_script.main([*common[:1], *good, str(broken), *common[1:]]) == 2  # fails after two
    err = capsys.readouterr().err
    assert f"the 2 prediction(s) made before the failure are in {partial}" in err and not out.exists()
    assert len(partial.read_text().splitlines()) == 3  # the header and two rows
    partial.unlink()
    assert predict_script.main([*common[:1], str(broken), *common[1:], "--skip-corrupt"]) == 2  # nothing readable
    err = capsys.readouterr().err
    assert "none of the 1 image(s) could be read: nothing was predicted" in err
    assert not out.exists() and not partial.exists()


def test_huge_images_are_refused_naming_the_limit_and_the_flag(artifacts, shapes, predict_script, capsys):
    image = str(next((shapes / "val").rglob("*.png")))  # 80x80 = 6,400 pixels
    assert predict_script.main([str(artifacts["onnx"]), image, "--max-image-pixels", "5000"]) == 2
    err = capsys.readouterr().err
    assert "80x80 = 6,400 pixels, above the limit of 5,000 (pass --max-image-pixels to lift it)" in err
    assert predict_script.main([str(artifacts["onnx"]), image, "--max-image-pixels", "6400"]) == 0


@pytest.mark.parametrize(
    "script",
    ["predict", "quantize", "export_onnx", "export_openvino", "export_coreml_model", "export_tensorrt_engine",
     "export_aoti", "benchmark"],
)  # fmt: skip
def test_help_states_each_default_once(import_script, script):
    parser = import_script("deployment", script).build_parser()
    formatter = parser._get_formatter()
    helps = {a.dest: formatter._expand_help(a) for a in parser._actions if a.help and a.help != "==SUPPRESS=="}
    doubled = {dest: text for dest, text in helps.items() if text.count("(default") > 1 or "(default: None)" in text}
    assert not doubled
    batch = helps.get("batch_size") or helps["batch_sizes"]
    assert "(default: 1)" in batch or "(default: 16)" in batch or "(default: [1, 8])" in batch  # still filled in
    assert "(default: None)" not in parser.format_help()


# --------------------------------------------------------------------------------------------
# --device and --dtype
# --------------------------------------------------------------------------------------------


def _agreement(reference, predictions, max_probability_diff: float) -> float:
    """The share of images whose top-1 agrees; every class probability within `max_probability_diff`."""
    assert [p.path for p in predictions] == [p.path for p in reference] and reference
    for a, b in zip(reference, predictions):
        by_class = dict(zip(a.indices, a.probabilities))
        worst = max(abs(by_class[i] - p) for i, p in zip(b.indices, b.probabilities))
        assert worst <= max_probability_diff, (a.path, worst)
    return float(np.mean([a.indices[0] == b.indices[0] for a, b in zip(reference, predictions)]))


def test_bf16_checkpoint_on_the_cpu_agrees_with_fp32(run_folder, shapes):
    """bf16 on the calibrated tiny model: measured top-1 agreement 20/20 and probabilities within 0.013 of fp32
    (an AVX512-BF16 CPU); a model cast wrongly (no cast of its input, fp32 weights left) fails to run or drifts."""
    images = sorted((shapes / "val").rglob("*.png"))
    ckpt = run_folder / "model.safetensors"
    reference, _ = predict_images(load_predictor(ckpt), images, topk=10)
    predictor = load_predictor(ckpt, dtype="bf16", device="cpu")
    assert predictor.device == "cpu" and "CPU, bf16" in predictor.runtime
    got, _ = predict_images(predictor, images, batch_size=7, topk=10)
    assert _agreement(reference, got, max_probability_diff=0.05) >= 0.9


def test_device_and_dtype_are_refused_where_they_do_not_apply(artifacts):
    for kind in ("onnx", "openvino", "int8"):
        with pytest.raises(PredictError, match="--device cuda: .* runs on the CPU here") as info:
            load_predictor(artifacts[kind], device="cuda")
        assert info.value.flag == "--device" and not info.value.unavailable
        with pytest.raises(PredictError, match="--dtype fp16: .* computes in the precision it was exported in"):
            load_predictor(artifacts[kind], dtype="fp16")
    assert load_predictor(artifacts["onnx"], device="cpu").device == "cpu"
    assert load_predictor(artifacts["onnx"], device="auto").device == "cpu"  # auto: where the kind runs


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_asked_without_a_gpu_is_one_line_and_exit_code_3(run_folder, shapes, predict_script, capsys):
    image = str(next((shapes / "val").rglob("*.png")))
    ckpt = str(run_folder / "model.safetensors")
    assert predict_script.main([ckpt, image, "--device", "cuda", "--dtype", "fp16"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda: no CUDA device here"), err
    assert predict_script.main([ckpt, image, "--device", "auto"]) == 0  # auto: the CPU here
    assert "(folded, CPU, fp32)" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_checkpoint_agrees_with_the_cpu(run_folder, shapes, tmp_path):
    """The script on CUDA in fp16 against fp32 on the CPU. The calibrated tiny model measured fp16 logit
    cosine 0.99998 against fp32 (test_aoti.py) and probabilities within 0.002 in fp16 on the CPU."""
    ckpt = run_folder / "model.safetensors"
    for device, dtype in (("cpu", "fp32"), ("cuda", "fp16")):
        result = run("predict.py", ckpt, shapes / "val", "--device", device, "--dtype", dtype, "--topk", "10",
                     "--batch-size", "7", "--output", tmp_path / f"{device}.jsonl", cwd=tmp_path)  # fmt: skip
        assert "images/s" in result.stderr
    assert f"CUDA, {__import__('torch').cuda.get_device_name()}, fp16, channels_last" in result.stderr
    rows = {}
    for device in ("cpu", "cuda"):
        lines = [json.loads(line) for line in (tmp_path / f"{device}.jsonl").read_text().splitlines()]
        rows[device] = [(r["path"], [t["index"] for t in r["topk"]], [t["probability"] for t in r["topk"]])
                        for r in lines]  # fmt: skip
    assert [r[0] for r in rows["cpu"]] == [r[0] for r in rows["cuda"]] and len(rows["cpu"]) == 20
    agree = np.mean([a[1][0] == b[1][0] for a, b in zip(rows["cpu"], rows["cuda"])])
    assert agree >= 0.9, agree
    for (_, idx_a, prob_a), (_, idx_b, prob_b) in zip(rows["cpu"], rows["cuda"]):
        by_class = dict(zip(idx_a, prob_a))
        assert max(abs(by_class[i] - p) for i, p in zip(idx_b, prob_b)) <= 0.02
