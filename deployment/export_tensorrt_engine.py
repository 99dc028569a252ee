"""Build a TensorRT engine of Next-ViT, check it against PyTorch, and profile it.

    python deployment/export_tensorrt_engine.py --model nextvit_small --batch-size 8 --image-size 224 \\
        --datatype fp16 --profile True --trtexec-path /usr/bin/trtexec --checkpoint nextvit_small_in1k_224.pth
    python deployment/export_tensorrt_engine.py --model nextvit_small --checkpoint ckpt.pth --datatype int8 \\
        --calib-dir calibration_images/
    python deployment/export_tensorrt_engine.py --onnx model.onnx --batch-size 8 --profile
    python deployment/quantize.py --model nextvit_small --checkpoint ckpt.pth --calib-dir train/ --target tensorrt \
        --output small_qdq.onnx
    python deployment/export_tensorrt_engine.py --onnx small_qdq.onnx --datatype int8 --checkpoint ckpt.pth

Steps:

1. TensorRT and a GPU must be here: the `tensorrt` Python module or `trtexec` (`--trtexec-path`,
   or on PATH), and an NVIDIA GPU. Without them the script says so in one sentence and exits
   with status 3, before doing any work.
2. ONNX: the folded model is exported afresh next to the engine (`<engine>.onnx`, checked with
   ONNX Runtime, with its own sidecar), never reused from an earlier run; `--onnx PATH` uses a
   given file instead.
3. Engine: built by the TensorRT Python API when it is importable (or `--builder python`), else
   by trtexec, run as an argument list. fp32, fp16, or int8: explicitly quantized from a QDQ model
   of deployment/quantize.py (`--onnx`, the recommended path: calibrated once, on your images, and
   checked for accuracy there), calibrated on `--calib-dir` images through the Python API, or with
   trtexec built uncalibrated, which is labelled latency-only (its accuracy is meaningless).
4. Check: the engine runs on the same input as PyTorch and the largest difference is compared
   with `--atol + --rtol * max|reference|` (defaults by datatype; int8 is reported, not enforced).
5. Profile (`--profile`): by the TensorRT that built the engine (an engine loads only in the
   TensorRT version that built it): trtexec's performance summary (mean, median, p99 latency,
   throughput) for a trtexec-built engine, CUDA-event timings through the Python runtime for one
   built by the Python API, whatever trtexec is on PATH. `--threads N` (trtexec's `--infStreams`
   from TensorRT 10, `--streams` before) and `--dumpProfile` are trtexec's, so with them `auto`
   builds with trtexec.

`<engine>.json` records all of it. Exit status: 0 success, 1 check failed, 2 usage, 3 no TensorRT
or no GPU here. Runs from any directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nextvit.export import (
    CROP_PCT,
    DEFAULT_OPSET,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ExportError,
    ExportSource,
    add_bool_flag,
    add_source_args,
    atomic_write_bytes,
    check_opset,
    check_source_args,
    cli_main,
    compare,
    default_stem,
    export_and_check_onnx,
    image_hw,
    provenance,
    sha256_file,
    source_from_args,
    source_record,
    write_sidecar,
)
from nextvit.pretrained import IMAGENET_MEAN, IMAGENET_STD
from nextvit.tensorrt import EngineRunner, build_engine_python, make_calibrator, timings_summary

# (atol, rtol) of the engine check by datatype. fp32 engines may use TF32 on recent GPUs.
TOLERANCES: dict[str, tuple[float | None, float | None]] = {
    "fp32": (1e-3, 1e-2),
    "fp16": (1e-2, 5e-2),
    "int8": (None, None),  # reported, not enforced
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# --------------------------------------------------------------------------------------------
# trtexec output
# --------------------------------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*" + _NUMBER + r"\s*ms")
_SUMMARY_METRICS = {  # TensorRT 8.2 and later: "Name: min = 1 ms, max = ..., percentile(99%) = ... ms"
    "Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}
_SECTION_METRICS = {  # TensorRT 7 and 8.0: a heading line, then "min: 1 ms (end to end 2 ms)" lines
    "Host Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute": "gpu_compute_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}


def _stat_key(name: str, percent: str | None) -> str:
    if percent is None:
        return name
    value = float(percent)
    return f"p{int(value) if value.is_integer() else value}"


def parse_trtexec_summary(text: str) -> dict:
    """The performance summary of a trtexec run as numbers.

    Returns ``throughput_qps`` (engine runs per second: multiply by the batch size for images) and,
    for each metric trtexec reports (``latency_ms``: host latency, H2D + compute + D2H;
    ``gpu_compute_ms``; ``enqueue_ms``; ``h2d_ms``; ``d2h_ms``), a dict of min/max/mean/median
    and percentiles (``p90``, ``p95``, ``p99``), plus the total times in seconds. Both the summary
    format of TensorRT 8.2+ and the per-section format of TensorRT 7/8.0 are understood; metrics
    that are not in the text are left out.
    """
    result: dict = {}
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if "=== Performance summary ===" in line), None)
    section = None
    for line in lines if start is None else lines[start:]:
        if m := re.match(r"Throughput:\s*" + _NUMBER + r"\s*qps", line, re.IGNORECASE):
            if float(m.group(1)) > 0 or "throughput_qps" not in result:
                result["throughput_qps"] = float(m.group(1))
            continue
        if m := re.match(r"Total Host Walltime:\s*" + _NUMBER + r"\s*s", line):
            result["total_host_walltime_s"] = float(m.group(1))
            continue
        if m := re.match(r"Total GPU Compute Time:\s*" + _NUMBER + r"\s*s", line):
            result["total_gpu_compute_s"] = float(m.group(1))
            continue
        head, _, rest = line.partition(":")
        if head in _SUMMARY_METRICS and "=" in rest:
            stats = {_stat_key(name, percent or None): float(v) for name, percent, v in _STAT.findall(rest)}
            if stats:
                result[_SUMMARY_METRICS[head]] = stats
            section = None
            continue
        if line in _SECTION_METRICS:  # older format: a heading on its own line
            section = _SECTION_METRICS[line]
            continue
        if section is not None:
            if m := re.match(r"(min|max|mean|median):\s*" + _NUMBER + r"\s*ms", line):
                result.setdefault(section, {})[m.group(1)] = float(m.group(2))
            elif m := re.match(r"percentile:\s*" + _NUMBER + r"\s*ms at (\d+(?:\.\d+)?)%", line):
                result.setdefault(section, {})[_stat_key("percentile", m.group(2))] = float(m.group(1))
            elif m := re.match(r"walltime:\s*" + _NUMBER + r"\s*s", line):
                result["total_host_walltime_s"] = float(m.group(1))
    return result


def latency_summary(parsed: dict, batch_size: int) -> dict:
    """Mean, median and p99 latency and the throughput, from `parse_trtexec_summary`'s result."""
    latency = parsed.get("latency_ms") or parsed.get("gpu_compute_ms") or {}
    qps = parsed.get("throughput_qps")
    if not qps and latency.get("mean"):
        qps = 1000.0 / latency["mean"]
    return dict(
        mean_ms=latency.get("mean"),
        median_ms=latency.get("median"),
        p99_ms=latency.get("p99"),
        throughput_qps=qps,
        throughput_images_per_s=qps * batch_size if qps else None,
        gpu_compute_mean_ms=parsed.get("gpu_compute_ms", {}).get("mean"),
        gpu_compute_median_ms=parsed.get("gpu_compute_ms", {}).get("median"),
        measure="trtexec Latency (host: H2D + GPU compute + D2H)" if "latency_ms" in parsed else "GPU compute time",
    )


