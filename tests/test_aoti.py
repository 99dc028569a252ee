"""AOTInductor packages (deployment/export_aoti.py, nextvit.export.aoti): a trained checkpoint as one .pt2 that
runs with torch alone, equal to eager, any batch, with its sidecar and its own metadata; deployment/predict.py
on a .pt2 (with or without its sidecar, and what it refuses); the CUDA path on a GPU."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import nextvit
from nextvit.export import ExportError, source_from_model, write_sidecar
from nextvit.export.aoti import MAX_DYNAMIC_BATCH, METADATA_KEY, export_and_check_aoti, export_program, load_package
from nextvit.predict import PredictError, load_predictor, predict_images
from nextvit.synthetic import make_classification_dataset

CLASS_NAMES = [f"shape_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_calibrated, tmp_path_factory) -> Path:
    return nextvit.save_checkpoint(tiny_calibrated, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def shape_images(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("shapes")
    shapes = make_classification_dataset(root, num_classes=10, train_per_class=1, val_per_class=2, size=80, seed=3)
    return sorted((shapes / "val").rglob("*.png"))


@pytest.fixture(scope="module")
def tiny_pt2(import_script, tiny_checkpoint, tmp_path_factory):
    """The CPU package of the calibrated tiny model at 64x64 (export batch 2, dynamic batch), written over
    a stale file: about 30 s of AOTInductor compilation on 2 cores."""
    folder = tmp_path_factory.mktemp("pt2")
    names = folder / "classes.txt"
    names.write_text("\n".join(CLASS_NAMES) + "\n")
    out = folder / "tiny.pt2"
    out.write_bytes(b"stale garbage from an earlier run")
    script = import_script("deployment", "export_aoti")
    argv = ["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64", "--batch-size", "2",
            "--class-names", str(names), "--output", str(out)]  # fmt: skip
    assert script.main(argv) == 0
    return out


def test_the_package_runs_with_torch_alone_on_any_batch_and_equals_eager(tiny_pt2, tiny_calibrated, tmp_path):
    """Loaded in a fresh interpreter that never imports this package: what a user ships runs without it."""
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(batch, 3, 64, 64, generator=gen) for batch in (1, 2, 5)]
    torch.save(inputs, tmp_path / "inputs.pt")
    code = textwrap.dedent(f"""
        import sys, torch
        runner = torch._inductor.aoti_load_package({str(tiny_pt2)!r})
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save([runner(x) for x in inputs], {str(tmp_path / "outputs.pt")!r})
        assert not any(name.startswith("nextvit") for name in sys.modules), "the package imported nextvit"
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = torch.load(tmp_path / "outputs.pt", weights_only=True)
    with torch.no_grad():
        for x, out in zip(inputs, outputs):
            expected = tiny_calibrated(x)
            assert out.dtype == torch.float32 and out.shape == expected.shape
            assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_sidecar_and_package_metadata_describe_the_input(tiny_pt2, tiny_checkpoint):
    record = json.loads(tiny_pt2.with_name(tiny_pt2.name + ".json").read_text())
    assert record["format"] == "aoti-pt2" and record["device"] == "cpu" and record["dtype"] == "fp32"
    assert record["checkpoint"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert record["output_sha256"] == hashlib.sha256(tiny_pt2.read_bytes()).hexdigest()  # the stale file is gone
    assert record["model"] == "nextvit_tiny" and record["input"]["shape"] == [2, 3, 64, 64]
    assert record["class_names"] == CLASS_NAMES and record["num_classes"] == 10
    assert record["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert record["dynamic_batch"] and record["max_batch"] >= 256
    check = record["check"]
    assert check["passed"] and check["batches"] == [2, 4] and check["max_abs_diff"] < 1e-3
    assert record["versions"]["torch"] == torch.__version__ and record["compile_s"] > 0
    meta = json.loads(load_package(tiny_pt2, "cpu").get_metadata()[METADATA_KEY])
    assert meta["class_names"] == CLASS_NAMES and meta["input"]["shape"] == [2, 3, 64, 64]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["dtype"] == "fp32"


def test_a_dynamic_batch_is_exported_from_a_batch_of_one(tiny_calibrated):
    """export_aoti.py's default --batch-size 1 with a dynamic batch: once refused by torch.export ("marked batch
    as dynamic but your code specialized it to be a constant (1)")."""
    program = export_program(nextvit.fold_batchnorm(tiny_calibrated), torch.randn(1, 3, 64, 64), dynamic_batch=True)
    (name,) = program.graph_signature.user_inputs
    (placeholder,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == name]
    batch = placeholder.meta["val"].shape[0]
    assert isinstance(batch, torch.SymInt), batch
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), tiny_calibrated(x), rtol=1e-4, atol=1e-4)


