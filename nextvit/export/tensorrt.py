"""TensorRT for Next-ViT engines: which toolchain is here, calibration data, and the Python API
(build fp32, fp16 or calibrated int8; run; time).

Used by deployment/export_tensorrt_engine.py and by deployment/benchmark.py's `tensorrt` mode.
The Python API needs the `tensorrt` module (8.5 or later: the named-tensor API) and a CUDA device;
the module object is passed in, so importing this file needs neither. trtexec is in `trtexec.py`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_bytes, replace_path, sha256_file, staging_folder
from ..preprocess import Preprocessing
from .errors import EXIT_UNAVAILABLE, EXIT_USAGE, ExportError
from .onnx import DEFAULT_OPSET
from .record import provenance, source_record, write_sidecar
from .source import ExportSource
from .verify import compare

__all__ = [
    "TOLERANCES",
    "tensorrt_module",
    "gpu_visible",
    "find_toolchain",
    "load_calibration_batches",
    "EngineRunner",
    "build_engine_python",
    "make_calibrator",
    "timings_summary",
    "EngineOptions",
    "build_and_check_engine",
]

# (atol, rtol) of the engine check by datatype. fp32 engines may use TF32 on recent GPUs.
TOLERANCES: dict[str, tuple[float | None, float | None]] = {
    "fp32": (1e-3, 1e-2),
    "fp16": (1e-2, 5e-2),
    "int8": (None, None),  # reported, not enforced
}


# --------------------------------------------------------------------------------------------
# Toolchain
# --------------------------------------------------------------------------------------------


def tensorrt_module():
    """The `tensorrt` module, or None when it is absent or broken."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - a broken install (missing libraries) counts as absent
        return None
    return tensorrt


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU is here (torch sees one, or `nvidia-smi -L` lists one)."""
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
            raise ExportError("no trtexec executable there", EXIT_UNAVAILABLE, param="trtexec_path", value=trtexec_path)
        trtexec = trtexec_path
    else:
        trtexec = shutil.which("trtexec")
    trt = tensorrt_module() if builder != "trtexec" else None
    if builder == "auto":
        if trtexec_path is not None or (prefer_trtexec and trtexec is not None) or trt is None:
            builder = "trtexec"
        else:
            builder = "python"
    if builder == "python" and trt is None:
        raise ExportError(
            "the tensorrt Python module is not installed here", EXIT_UNAVAILABLE, param="builder", value="python"
        )
    if builder == "trtexec" and trtexec is None:
        if trtexec_path is None and tensorrt_module() is None:
            raise ExportError(
                "TensorRT is not available here: no tensorrt Python module and no trtexec on PATH "
                "(install TensorRT, or give the path of a trtexec)",
                EXIT_UNAVAILABLE,
            )
        raise ExportError("trtexec is not on PATH here (give its path)", EXIT_UNAVAILABLE, param="trtexec_path")
    if not gpu_visible():
        raise ExportError(
            "no CUDA GPU is visible here: TensorRT builds and runs engines on an NVIDIA GPU", EXIT_UNAVAILABLE
        )
    if builder == "python" and not torch.cuda.is_available():
        raise ExportError(
            "the TensorRT Python path needs a CUDA build of PyTorch for its buffers; build with trtexec instead",
            EXIT_UNAVAILABLE,
        )
    return dict(builder=builder, trtexec=trtexec, tensorrt=trt)


# --------------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------------


def load_calibration_batches(
    folder: Path,
    shape: tuple[int, ...],
    features: bool,
    max_images: int,
    preprocessing: Preprocessing | None = None,
    seed: int = 0,
) -> list:
    """Up to `max_images` images of `folder`, drawn across its class folders (`find_images`) and
    preprocessed as for the model (`preprocessing`, else the default eval preprocessing at the
    engine's size; for `features`, a plain resize to the input size), in batches of shape[0]."""
    from PIL import Image

    from ..images import ImageFileError, find_images, open_rgb

    batch, (h, w) = shape[0], tuple(shape[2:])
    try:
        files = find_images(folder, max_images, seed=seed, flag="calib_dir")
    except ImageFileError as err:
        raise ExportError(str(err), EXIT_USAGE, param="calib_dir", value=str(folder)) from None
    if len(files) < batch:
        raise ExportError(
            f"found {len(files)} images, need at least one batch of {batch}",
            EXIT_USAGE,
            param="calib_dir",
            value=str(folder),
        )
    prep = preprocessing or Preprocessing((h, w))
    arrays = []
    for path in files[: len(files) // batch * batch]:
        try:
            image = open_rgb(path)
        except ImageFileError as err:
            raise ExportError(str(err), EXIT_USAGE, param="calib_dir", value=str(folder)) from None
        arrays.append(prep.normalize(image.resize((w, h), Image.Resampling.BICUBIC)) if features else prep.array(image))
    return [np.stack(arrays[i : i + batch]) for i in range(0, len(arrays), batch)]


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------


def make_calibrator(trt, batches: list, cache_path: Path):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the calibration batches from GPU memory; never reads an old cache (it could be stale)."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index, self.current = 0, None

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(batches):
                return None
            self.current = torch.from_numpy(batches[self.index]).cuda().contiguous()
            self.index += 1
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_engine_python(trt, onnx_path: Path, engine: Path, datatype: str, shape: tuple[int, ...], calibrator) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if datatype == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif datatype == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build a {datatype} engine from {onnx_path} (see its log above)")
    atomic_write_bytes(engine, bytes(serialized))


class EngineRunner:
    """Runs a serialized engine with PyTorch CUDA tensors as its buffers (TensorRT 8.5+ tensor API)."""

    def __init__(self, trt, engine_path: Path, input_shape: tuple[int, ...]) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        for name in self.inputs:
            if -1 in tuple(self.engine.get_tensor_shape(name)):
                self.context.set_input_shape(name, input_shape)
        self.buffers = {}
        for name in names:
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            shape = tuple(self.context.get_tensor_shape(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def run_async(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.buffers[self.inputs[0]].copy_(torch.from_numpy(x))
        torch.cuda.synchronize()
        self.run_async()
        self.stream.synchronize()
        return {n: self.buffers[n].float().cpu().numpy() for n in self.outputs}

    def time(self, warmup_ms: int, iterations: int) -> list[float]:
        """Per-run GPU time in ms (CUDA events around each run, no host-device copies)."""
        end = time.perf_counter() + warmup_ms / 1000
        while time.perf_counter() < end:
            self.run_async()
            self.stream.synchronize()
        times = []
        for _ in range(iterations):
            start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_event.record(self.stream)
            self.run_async()
            end_event.record(self.stream)
            end_event.synchronize()
            times.append(start_event.elapsed_time(end_event))
        return times


def timings_summary(times_ms: list[float], batch_size: int) -> dict:
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    return dict(
        mean_ms=mean,
        median_ms=statistics.median(ordered),
        p99_ms=ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
        min_ms=ordered[0],
        max_ms=ordered[-1],
        throughput_qps=1000.0 / mean,
        throughput_images_per_s=1000.0 / mean * batch_size,
        measure="CUDA events around execute_async_v3 (GPU time, no host-device copies)",
        runs=len(ordered),
    )


# --------------------------------------------------------------------------------------------
# The whole build: ONNX, engine, check, profile
# --------------------------------------------------------------------------------------------


@dataclass
class EngineOptions:
    """What engine to build and how to check and time it (the flags of export_tensorrt_engine.py)."""

    datatype: str  # fp32, fp16 or int8
    shape: tuple[int, int, int, int]  # the engine's input (batch, 3, height, width)
    opset: int = DEFAULT_OPSET  # of a fresh ONNX export
    exporter: str = "torchscript"
    calib_dir: str | Path | None = None  # int8 with the Python API: images to calibrate on
    calib_max_images: int = 512
    features: bool = False  # the four stage outputs, not the classifier
    atol: float | None = None  # None: TOLERANCES[datatype]
    rtol: float | None = None
    profile: bool = False
    warmup_ms: int = 200
    iterations: int = 100
    threads: int = 1  # trtexec streams
    dump_profile: bool = False


def build_and_check_engine(
    output: str | Path,
    *,
    tools: dict,
    options: EngineOptions,
    source: ExportSource | None = None,
    onnx_path: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build an engine at `output` with `tools` (`find_toolchain`), check it against `source` (when
    given) and time it (`options.profile`); returns the sidecar record (not written).

    The ONNX model is `onnx_path`, or exported afresh from `source` next to the engine. A QDQ
    model (from `quantize`) builds an explicitly quantized int8 engine; other int8 engines are
    calibrated on `options.calib_dir` (Python API) or, with trtexec, built uncalibrated for latency
    only. Tolerances default to `TOLERANCES[datatype]`; `check.passed` is False above them.
    """
    output = Path(output)
    onnx_path, onnx_info, input_name, flags = _engine_onnx(output, options, source, onnx_path, log)
    calibration, build, runner = _build_engine(output, tools, options, source, onnx_path, onnx_info, flags, log)
    check = _check_engine(output, tools, options, source, runner, input_name, flags, build, log)
    timing = _time_engine(output, tools, options, runner, flags, build, log) if options.profile else None
    return dict(
        format="tensorrt engine",
        output=output.name,
        output_sha256=sha256_file(output),
        **(
            source_record(source)
            if source is not None
            else dict(input=dict(name=input_name, shape=list(options.shape)))
        ),  # fmt: skip
        onnx=onnx_info,
        datatype=options.datatype,
        int8_calibration=calibration,
        builder=build,
        check=check,
        profile=timing,
        **provenance(("tensorrt",)),
    )


def _engine_onnx(output: Path, options: EngineOptions, source, onnx_path, log) -> tuple[Path, dict, str, list]:
    """Step 1: the ONNX model to build from (given, or exported and checked), its input and shape flags."""
    from .onnx import export_and_check_onnx, onnx_input
    from .trtexec import shape_flags

    if onnx_path is not None:
        onnx_path = Path(onnx_path)
        onnx_info = dict(path=str(onnx_path), sha256=sha256_file(onnx_path), exported=False)
    elif source is None:
        raise ExportError("needs an ONNX file or a model to export", EXIT_USAGE, param="onnx")
    else:
        onnx_path = output.with_suffix(".onnx")
        record = export_and_check_onnx(source, onnx_path, opset=options.opset, exporter=options.exporter, log=log)
        write_sidecar(onnx_path, record)
        if not record["check"]["passed"]:
            raise ExportError(f"the ONNX export {onnx_path} does not match PyTorch: see {onnx_path}.json")
        onnx_info = dict(path=str(onnx_path), sha256=record["output_sha256"], exported=True, opset=record["opset"])
    input_name, dims = onnx_input(onnx_path)
    shape = options.shape
    if len(dims) != 4 or any(d is not None and d != s for d, s in zip(dims, shape)):
        raise ExportError(f"{onnx_path} takes input {dims}, not {list(shape)}", EXIT_USAGE, param="image_size")
    return onnx_path, onnx_info, input_name, shape_flags(input_name, dims, shape)


def _build_engine(output, tools, options: EngineOptions, source, onnx_path, onnx_info, flags, log):
    """Step 2: the engine, by the Python API (calibrated int8 where asked) or trtexec."""
    from .onnx import onnx_is_quantized
    from .trtexec import parse_trtexec_version, run_trtexec, trtexec_build_command

    trt, trtexec, builder = tools["tensorrt"], tools["trtexec"], tools["builder"]
    datatype, shape = options.datatype, options.shape
    explicit_qdq = onnx_info["exported"] is False and onnx_is_quantized(onnx_path)
    calibration = None
    if datatype == "int8" and explicit_qdq:
        calibration = dict(status="explicit quantization: the QDQ scales of the ONNX model (deployment/quantize.py)")
    elif datatype == "int8":
        calibration = dict(status="latency-only, uncalibrated: trtexec --int8 without calibration data")
    log(f"building a {datatype} engine with {'the TensorRT Python API' if builder == 'python' else trtexec}")
    start = time.perf_counter()
    if builder == "python":
        calibrator = None
        if options.calib_dir is not None:
            batches = load_calibration_batches(
                Path(options.calib_dir), shape, options.features, options.calib_max_images,
                source.preprocessing if source is not None else None,
            )  # fmt: skip
            cache = output.with_name(output.name + ".calib.cache")
            calibrator = make_calibrator(trt, batches, cache)
            calibration = dict(
                status="calibrated (entropy calibrator 2)",
                images=sum(len(b) for b in batches),
                folder=str(options.calib_dir),
                cache_written=cache.name,
            )
        build_engine_python(trt, onnx_path, output, datatype, shape, calibrator)
        build = dict(tool="tensorrt Python API", tensorrt_version=trt.__version__)
    else:
        with staging_folder(output) as tmp:
            staged = tmp / output.name
            command = trtexec_build_command(trtexec, onnx_path, staged, datatype, flags)
            text = run_trtexec(command, output.with_name(output.name + ".build.log"), "building the engine", log)
            if not staged.is_file():
                raise ExportError(f"trtexec reported success but wrote no engine to {staged}")
            replace_path(staged, output)
        build = dict(tool="trtexec", command=command, tensorrt_version=parse_trtexec_version(text))
    build["seconds"] = round(time.perf_counter() - start, 1)
    log(f"wrote {output} in {build['seconds']} s")
    runner = EngineRunner(trt, output, shape) if builder == "python" else None
    return calibration, build, runner


def _check_engine(output, tools, options: EngineOptions, source, runner, input_name, flags, build, log) -> dict:
    """Step 3: the engine's outputs on the reference input, against PyTorch's."""
    from .trtexec import check_with_trtexec

    x = (source.example_input() if source is not None else torch.randn(options.shape)).numpy()
    if runner is not None:
        outputs = runner(x)
    else:
        outputs = check_with_trtexec(tools["trtexec"], output, input_name, x, flags, log)
    default_atol, default_rtol = TOLERANCES[options.datatype]
    atol = default_atol if options.atol is None else options.atol
    rtol = default_rtol if options.rtol is None else options.rtol
    if source is None:
        return dict(status="ran the engine; not compared (no checkpoint to compare with)", passed=None)
    missing = [n for n in source.output_names if n not in outputs]
    if missing:
        raise ExportError(f"the engine has outputs {sorted(outputs)}, expected {source.output_names}")
    check = compare(
        [outputs[n] for n in source.output_names], source.reference_outputs(torch.from_numpy(x)), atol, rtol
    )
    check.update(runtime=f"TensorRT ({build['tool']})", reference="the PyTorch model as loaded, float32, CPU")
    if options.datatype == "int8" and atol is None and rtol is None:
        check["note"] = "int8: difference reported, not enforced (give atol/rtol to enforce)"
    log(f"check: max abs diff {check['max_abs_diff']:.3g}, max rel diff {check['max_rel_diff']:.3g}")
    return check


def _time_engine(output, tools, options: EngineOptions, runner, flags, build, log) -> dict:
    """Step 4: latency, by the TensorRT that built the engine (trtexec for its own, the Python
    runtime for the API's: a trtexec of another version cannot load it)."""
    from .trtexec import latency_summary, parse_trtexec_summary, run_trtexec, trtexec_profile_command

    if tools["builder"] == "trtexec":
        command = trtexec_profile_command(
            tools["trtexec"], output, options.warmup_ms, options.iterations, options.threads, options.dump_profile,
            flags, tensorrt_version=build["tensorrt_version"],
        )  # fmt: skip
        text = run_trtexec(command, output.with_name(output.name + ".profile.log"), "profiling", log)
        parsed = parse_trtexec_summary(text)
        timing = dict(tool="trtexec", command=command, summary=latency_summary(parsed, options.shape[0]),
                      trtexec=parsed)  # fmt: skip
    else:
        timing = dict(
            tool=f"tensorrt Python API {tools['tensorrt'].__version__} (the engine's builder)",
            summary=timings_summary(runner.time(options.warmup_ms, options.iterations), options.shape[0]),
        )
    s = timing["summary"]
    log(
        f"latency: mean {s['mean_ms']} ms, median {s['median_ms']} ms, p99 {s['p99_ms']} ms; "
        f"throughput {s['throughput_images_per_s']} images/s"
    )
    return timing