def parse_trtexec_version(text: str) -> str | None:
    """'10.2.0' from '[TensorRT v100200]', or the 'TensorRT version: 8.6.3' line."""
    if m := re.search(r"TensorRT version:\s*([\d.]+)", text):
        return m.group(1)
    if m := re.search(r"\[TensorRT v(\d+)\]", text):
        code = int(m.group(1))
        major = code // 10000 if code >= 10000 else code // 1000
        rest = code % 10000 if code >= 10000 else code % 1000
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def tensorrt_major(version: str | None) -> int | None:
    """10 from '10.3.0'; None when unknown."""
    if not version or not (m := re.match(r"(\d+)", version)):
        return None
    return int(m.group(1))


def trtexec_build_command(trtexec: str, onnx: Path, engine: Path, datatype: str, shape_flags=()) -> list[str]:
    """trtexec's arguments to build an engine (no --explicitBatch: it is the default for ONNX and gone in TRT 10)."""
    command = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *shape_flags]
    if datatype == "fp16":
        command.append("--fp16")
    elif datatype == "int8":
        command.append("--int8")
    return command


def trtexec_profile_command(
    trtexec: str,
    engine: Path,
    warmup_ms: int,
    iterations: int,
    threads: int,
    dump_profile: bool,
    shape_flags=(),
    tensorrt_version: str | None = None,
) -> list[str]:
    """trtexec's arguments for the latency run; `threads` > 1 drives that many streams from their own threads.

    The streams flag is `--infStreams` from TensorRT 10 (`tensorrt_version`, as trtexec reports
    it), where `--streams` is deprecated, and `--streams` before.
    """
    command = [trtexec, f"--loadEngine={engine}", *shape_flags, f"--warmUp={warmup_ms}", f"--iterations={iterations}"]
    if threads > 1:
        major = tensorrt_major(tensorrt_version)
        streams = "--infStreams" if major is not None and major >= 10 else "--streams"
        command += [f"{streams}={threads}", "--threads"]
    if dump_profile:  # per-layer timing slows the run it is attached to: give it a run of its own
        command += ["--dumpProfile", "--separateProfileRun"]
    return command