def test_bad_requests_are_refused_before_any_work(import_script, tmp_path):
    script = import_script("deployment", "export_aoti")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model", "nextvit_tiny", "--random-weights", "--output", str(tmp_path / "model.onnx")])
    assert exit_info.value.code == 2
    with pytest.raises(ExportError, match="no such file"):
        load_package(tmp_path / "missing.pt2", "cpu")
    source = source_from_model(nextvit.create_model("nextvit_tiny", num_classes=10), image_size=64)
    with pytest.raises(ExportError, match="dtype"):
        export_and_check_aoti(source, tmp_path / "m.pt2", dtype="int8")
    assert not (tmp_path / "m.pt2").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_asked_without_a_gpu_is_one_clear_line_and_exit_code_3(tmp_path):
    script = Path(__file__).resolve().parents[1] / "deployment" / "export_aoti.py"
    args = ["--model", "nextvit_tiny", "--random-weights", "--device", "cuda"]
    result = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: --device cuda: no CUDA device")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # an AOTInductor compilation: scripts/gpu_check.sh leaves it to `pytest -m cuda`
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_package_agrees_with_fp32_on_any_batch(tiny_calibrated, tiny_checkpoint, shape_images, tmp_path):
    """fp16 on the GPU, dynamic batch. The threshold is the logits' cosine 0.999: the calibrated tiny model
    (BatchNorm statistics of real activations, `randomize_and_calibrate`) measured 0.99998 in fp16 against fp32
    (CPU, 4 images at 64x64), while a random-weight tiny model's blown-up activations gave 0.979 on an H200,
    which says nothing about a trained model."""
    source = source_from_model(tiny_calibrated, batch_size=2, image_size=64)
    out = tmp_path / "tiny_cuda_fp16.pt2"
    record = export_and_check_aoti(source, out, device="cuda", dtype="fp16", min_cosine=0.999, log=lambda m: None)
    assert record["check"]["passed"], record["check"]
    assert record["check"]["batches"] == [2, 4] and record["check"]["cosine_min"] >= 0.999
    runner = load_package(out, "cuda")
    x = torch.randn(7, 3, 64, 64)
    with torch.no_grad():
        got = runner(x.cuda()).cpu()
        ref = tiny_calibrated(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(got, ref).min().item() >= 0.999
    # predict on the package (its device, its dtype) against the checkpoint in fp32 on the CPU
    write_sidecar(out, record)
    predictor = load_predictor(out)
    assert predictor.device == "cuda" and "fp16" in predictor.runtime and predictor.batch_size(5000) == 1024
    with pytest.raises(PredictError, match="--device cpu: tiny_cuda_fp16.pt2 is compiled for cuda"):
        load_predictor(out, device="cpu")
    got, _ = predict_images(predictor, shape_images, batch_size=7, topk=10)
    ref, _ = predict_images(load_predictor(tiny_checkpoint, preprocessing=dict(input_size=64)), shape_images, topk=10)
    _assert_close_predictions(ref, got, min_agreement=0.9, max_probability_diff=0.02)


# --------------------------------------------------------------------------------------------
# deployment/predict.py on a .pt2
# --------------------------------------------------------------------------------------------


def _assert_close_predictions(reference, predictions, min_agreement: float, max_probability_diff: float) -> None:
    """The same images in the same order, top-1 agreeing on at least `min_agreement` of them, and every
    class probability within `max_probability_diff` (both runs give all 10 classes)."""
    assert [p.path for p in predictions] == [p.path for p in reference] and reference
    agreement = np.mean([a.indices[0] == b.indices[0] for a, b in zip(reference, predictions)])
    assert agreement >= min_agreement, agreement
    for a, b in zip(reference, predictions):
        by_class = dict(zip(a.indices, a.probabilities))
        worst = max(abs(by_class[i] - p) for i, p in zip(b.indices, b.probabilities))
        assert worst <= max_probability_diff, (a.path, worst)


def test_predict_on_the_package_equals_the_checkpoint(tiny_pt2, tiny_checkpoint, shape_images):
    predictor = load_predictor(tiny_pt2)
    assert predictor.kind == "aoti" and predictor.device == "cpu" and "AOTInductor" in predictor.runtime
    assert predictor.class_names == CLASS_NAMES and predictor.preprocessing.input_size == (64, 64)
    assert predictor.fixed_batch is None and predictor.batch_size(5000) == MAX_DYNAMIC_BATCH
    got, summary = predict_images(predictor, shape_images, batch_size=7, topk=10)  # batches of 7, 7 and 6
    assert summary.images == len(shape_images) == 20
    checkpoint = load_predictor(tiny_checkpoint, preprocessing=dict(input_size=64), class_names=CLASS_NAMES)
    ref, _ = predict_images(checkpoint, shape_images, batch_size=16, topk=10)
    _assert_close_predictions(ref, got, min_agreement=1.0, max_probability_diff=1e-4)
    assert [p.names for p in got] == [p.names for p in ref]
    # the flags that agree with the package are accepted; those that do not are refused, naming the flag
    assert load_predictor(tiny_pt2, device="cpu", dtype="fp32").device == "cpu"
    assert load_predictor(tiny_pt2, device="auto").device == "cpu"
    for flags, message in [
        (dict(device="cuda"), "--device cuda: tiny.pt2 is compiled for cpu"),
        (dict(dtype="bf16"), "--dtype bf16: tiny.pt2 computes in fp32 \\(compiled in\\)"),
        (dict(preprocessing=dict(input_size=96)), "takes 64x64 inputs but --image-size gives 96x96"),
        (dict(num_classes=7), "10 outputs, but 7 classes"),
    ]:
        with pytest.raises(PredictError, match=message) as info:
            load_predictor(tiny_pt2, **flags)
        assert not info.value.unavailable


def test_predict_on_a_package_without_its_sidecar(import_script, tiny_pt2, shape_images, tmp_path, capsys):
    bare = tmp_path / "copied.pt2"
    shutil.copyfile(tiny_pt2, bare)  # the package alone: its own metadata says what it takes
    script = import_script("deployment", "predict")
    images = [str(p) for p in shape_images[:6]]
    assert script.main([str(bare), *images, "--output", str(tmp_path / "bare.jsonl"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "no sidecar copied.pt2.json" in err and "package's own metadata" in err and "images/s" in err
    assert script.main([str(tiny_pt2), *images, "--output", str(tmp_path / "full.jsonl"), "--quiet"]) == 0
    bare_rows, full_rows = ([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
                            for name in ("bare", "full"))  # fmt: skip
    assert bare_rows == full_rows and bare_rows[0]["topk"][0]["name"] in CLASS_NAMES


def _fake_package(path: Path, **described) -> Path:
    """An archive laid out as a .pt2 whose metadata describes a package (nothing compiled inside): enough
    for what predict checks before it loads one."""
    info = dict(model="nextvit_tiny", task="classification", device="cpu", dtype="fp32", outputs=["logits"],
                input=dict(shape=[1, 3, 64, 64], dtype="float32", layout="NCHW", dynamic_batch=True),
                mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], class_names=None)  # fmt: skip
    info.update(described)
    meta = {METADATA_KEY: json.dumps(info), "AOTI_DEVICE_KEY": info["device"]}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.stem}/data/aotinductor/model/x.wrapper_metadata.json", json.dumps(meta))
    return path


def test_predict_refuses_what_it_cannot_run(tiny_pt2, tmp_path):
    with pytest.raises(PredictError, match="outputs stage features"):
        load_predictor(_fake_package(tmp_path / "features.pt2", task="features"))
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(PredictError, match="garbage.pt2: not a readable AOTInductor package"):
        load_predictor(garbage)
    with zipfile.ZipFile(tmp_path / "exported.pt2", "w") as archive:  # as torch.export.save writes one
        archive.writestr("exported/models/model.json", "{}")
    with pytest.raises(PredictError, match="not an AOTInductor package .*deployment/export_aoti.py"):
        load_predictor(tmp_path / "exported.pt2")
    copied = tmp_path / "copied.pt2"
    shutil.copyfile(tiny_pt2, copied)
    record = json.loads(tiny_pt2.with_name(tiny_pt2.name + ".json").read_text())
    copied.with_name("copied.pt2.json").write_text(json.dumps(dict(record, device="cuda")))
    with pytest.raises(PredictError, match="copied.pt2.json says device cuda but copied.pt2 is compiled for cpu"):
        load_predictor(copied)
    copied.with_name("copied.pt2.json").write_text(json.dumps(dict(record, num_classes=7, class_names=None)))
    with pytest.raises(PredictError, match="copied.pt2 has 10 outputs but copied.pt2.json says 7 classes"):
        load_predictor(copied)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_cuda_package_without_a_gpu_is_one_line_and_exit_code_3(import_script, tmp_path, capsys):
    package = _fake_package(tmp_path / "gpu.pt2", device="cuda", dtype="fp16")
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (80, 80), (120, 30, 200)).save(image)
    script = import_script("deployment", "predict")
    assert script.main([str(package), str(image)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {package}: a CUDA package, and there is no CUDA device here")
    assert script.main([str(package), str(image), "--device", "cpu"]) == 2  # asked for the wrong device: bad input
    assert "--device cpu: gpu.pt2 is compiled for cuda" in capsys.readouterr().err
