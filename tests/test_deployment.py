"""Deployment exports: ONNX with both exporters, CoreML, TensorRT (its script without TensorRT, and its
trtexec flow against a stand-in), checkpoints, sidecars. Scripts run from another directory."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nextvit
from nextvit.export import ExportError, export_and_check_onnx, image_hw, load_source, source_from_model
from nextvit.loading import LoadError
from nextvit.pretrained import IMAGENET_MEAN, IMAGENET_STD

DEPLOYMENT = Path(__file__).resolve().parents[1] / "deployment"
SIDECAR_FIELDS = {
    "model",
    "checkpoint",
    "input",
    "preprocessing",
    "folded",
    "versions",
    "check",
    "exporter",
    "opset",
    "date",
    "outputs",
}


def run_script(script: str, *args, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    """Run a deployment script with this interpreter from `cwd` (not the repository)."""
    result = subprocess.run(
        [sys.executable, str(DEPLOYMENT / script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != expect:
        raise AssertionError(
            f"{script} exited {result.returncode}, expected {expect}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def onnx_outputs(path: Path, x: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})


def normalized_pixels(*shape: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (torch.rand(*shape, generator=gen) - mean) / std


def rel(a, b: torch.Tensor) -> float:
    return float(np.abs(np.asarray(a) - b.numpy()).max() / b.abs().max().item())


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_calibrated, tmp_path_factory) -> Path:
    """The calibrated tiny model (10 classes), saved in this package's format."""
    return nextvit.save_checkpoint(tiny_calibrated, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_from_checkpoint(tiny_checkpoint):
    return nextvit.create_model("nextvit_tiny", checkpoint_path=tiny_checkpoint, num_classes=10).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    """torchscript export, dynamic batch, over a stale garbage file, run from an unrelated folder."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    out.write_bytes(b"stale garbage from an earlier run")
    cwd = tmp_path_factory.mktemp("elsewhere")
    args = ["--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--image-size", "64", "--dynamic-batch"]
    result = run_script("export_onnx.py", *args, "--output", out, cwd=cwd)
    return out, result


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def test_onnx_holds_the_checkpoint_and_runs_any_batch(tiny_onnx, tiny_from_checkpoint):
    path, _ = tiny_onnx
    torch.manual_seed(0)
    random_model = nextvit.create_model("nextvit_tiny", num_classes=10).eval()
    for batch in (1, 3):
        x = normalized_pixels(batch, 3, 64, 64)
        (out,) = onnx_outputs(path, x)
        with torch.no_grad():
            expected, unrelated = tiny_from_checkpoint(x), random_model(x)
        assert out.shape == (batch, 10)
        assert rel(out, expected) < 1e-4
        assert rel(out, unrelated) > 0.5  # the weights are the checkpoint's, not an initialisation


def test_stale_output_is_replaced_atomically(tiny_onnx):
    import onnx

    path, result = tiny_onnx
    assert not path.read_bytes().startswith(b"stale garbage")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {p.key: p.value for p in model.metadata_props}["nextvit.model"] == "nextvit_tiny"
    assert "passed" in result.stdout
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]  # no temporary left


def test_sidecar_records_the_export(tiny_onnx, tiny_checkpoint):
    path, _ = tiny_onnx
    record = json.loads(path.with_name("tiny.onnx.json").read_text())
    assert SIDECAR_FIELDS <= record.keys()
    assert record["checkpoint"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert record["checkpoint"]["path"] == str(tiny_checkpoint)
    assert record["model"] == "nextvit_tiny" and record["num_classes"] == 10 and not record["random_weights"]
    assert record["input"] == {"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}
    assert record["opset"] == 17 and record["dynamic_batch"] and record["folded"]
    assert record["exporter"] == "torch.onnx.export(dynamo=False)"
    prep = record["preprocessing"]
    assert prep["mean"] == list(IMAGENET_MEAN) and prep["std"] == list(IMAGENET_STD)
    assert prep["center_crop"] == [64, 64] and prep["crop_pct"] == 0.875
    assert {"torch", "onnx", "onnxruntime", "nextvit"} <= record["versions"].keys()
    assert record["check"]["passed"] and record["check"]["batches"] == [1, 3]
    assert record["check"]["max_abs_diff"] < 1e-4 and record["check"]["max_rel_diff"] < 1e-4
    assert "BatchNormalization" not in record["onnx_ops"]
    assert record["output_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    datetime.datetime.fromisoformat(record["date"])


def test_onnx_dynamo_exporter_dynamic_batch(tiny_checkpoint, tiny_from_checkpoint, tmp_path):
    out = tmp_path / "tiny_dynamo.onnx"
    args = ["--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--image-size", "64", "--dynamic-batch"]
    run_script("export_onnx.py", *args, "--exporter", "dynamo", "--output", out, cwd=tmp_path)
    for batch in (1, 3):
        x = normalized_pixels(batch, 3, 64, 64)
        (got,) = onnx_outputs(out, x)
        with torch.no_grad():
            assert rel(got, tiny_from_checkpoint(x)) < 1e-4
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["opset"] == 18 and record["exporter"] == "torch.onnx.export(dynamo=True)"


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_small_matches_pytorch(small_calibrated, exporter, tmp_path):
    source = source_from_model(small_calibrated, image_size=224)
    opset = 17 if exporter == "torchscript" else 18
    record = export_and_check_onnx(source, tmp_path / "small.onnx", exporter=exporter, opset=opset, log=print)
    check = record["check"]
    print(f"nextvit_small {exporter}: max abs {check['max_abs_diff']:.3g}, max rel {check['max_rel_diff']:.3g}")
    assert check["passed"] and check["max_rel_diff"] < 1e-4  # against small_calibrated itself, by ONNX Runtime
    assert record["input"]["shape"] == [1, 3, 224, 224] and record["outputs"][0]["shape"] == [1, 1000]


def test_onnx_backbone_features(tiny_checkpoint, tiny_from_checkpoint, tmp_path):
    out = tmp_path / "features.onnx"
    args = ["--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--features", "--image-size", "64", "96"]
    run_script("export_onnx.py", *args, "--output", out, cwd=tmp_path)
    x = normalized_pixels(1, 3, 64, 96)
    got = onnx_outputs(out, x)
    with torch.no_grad():
        expected = tiny_from_checkpoint.forward_intermediates(x, intermediates_only=True)
    assert [g.shape for g in got] == [(1, 32, 16, 24), (1, 128, 8, 12), (1, 160, 4, 6), (1, 256, 2, 3)]
    for g, e in zip(got, expected):
        assert rel(g, e) < 1e-4
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert [o["name"] for o in record["outputs"]] == ["stage0", "stage1", "stage2", "stage3"]
    assert [o["stride"] for o in record["outputs"]] == [4, 8, 16, 32]
    assert record["task"] == "features" and record["checkpoint"]["head_not_loaded"]


def test_export_refuses_random_weights_unless_asked(tmp_path):
    result = run_script("export_onnx.py", "--model", "nextvit_tiny", "--image-size", "64", cwd=tmp_path, expect=2)
    assert "--checkpoint is required" in result.stderr and "--random-weights" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", ["bytedance", "folded"])
def test_any_checkpoint_layout_exports_its_weights(tiny_calibrated, layout, tmp_path):
    if layout == "bytedance":
        path = nextvit.save_bytedance_checkpoint(tiny_calibrated, tmp_path / "tiny.pth")
    else:
        path = nextvit.save_checkpoint(nextvit.fold_batchnorm(tiny_calibrated), tmp_path / "tiny_folded.safetensors")
    source = load_source("nextvit_tiny", path, image_size=64)
    x = normalized_pixels(2, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_calibrated(x)
        assert rel(source.reference(x), expected) < 1e-5 and rel(source.deploy(x), expected) < 1e-5
    assert source.folded and source.num_classes == 10
    assert source.checkpoint["layout"] == ("bytedance" if layout == "bytedance" else "nextvit")


def test_head_size_mismatch_is_refused(tiny_checkpoint):
    with pytest.raises(LoadError, match="num_classes 1000: does not match the checkpoint's classifier"):
        load_source("nextvit_tiny", tiny_checkpoint, image_size=64, num_classes=1000)
    assert load_source("nextvit_tiny", tiny_checkpoint, image_size=64, features=True).output_names[0] == "stage0"


def test_library_errors_name_parameters_and_scripts_name_flags(tiny_checkpoint, tmp_path):
    """The library speaks of its parameters; a script reports the same error under its own flag."""
    with pytest.raises(LoadError) as err:
        load_source("nextvit_tiny", None, image_size=[64, 16])
    assert err.value.param == "image_size"
    assert str(err.value) == "image_size 64 16: both sides must be at least 32 pixels"
    assert (
        err.value.describe({"image_size": "--image-size"})
        == "--image-size 64 16: both sides must be at least 32 pixels"
    )
    with pytest.raises(ExportError) as export_err:
        image_hw([64, 16])
    assert (export_err.value.param, export_err.value.exit_code) == ("image_size", 2)
    args = ["--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--image-size", "64", "--num-classes", "7"]
    result = run_script("export_onnx.py", *args, cwd=tmp_path, expect=2)
    assert result.stderr.startswith("error: --num-classes 7: does not match the checkpoint's classifier (10 classes)")
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# CoreML
# --------------------------------------------------------------------------------------------


def test_coreml_image_preprocessing_equals_imagenet_normalisation(tiny_calibrated):
    from nextvit.export import coreml

    pixels = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    scale, bias = coreml.image_type_scale_bias()
    image_type_output = scale * pixels + torch.tensor(bias).view(1, 3, 1, 1)  # what CoreML's ImageType computes
    normalised = (pixels / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    wrapped = coreml.ImageNormalization(tiny_calibrated).eval()
    with torch.no_grad():
        assert rel(wrapped(image_type_output), tiny_calibrated(normalised)) < 1e-5
        torch.testing.assert_close(image_type_output * wrapped.inv_std, normalised, rtol=1e-5, atol=1e-6)


def test_coreml_package_has_the_expected_description(tiny_checkpoint, tmp_path):
    pytest.importorskip("coremltools")
    args = ["--model", "nextvit_tiny", "--checkpoint", tiny_checkpoint, "--batch-size", "1", "--image-size", "64"]
    result = run_script("export_coreml_model.py", *args, cwd=tmp_path)
    package = tmp_path / "nextvit_tiny_64x64.mlpackage"
    assert (package / "Manifest.json").is_file()
    record = json.loads((tmp_path / "nextvit_tiny_64x64.mlpackage.json").read_text())
    assert record["coreml_description"] == {
        "inputs": [{"name": "image", "type": "image", "color": "RGB", "height": 64, "width": 64}],
        "outputs": [{"name": "logits", "type": "tensor", "shape": [1, 10], "dtype": "FLOAT32"}],
    }
    assert record["checkpoint"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert record["preprocessing"]["baked_into_model"] and record["check"]["trace"]["passed"]
    print(f"CoreML conversion of nextvit_tiny at 64x64: {record['conversion_seconds']} s")
    if sys.platform != "darwin":
        assert record["check"]["passed"] is None and "needs macOS" in record["check"]["status"]
        assert "needs macOS" in result.stderr


# --------------------------------------------------------------------------------------------
# TensorRT
# --------------------------------------------------------------------------------------------

TRTEXEC_SUMMARY = textwrap.dedent(
    """\
    [11/02/2025-09:14:05] [I] TensorRT version: 10.3.0
    [11/02/2025-09:14:40] [I] Average on 10 runs - GPU latency: 7.61 ms - Host latency: 8.02 ms (enqueue 0.41 ms)
    [11/02/2025-09:14:41] [I]
    [11/02/2025-09:14:41] [I] === Performance summary ===
    [11/02/2025-09:14:41] [I] Throughput: 128.734 qps
    [11/02/2025-09:14:41] [I] Latency: min = 7.73291 ms, max = 9.10254 ms, mean = 7.98413 ms, median = 7.95117 ms, percentile(90%) = 8.1543 ms, percentile(95%) = 8.2417 ms, percentile(99%) = 8.8125 ms
    [11/02/2025-09:14:41] [I] Enqueue Time: min = 0.30127 ms, max = 0.81006 ms, mean = 0.41431 ms, median = 0.40479 ms, percentile(90%) = 0.4541 ms, percentile(95%) = 0.48633 ms, percentile(99%) = 0.65527 ms
    [11/02/2025-09:14:41] [I] H2D Latency: min = 0.35669 ms, max = 0.45215 ms, mean = 0.37396 ms, median = 0.37012 ms, percentile(90%) = 0.38574 ms, percentile(95%) = 0.39258 ms, percentile(99%) = 0.42383 ms
    [11/02/2025-09:14:41] [I] GPU Compute Time: min = 7.35498 ms, max = 8.71094 ms, mean = 7.60114 ms, median = 7.57422 ms, percentile(90%) = 7.7666 ms, percentile(95%) = 7.85449 ms, percentile(99%) = 8.41016 ms
    [11/02/2025-09:14:41] [I] D2H Latency: min = 0.00757 ms, max = 0.01587 ms, mean = 0.00903 ms, median = 0.00879 ms, percentile(90%) = 0.00977 ms, percentile(95%) = 0.01025 ms, percentile(99%) = 0.01221 ms
    [11/02/2025-09:14:41] [I] Total Host Walltime: 3.01398 s
    [11/02/2025-09:14:41] [I] Total GPU Compute Time: 2.94964 s
    [11/02/2025-09:14:41] [I] Explanations of the performance metrics are printed in the verbose logs.
    &&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=nextvit_small_224x224_fp16.trt
    """  # noqa: E501 (trtexec's lines as it prints them)
)

TRTEXEC_SUMMARY_TRT8_0 = textwrap.dedent(
    """\
    [08/16/2022-10:02:11] [I] Host Latency
    [08/16/2022-10:02:11] [I] min: 8.01416 ms (end to end 15.4722 ms)
    [08/16/2022-10:02:11] [I] max: 9.36914 ms (end to end 17.2031 ms)
    [08/16/2022-10:02:11] [I] mean: 8.21753 ms (end to end 15.9082 ms)
    [08/16/2022-10:02:11] [I] median: 8.18359 ms (end to end 15.8491 ms)
    [08/16/2022-10:02:11] [I] percentile: 9.01221 ms at 99% (end to end 16.9741 ms at 99%)
    [08/16/2022-10:02:11] [I] throughput: 125.613 qps
    [08/16/2022-10:02:11] [I] walltime: 3.01723 s
    [08/16/2022-10:02:11] [I] GPU Compute
    [08/16/2022-10:02:11] [I] min: 7.62695 ms
    [08/16/2022-10:02:11] [I] max: 8.97607 ms
    [08/16/2022-10:02:11] [I] mean: 7.83276 ms
    [08/16/2022-10:02:11] [I] median: 7.80176 ms
    [08/16/2022-10:02:11] [I] percentile: 8.62695 ms at 99%
    [08/16/2022-10:02:11] [I] total compute time: 2.94312 s
    &&&& PASSED TensorRT.trtexec # trtexec --loadEngine=nextvit_small_224x224_fp16.trt
    """
)


def test_parse_trtexec_summary():
    from nextvit.export import trtexec as trt_script

    parsed = trt_script.parse_trtexec_summary(TRTEXEC_SUMMARY)
    assert parsed["throughput_qps"] == 128.734
    assert parsed["latency_ms"] == {
        "min": 7.73291,
        "max": 9.10254,
        "mean": 7.98413,
        "median": 7.95117,
        "p90": 8.1543,
        "p95": 8.2417,
        "p99": 8.8125,
    }
    assert parsed["gpu_compute_ms"]["p99"] == 8.41016 and parsed["d2h_ms"]["mean"] == 0.00903
    assert parsed["total_host_walltime_s"] == 3.01398 and parsed["total_gpu_compute_s"] == 2.94964
    summary = trt_script.latency_summary(parsed, batch_size=8)
    assert (summary["mean_ms"], summary["median_ms"], summary["p99_ms"]) == (7.98413, 7.95117, 8.8125)
    assert summary["throughput_images_per_s"] == pytest.approx(128.734 * 8)
    assert trt_script.parse_trtexec_version(TRTEXEC_SUMMARY) == "10.3.0"

    old = trt_script.parse_trtexec_summary(TRTEXEC_SUMMARY_TRT8_0)
    assert old["latency_ms"] == {"min": 8.01416, "max": 9.36914, "mean": 8.21753, "median": 8.18359, "p99": 9.01221}
    assert old["gpu_compute_ms"]["median"] == 7.80176 and old["throughput_qps"] == 125.613
    assert trt_script.parse_trtexec_summary("no summary here") == {}


def test_tensorrt_flags_have_real_types(import_script):
    trt_script = import_script("deployment", "export_tensorrt_engine")
    parser = trt_script.build_parser()
    base = ["--random-weights"]
    assert parser.parse_args(base + ["--profile", "False"]).profile is False  # the original made this True
    assert parser.parse_args(base + ["--profile", "True"]).profile is True
    assert parser.parse_args(base + ["--profile"]).profile is True
    assert parser.parse_args(base + ["--profile", "--no-profile"]).profile is False
    assert parser.parse_args(base + ["--profile", "0", "--dumpProfile", "1"]).dumpProfile is True
    assert parser.parse_args(base + ["--opset-version", "16"]).opset_version == 16
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--profile", "maybe"])
    args = parser.parse_args(base + ["--image-size", "800", "1344", "--threads", "2", "--warmUp", "10"])
    assert args.image_size == [800, 1344] and args.threads == 2 and args.warmUp == 10
    # quantize.py's spelling, and the old one kept as an alias
    assert parser.parse_args(base + ["--calib-images", "64"]).calib_images == 64
    assert parser.parse_args(base + ["--calib-max-images", "32"]).calib_images == 32


def test_tensorrt_opset_follows_the_exporter(import_script, tiny_checkpoint, tmp_path, monkeypatch):
    """--exporter dynamo alone must work: its lowest opset (18) is the default then, not 17."""
    trt_script, trtexec = _stand_in_trtexec(import_script, tmp_path, monkeypatch)
    argv = ["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64",
            "--datatype", "fp16", "--trtexec-path", str(trtexec), "--exporter", "dynamo"]  # fmt: skip
    assert trt_script.main(argv) == 0
    record = json.loads((tmp_path / "nextvit_tiny_64x64_fp16.trt.json").read_text())
    assert record["onnx"]["opset"] == 18 and record["check"]["passed"]


def test_tensorrt_script_without_tensorrt_says_so(tmp_path):
    import shutil

    if shutil.which("trtexec") or __import__("importlib.util").util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here")
    readme_flags = ["--model", "nextvit_small", "--batch-size", "8", "--image-size", "224", "--datatype", "fp16"]
    result = run_script("export_tensorrt_engine.py", *readme_flags, "--profile", "True", "--random-weights",
                        cwd=tmp_path, expect=3)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not available here" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # checked before exporting anything
    missing = run_script("export_tensorrt_engine.py", "--random-weights", "--trtexec-path", tmp_path / "nope",
                         cwd=tmp_path, expect=3)  # fmt: skip
    assert "--trtexec-path" in missing.stderr and "Traceback" not in missing.stderr


FAKE_TRTEXEC = """\
#!{python}
# Stands in for trtexec: the "engine" is the ONNX file, run by ONNX Runtime.
import json, shutil, sys
import numpy as np
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open(sys.argv[0] + ".calls", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "onnx" in args:
    shutil.copy(args["onnx"], args["saveEngine"])
elif "exportOutput" in args:
    import onnxruntime as ort
    session = ort.InferenceSession(args["loadEngine"], providers=["CPUExecutionProvider"])
    name, path = args["loadInputs"].split(":", 1)
    shape = session.get_inputs()[0].shape
    outs = session.run(None, {{name: np.fromfile(path, dtype=np.float32).reshape(shape)}})
    entries = [dict(name=o.name, dimensions="x".join(map(str, v.shape)), values=v.ravel().tolist())
               for o, v in zip(session.get_outputs(), outs)]
    json.dump(entries, open(args["exportOutput"], "w"))
else:
    print({summary!r})
print("&&&& PASSED TensorRT.trtexec [TensorRT v100300]")
"""


def _stand_in_trtexec(import_script, tmp_path, monkeypatch):
    """The TensorRT script with FAKE_TRTEXEC as its trtexec, a GPU it believes in, run in tmp_path."""
    from nextvit.export import tensorrt

    trt_script = import_script("deployment", "export_tensorrt_engine")
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC.format(python=sys.executable, summary=TRTEXEC_SUMMARY))
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(tensorrt, "gpu_visible", lambda: True)
    monkeypatch.chdir(tmp_path)
    return trt_script, trtexec


def test_tensorrt_trtexec_flow_with_a_stand_in(import_script, tiny_checkpoint, tmp_path, monkeypatch):
    trt_script, trtexec = _stand_in_trtexec(import_script, tmp_path, monkeypatch)
    stale = tmp_path / "nextvit_tiny_64x64_int8.onnx"
    stale.write_bytes(b"an old export that must not be reused")
    argv = ["--model", "nextvit_tiny", "--checkpoint", str(tiny_checkpoint), "--image-size", "64", "--batch-size", "2"]
    argv += ["--datatype", "int8", "--trtexec-path", str(trtexec), "--profile", "True", "--warmUp", "10"]
    argv += ["--threads", "2"]
    assert trt_script.main(argv) == 0

    engine = tmp_path / "nextvit_tiny_64x64_int8.trt"
    record = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert record["onnx"]["exported"] and not stale.read_bytes().startswith(b"an old export")
    assert record["int8_calibration"]["status"].startswith("latency-only, uncalibrated")
    assert record["builder"]["tool"] == "trtexec" and record["builder"]["tensorrt_version"] == "10.3.0"
    assert "--int8" in record["builder"]["command"] and "--explicitBatch" not in record["builder"]["command"]
    assert record["check"]["max_abs_diff"] < 1e-4 and record["check"]["passed"]  # int8: reported, not enforced
    assert record["profile"]["summary"]["p99_ms"] == 8.8125
    assert record["profile"]["summary"]["throughput_images_per_s"] == pytest.approx(128.734 * 2)
    calls = [json.loads(line) for line in Path(str(trtexec) + ".calls").read_text().splitlines()]
    assert [c[0].split("=")[0] for c in calls] == ["--onnx", "--loadEngine", "--loadEngine"]
    assert "--warmUp=10" in calls[2] and "--iterations=100" in calls[2]
    assert "--infStreams=2" in calls[2] and "--threads" in calls[2]  # the stand-in says TensorRT 10.3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left
    assert os.path.getsize(engine) > 0


def test_tensorrt_builds_a_qdq_model_as_an_explicitly_quantized_engine(
    import_script, tiny_checkpoint, tmp_path, monkeypatch
):
    """The int8 QDQ model of deployment/quantize.py (--target tensorrt) needs no calibration here."""
    from nextvit.export.quantize import quantize_qdq

    trt_script, trtexec = _stand_in_trtexec(import_script, tmp_path, monkeypatch)
    source = load_source("nextvit_tiny", tiny_checkpoint, batch_size=2, image_size=[64])
    export_and_check_onnx(source, tmp_path / "fp32.onnx", log=lambda m: None)
    calib = [source.example_input(1, seed=i)[0].numpy() for i in range(4)]
    quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", calib, lambda a: a, target="tensorrt",
                 calibration_batch=2)  # fmt: skip
    base = ["--onnx", "qdq.onnx", "--checkpoint", str(tiny_checkpoint), "--model", "nextvit_tiny", "--image-size",
            "64", "--batch-size", "2", "--trtexec-path", str(trtexec)]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        trt_script.main([*base, "--datatype", "fp16"])
    assert refused.value.code == 2
    assert trt_script.main([*base, "--datatype", "int8", "--output", "qdq.trt"]) == 0
    record = json.loads((tmp_path / "qdq.trt.json").read_text())
    assert record["int8_calibration"]["status"].startswith("explicit quantization")
    assert "--int8" in record["builder"]["command"] and record["check"]["max_abs_diff"] < 0.5


def test_tensorrt_timing_summary_without_tensorrt():
    """nextvit.export.tensorrt imports without TensorRT; its summary is plain statistics of the timings."""
    from nextvit.export.tensorrt import timings_summary

    times = [float(t) for t in range(1, 101)]  # 1 ... 100 ms
    s = timings_summary(times, batch_size=8)
    assert (s["median_ms"], s["p99_ms"], s["min_ms"], s["max_ms"]) == (50.5, 99.0, 1.0, 100.0)
    assert s["mean_ms"] == 50.5 and abs(s["throughput_images_per_s"] - 8000 / 50.5) < 1e-9


def test_trtexec_streams_flag_follows_its_version():
    from nextvit.export import trtexec as trt_script

    engine = Path("e.trt")
    for version, flag in (("10.3.0", "--infStreams=4"), ("8.6.1", "--streams=4"), (None, "--streams=4")):
        command = trt_script.trtexec_profile_command("trtexec", engine, 200, 100, 4, False, tensorrt_version=version)
        assert flag in command and "--threads" in command, (version, command)
    single = trt_script.trtexec_profile_command("trtexec", engine, 200, 100, 1, False, tensorrt_version="10.3.0")
    assert not any("treams" in arg for arg in single)
    assert trt_script.tensorrt_major("10.3.0") == 10 and trt_script.tensorrt_major(None) is None


def test_python_built_engines_are_not_profiled_by_another_trtexec(import_script, tmp_path, monkeypatch, capsys):
    """With the tensorrt module and some trtexec on PATH, the Python API builds (and times) unless the
    profile needs trtexec's options; asking for those with --builder python is refused before any work."""
    import shutil

    from nextvit.export import tensorrt

    trt_script = import_script("deployment", "export_tensorrt_engine")
    monkeypatch.setattr(tensorrt, "tensorrt_module", lambda: object())
    monkeypatch.setattr(tensorrt, "gpu_visible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/other-tensorrt/bin/trtexec")
    assert tensorrt.find_toolchain("auto", None)["builder"] == "python"
    assert tensorrt.find_toolchain("auto", None, prefer_trtexec=True)["builder"] == "trtexec"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        trt_script.main(["--random-weights", "--builder", "python", "--profile", "--threads", "2"])
    assert exit_info.value.code == 2 and "--builder trtexec" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib.util").util.find_spec("tensorrt") is None,
    reason="needs a CUDA GPU and the tensorrt module",
)
def test_python_built_engine_is_timed_by_its_tensorrt_not_trtexec_on_path(import_script, tmp_path, monkeypatch):
    trt_script = import_script("deployment", "export_tensorrt_engine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trtexec = bin_dir / "trtexec"  # a trtexec of some other TensorRT: it must not be asked to load the engine
    trtexec.write_text(FAKE_TRTEXEC.format(python=sys.executable, summary=TRTEXEC_SUMMARY))
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    argv = ["--model", "nextvit_tiny", "--random-weights", "--image-size", "64", "--batch-size", "2"]
    assert trt_script.main([*argv, "--datatype", "fp16", "--profile", "--warmUp", "10", "--iterations", "20"]) == 0
    record = json.loads((tmp_path / "nextvit_tiny_64x64_fp16.trt.json").read_text())
    assert record["builder"]["tool"] == "tensorrt Python API"
    assert record["profile"]["tool"].startswith("tensorrt Python API") and record["profile"]["summary"]["runs"] == 20
    assert not Path(str(trtexec) + ".calls").exists()