# --------------------------------------------------------------------------------------------
# Toolchain
# --------------------------------------------------------------------------------------------


def _tensorrt_module():
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - a broken install (missing libraries) counts as absent
        return None
    return tensorrt


def _gpu_visible() -> bool:
    if torch.cuda.is_available():
        return True
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return False
    try:
        result = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def find_toolchain(builder: str, trtexec_path: str | None, prefer_trtexec: bool = False) -> dict:
    """Which TensorRT to use, or `ExportError` (exit 3) saying what is missing. Nothing is built here.

    The engine is profiled by the TensorRT that built it (a trtexec of another version cannot load
    it), so `prefer_trtexec` (profile options only trtexec has) makes `auto` build with trtexec.
    """
    trtexec = None
    if trtexec_path is not None:
        if not (os.path.isfile(trtexec_path) and os.access(trtexec_path, os.X_OK)):
            raise ExportError(f"--trtexec-path {trtexec_path}: no trtexec executable there", EXIT_UNAVAILABLE)
        trtexec = trtexec_path
    else:
        trtexec = shutil.which("trtexec")
    trt = _tensorrt_module() if builder != "trtexec" else None
    if builder == "auto":
        if trtexec_path is not None or (prefer_trtexec and trtexec is not None) or trt is None:
            builder = "trtexec"
        else:
            builder = "python"
    if builder == "python" and trt is None:
        raise ExportError("the tensorrt Python module is not installed here (--builder python)", EXIT_UNAVAILABLE)
    if builder == "trtexec" and trtexec is None:
        if trtexec_path is None and _tensorrt_module() is None:
            raise ExportError(
                "TensorRT is not available here: no tensorrt Python module and no trtexec on PATH "
                "(install TensorRT, or pass --trtexec-path)",
                EXIT_UNAVAILABLE,
            )
        raise ExportError("trtexec is not on PATH here (pass --trtexec-path)", EXIT_UNAVAILABLE)
    if not _gpu_visible():
        raise ExportError(
            "no CUDA GPU is visible here: TensorRT builds and runs engines on an NVIDIA GPU", EXIT_UNAVAILABLE
        )
    if builder == "python" and not torch.cuda.is_available():
        raise ExportError(
            "the TensorRT Python path needs a CUDA build of PyTorch for its buffers; use --builder trtexec",
            EXIT_UNAVAILABLE,
        )
    return dict(builder=builder, trtexec=trtexec, tensorrt=trt)


def _run_trtexec(command: list[str], log_path: Path, what: str) -> str:
    print("running " + " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    text = result.stdout + result.stderr
    atomic_write_bytes(log_path, text.encode())
    if result.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-25:])
        print(tail, file=sys.stderr)
        raise ExportError(f"trtexec failed ({what}) with exit status {result.returncode}; full log in {log_path}")
    return text


# --------------------------------------------------------------------------------------------
# ONNX input, calibration data
# --------------------------------------------------------------------------------------------


def onnx_input(path: Path) -> tuple[str, list[int | None]]:
    """Name and dimensions (None where symbolic) of an ONNX model's first input."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    return graph_input.name, dims


def shape_flags(name: str, dims: list[int | None], shape: tuple[int, ...]) -> list[str]:
    """trtexec shape flags for an input with free dimensions, fixed to `shape`."""
    if all(d is not None for d in dims):
        return []
    text = f"{name}:" + "x".join(map(str, shape))
    return [f"--minShapes={text}", f"--optShapes={text}", f"--maxShapes={text}"]


def load_calibration_batches(folder: Path, shape: tuple[int, ...], features: bool, max_images: int) -> list:
    """Images of `folder` (recursively), preprocessed as for the model, in batches of shape[0]."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:max_images]
    batch, (h, w) = shape[0], shape[2:]
    if len(files) < batch:
        raise ExportError(
            f"--calib-dir {folder}: found {len(files)} images, need at least one batch of {batch}", EXIT_USAGE
        )
    mean = np.array(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    arrays = []
    for path in files[: len(files) // batch * batch]:
        image = Image.open(path).convert("RGB")
        if features:
            image = image.resize((w, h), Image.BICUBIC)
        else:
            short = math.floor(min(h, w) / CROP_PCT)
            ratio = short / min(image.size)
            image = image.resize(
                (max(w, round(image.width * ratio)), max(h, round(image.height * ratio))), Image.BICUBIC
            )
            left, top = (image.width - w) // 2, (image.height - h) // 2
            image = image.crop((left, top, left + w, top + h))
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        arrays.append((pixels - mean) / std)
    return [np.stack(arrays[i : i + batch]) for i in range(0, len(arrays), batch)]


# --------------------------------------------------------------------------------------------
# trtexec check
# --------------------------------------------------------------------------------------------


def read_trtexec_outputs(path: Path) -> dict[str, np.ndarray]:
    """The outputs trtexec writes with --exportOutput: a list of {name, dimensions, values}."""
    entries = json.loads(path.read_text())
    outputs = {}
    for entry in entries:
        dims = [int(d) for d in str(entry["dimensions"]).split("x") if d]
        outputs[entry["name"]] = np.asarray(entry["values"], dtype=np.float32).reshape(dims)
    return outputs


def check_with_trtexec(trtexec: str, engine: Path, input_name: str, x: np.ndarray, flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        feed, result = Path(tmp) / "input.bin", Path(tmp) / "outputs.json"
        np.ascontiguousarray(x, dtype=np.float32).tofile(feed)
        command = [
            trtexec,
            f"--loadEngine={engine}",
            *flags,
            f"--loadInputs={input_name}:{feed}",
            f"--exportOutput={result}",
            "--iterations=1",
            "--warmUp=0",
            "--duration=0",
        ]
        _run_trtexec(command, engine.with_name(engine.name + ".check.log"), "running the engine for the check")
        return read_trtexec_outputs(result)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build a TensorRT engine of Next-ViT from ONNX, check it against PyTorch and profile it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_source_args(parser, checkpoint_optional_with="--onnx")
    parser.add_argument("--datatype", choices=("fp16", "int8", "fp32"), default="fp16", help="engine precision")
    parser.add_argument("--opset-version", type=int, default=DEFAULT_OPSET, help="opset of the exported ONNX")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="ONNX exporter")
    parser.add_argument("--onnx", type=Path, default=None, help="build from this ONNX file instead of exporting")
    parser.add_argument(
        "--builder",
        choices=("auto", "python", "trtexec"),
        default="auto",
        help="auto: trtexec when --trtexec-path is given or --profile asks for --threads/--dumpProfile, "
        "else the tensorrt module if importable, else trtexec",
    )
    parser.add_argument("--trtexec-path", default=None, help="trtexec executable (default: found on PATH)")
    parser.add_argument("--calib-dir", type=Path, default=None, help="images to calibrate int8 on (Python API)")
    parser.add_argument("--calib-max-images", type=int, default=512, help="calibrate on at most this many images")
    add_bool_flag(parser, "--profile", False, "measure latency (--profile, --no-profile, or --profile True/False)")
    add_bool_flag(parser, "--dumpProfile", False, "print trtexec's per-layer profile")
    parser.add_argument(
        "--threads", type=int, default=1, help="trtexec streams (--infStreams from TensorRT 10), each on its own thread"
    )
    parser.add_argument("--warmUp", type=int, default=200, help="warm-up before timing, in milliseconds")
    parser.add_argument("--iterations", type=int, default=100, help="timed engine runs (at least)")
    return parser


def onnx_is_quantized(path: Path) -> bool:
    """Whether an ONNX model holds QuantizeLinear/DequantizeLinear nodes (a QDQ int8 model)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args, allow_no_weights=args.onnx is not None)
    if args.onnx is None:
        try:
            check_opset(args.opset_version, args.exporter)
        except ExportError as err:
            parser.error(str(err))
    elif not args.onnx.is_file():
        parser.error(f"--onnx {args.onnx}: no such file")
    # a QDQ model from deployment/quantize.py (--target tensorrt) carries its own int8 scales:
    # TensorRT builds it as an explicitly quantized engine, nothing to calibrate
    explicit_qdq = args.onnx is not None and args.onnx.is_file() and onnx_is_quantized(args.onnx)
    if explicit_qdq and args.datatype != "int8":
        parser.error(f"--onnx {args.onnx} is quantized (QuantizeLinear/DequantizeLinear): use --datatype int8")
    if explicit_qdq and args.calib_dir is not None:
        parser.error(f"--onnx {args.onnx} is already quantized: --calib-dir does not apply")
    if args.calib_dir is not None and args.datatype != "int8":
        parser.error("--calib-dir is for --datatype int8")
    if args.calib_dir is not None and not args.calib_dir.is_dir():
        parser.error(f"--calib-dir {args.calib_dir}: no such folder")

    trtexec_only = [flag for flag, on in (("--threads", args.threads > 1), ("--dumpProfile", args.dumpProfile)) if on]
    trtexec_only = trtexec_only if args.profile else []
    # before any work: exits 3 without TensorRT or a GPU
    tools = find_toolchain(args.builder, args.trtexec_path, prefer_trtexec=bool(trtexec_only) and not args.calib_dir)
    trt, trtexec, builder = tools["tensorrt"], tools["trtexec"], tools["builder"]
    if builder == "python" and trtexec_only:
        parser.error(
            f"{' and '.join(trtexec_only)} are trtexec's profile options, but an engine built by the TensorRT "
            "Python API is timed by that TensorRT's own runtime (a trtexec of another version cannot load it): "
            "drop them, or pass --builder trtexec"
        )
    if args.calib_dir is not None and builder != "python":
        parser.error("--calib-dir needs the tensorrt Python module (trtexec cannot calibrate from images)")
    if args.datatype == "int8" and builder == "python" and args.calib_dir is None and not explicit_qdq:
        parser.error(
            "--datatype int8 with the TensorRT Python API needs --calib-dir (images to calibrate on); "
            "--builder trtexec builds an uncalibrated, latency-only int8 engine"
        )

    source: ExportSource | None = None
    if args.checkpoint is not None or args.random_weights:
        source = source_from_args(args)
        if source.checkpoint is None:
            print("note: building from random weights (--random-weights): for latency only", file=sys.stderr)
    stem = args.onnx.stem if args.onnx and source is None else default_stem(args.model, args.image_size, args.features)
    output = args.output or Path(f"{stem}_{args.datatype}.trt")

    if args.onnx is not None:
        onnx_path = args.onnx
        onnx_info = dict(path=str(onnx_path), sha256=sha256_file(onnx_path), exported=False)
    else:
        onnx_path = output.with_suffix(".onnx")
        record = export_and_check_onnx(source, onnx_path, opset=args.opset_version, exporter=args.exporter)
        if not record["check"]["passed"]:
            raise ExportError(f"the ONNX export {onnx_path} does not match PyTorch: see {onnx_path}.json")
        onnx_info = dict(path=str(onnx_path), sha256=record["output_sha256"], exported=True, opset=record["opset"])
    input_name, dims = onnx_input(onnx_path)
    shape = (args.batch_size, 3, *image_hw(args.image_size))
    if any(d is not None and d != s for d, s in zip(dims, shape)) or len(dims) != 4:
        raise ExportError(f"{onnx_path} takes input {dims}, not {list(shape)} (--batch-size/--image-size)", EXIT_USAGE)
    flags = shape_flags(input_name, dims, shape)

    calibration = None
    if args.datatype == "int8" and explicit_qdq:
        calibration = dict(status="explicit quantization: the QDQ scales of the ONNX model (deployment/quantize.py)")
    elif args.datatype == "int8":
        calibration = dict(status="latency-only, uncalibrated: trtexec --int8 without calibration data")
    print(f"building a {args.datatype} engine with {'the TensorRT Python API' if builder == 'python' else trtexec}")
    start = time.perf_counter()
    if builder == "python":
        calibrator = None
        if args.calib_dir is not None:
            features = source.features if source is not None else args.features
            batches = load_calibration_batches(args.calib_dir, shape, features, args.calib_max_images)
            cache = output.with_name(output.name + ".calib.cache")
            calibrator = make_calibrator(trt, batches, cache)
            calibration = dict(
                status="calibrated (entropy calibrator 2)",
                images=sum(len(b) for b in batches),
                folder=str(args.calib_dir),
                cache_written=cache.name,
            )
        build_engine_python(trt, onnx_path, output, args.datatype, shape, calibrator)
        build = dict(tool="tensorrt Python API", tensorrt_version=trt.__version__)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
            staged = Path(tmp) / output.name
            command = trtexec_build_command(trtexec, onnx_path, staged, args.datatype, flags)
            log = _run_trtexec(command, output.with_name(output.name + ".build.log"), "building the engine")
            if not staged.is_file():
                raise ExportError(f"trtexec reported success but wrote no engine to {staged}")
            os.replace(staged, output)
        build = dict(tool="trtexec", command=command, tensorrt_version=parse_trtexec_version(log))
    build["seconds"] = round(time.perf_counter() - start, 1)
    print(f"wrote {output} in {build['seconds']} s")

    # check against PyTorch
    x = (source.example_input() if source is not None else torch.randn(shape)).numpy()
    runner = EngineRunner(trt, output, shape) if builder == "python" else None
    outputs = runner(x) if runner is not None else check_with_trtexec(trtexec, output, input_name, x, flags)
    atol, rtol = TOLERANCES[args.datatype]
    atol = args.atol if args.atol is not None else atol
    rtol = args.rtol if args.rtol is not None else rtol
    if source is not None:
        missing = [n for n in source.output_names if n not in outputs]
        if missing:
            raise ExportError(f"the engine has outputs {sorted(outputs)}, expected {source.output_names}")
        check = compare(
            [outputs[n] for n in source.output_names], source.reference_outputs(torch.from_numpy(x)), atol, rtol
        )
        check.update(runtime=f"TensorRT ({build['tool']})", reference="the PyTorch model as loaded, float32, CPU")
        if args.datatype == "int8" and atol is None and rtol is None:
            check["note"] = "int8: difference reported, not enforced (give --atol/--rtol to enforce)"
        print(f"check: max abs diff {check['max_abs_diff']:.3g}, max rel diff {check['max_rel_diff']:.3g}")
    else:
        check = dict(status="ran the engine; not compared (no --checkpoint to compare with)", passed=None)

    profile = None
    if args.profile:
        # timed by the TensorRT that built the engine: trtexec for its own, the Python runtime for the API's
        if builder == "trtexec":
            command = trtexec_profile_command(
                trtexec, output, args.warmUp, args.iterations, args.threads, args.dumpProfile, flags,
                tensorrt_version=build["tensorrt_version"],
            )  # fmt: skip
            log = _run_trtexec(command, output.with_name(output.name + ".profile.log"), "profiling")
            parsed = parse_trtexec_summary(log)
            profile = dict(tool="trtexec", command=command, summary=latency_summary(parsed, args.batch_size))
            profile["trtexec"] = parsed
        else:
            profile = dict(
                tool=f"tensorrt Python API {trt.__version__} (the engine's builder)",
                summary=timings_summary(runner.time(args.warmUp, args.iterations), args.batch_size),
            )
        s = profile["summary"]
        print(
            f"latency: mean {s['mean_ms']} ms, median {s['median_ms']} ms, p99 {s['p99_ms']} ms; "
            f"throughput {s['throughput_images_per_s']} images/s"
        )

    record = dict(
        format="tensorrt engine",
        output=output.name,
        output_sha256=sha256_file(output),
        **(source_record(source) if source is not None else dict(input=dict(name=input_name, shape=list(shape)))),
        onnx=onnx_info,
        datatype=args.datatype,
        int8_calibration=calibration,
        builder=build,
        check=check,
        profile=profile,
        **provenance(("tensorrt",)),
    )
    write_sidecar(output, record)
    if check.get("passed") is False:
        print(f"error: the engine differs from PyTorch by {check['max_abs_diff']:.3g} (max abs)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


if __name__ == "__main__":
    cli_main(main)
