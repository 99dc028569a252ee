"""Inference latency of Next-ViT against timm's port and classic peers, in one process.

    python deployment/benchmark.py                       # nextvit_small vs timm's, 224, batch 1 and 8
    python deployment/benchmark.py --batch-sizes 1 --modes eager folded --runs 10
    python deployment/benchmark.py --models nextvit_small nextvit_base nextvit_large timm:resnet50 \\
        timm:convnext_tiny timm:efficientformer_l1 --input-sizes 224 384 --modes folded onnxruntime \\
        --output logs/benchmark_zoo_cpu.json --csv logs/benchmark_zoo_cpu.csv --chart images/latency_accuracy_cpu.png

Models are this package's (`nextvit_small`, ...) or timm's (`timm:<name>`, random weights, no
download). Without `--models`, `--model` is compared with timm's model of the same name, sharing
the same weights. For each input size and batch size, every (model, mode, dtype) is timed in
alternation, a few calls at a time, round after round, so all see the same machine state; each
row gives the median and quartiles, the ratio to the first model of `--models` in the same mode
and dtype, and with `--baseline` the ratio to that row (e.g. `timm:nextvit_small:eager`).

Runtimes do not share a process (`--isolation process`, the default): each (model, mode, dtype)
runs in a worker process of its own that sleeps while another is timed, so no runtime's thread
pool (PyTorch's OpenMP threads, ONNX Runtime's and OpenVINO's spinning workers) competes with the
one being measured; a pause separates the turns. `--isolation none` keeps all in this process
(quicker to start; ONNX Runtime then reads up to 1.6x slower beside PyTorch). Modes:

* eager: the model as trained (BatchNorms in place);
* folded: BatchNorms folded (ours: `nextvit.fold_batchnorm`; timm models: timm's own
  `reparameterize_model`, which is what timm offers for deployment);
* folded_cl: folded, with channels_last weights and inputs;
* compile: folded, `torch.compile` (inductor) with freezing, under no_grad;
* onnxruntime: the folded model exported to ONNX (opset 17) and run by ONNX Runtime;
* onnxruntime_int8: that ONNX model quantized to static int8 QDQ (`nextvit.quantize`, per-channel
  weights, calibrated on random ImageNet-range inputs: latency only) and run by ONNX Runtime;
* openvino / openvino_int8: the same fp32 / int8 ONNX models compiled by OpenVINO for the CPU;
  with `--dtypes bfloat16`, the fp32 model under OpenVINO's bf16 precision hint;
* tensorrt: the folded model as a TensorRT engine (where TensorRT and a GPU exist; skipped otherwise).

dtypes: float32; bfloat16 and float16 for the PyTorch modes (the folded model runs oneDNN in bf16
where the CPU has bf16 units); bfloat16 for OpenVINO; float16 for TensorRT (an fp16 engine, the
paper's setting). The CPU's int8/bf16 instruction sets (VNNI, AVX512-BF16, AMX) are recorded with
the machine: they decide what the low-precision rows can gain. The int8 modes take float32
inputs (quantization happens inside the model).

The compute floor of a row is the model's FLOPs (counted once, on the CPU) divided by the
matrix-multiply rate this device reaches in a large GEMM of the row's dtype: no implementation in
that dtype can beat it by much (int8 rows have none). On CUDA, ONNX Runtime runs with its input and
outputs bound to GPU memory (IO binding), so its rows, like the PyTorch and TensorRT ones, hold no
host-device copies. Every row records the machine, library versions, threads, dtype, batch,
resolution, warm-up and run counts, and the git commit.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import nextvit
from nextvit.flops import count_flops

MODES = (
    "eager",
    "folded",
    "folded_cl",
    "compile",
    "onnxruntime",
    "onnxruntime_int8",
    "openvino",
    "openvino_int8",
    "tensorrt",
)
DEFAULT_MODES = ("eager", "folded", "folded_cl", "compile", "onnxruntime")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# ImageNet-1K top-1 (%) at 224 of the published weights, for the latency-accuracy chart; the
# benchmark itself times random weights of the same architectures.
ACCURACY = {
    "nextvit_small": (82.5, "Next-ViT paper / original README"),
    "nextvit_base": (83.2, "Next-ViT paper / original README"),
    "nextvit_large": (83.6, "Next-ViT paper / original README"),
    "resnet50": (80.4, "Wightman et al. 2021, ResNet strikes back (A1)"),
    "convnext_tiny": (82.1, "Liu et al. 2022, ConvNeXt"),
    "efficientformer_l1": (79.2, "Li et al. 2022, EfficientFormer"),
}


def machine_info(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("timm", "onnxruntime", "openvino", "tensorrt", "nextvit"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    info = dict(
        cpu=cpu,
        cpu_isa=[f for f in ISA_FLAGS if f in flags],
        logical_cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        device=device,
        versions=versions,
        git_commit=commit,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        versions["cuda"] = torch.version.cuda
    return info


def gemm_gflops(
    size: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32, budget_s: float = 3.0
) -> float:
    """The best matrix-multiply rate this device reaches in `dtype` (GFLOP/s, 2 FLOPs per MAC).

    Half-precision rows need a half-precision rate: on GPUs (tensor cores) and on CPUs with AMX it
    is many times the fp32 one, on CPUs without bf16/fp16 kernels a small fraction of it. The
    matrix grows from 256 up to `size` (4x that on CUDA) while a product takes under a
    twentieth of `budget_s`, so a slow dtype is measured in seconds, not minutes.
    """
    limit = size * 4 if device == "cuda" else size
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def product_seconds(a, b) -> float:
        start = time.perf_counter()
        a @ b
        sync()
        return time.perf_counter() - start

    n = min(256, limit)
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        product_seconds(a, b)  # warm-up
        if n * 2 > limit or product_seconds(a, b) > budget_s / 20:
            break
        n *= 2
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        took = product_seconds(a, b)
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return 2 * n**3 / best / 1e9


def floor_ms(flops: float, batch: int, gflops_rate: float | None) -> float | None:
    """The compute floor of one batch in ms, or None where it is unknown (no FLOPs count, no rate)."""
    if not flops or not gflops_rate:
        return None
    return round(2 * flops * batch / (gflops_rate * 1e9) * 1e3, 2)


def combination_exists(mode: str, dtype: str) -> bool:
    """ONNX Runtime and the int8 modes take float32 inputs; OpenVINO runs float32 or bfloat16;
    TensorRT builds float32 or float16 engines."""
    if mode in ("onnxruntime", "onnxruntime_int8", "openvino_int8"):
        return dtype == "float32"
    if mode == "openvino":
        return dtype in ("float32", "bfloat16")
    if mode == "tensorrt":
        return dtype != "bfloat16"
    return True


class Timed:
    """A callable under test plus its input, timed one call at a time."""

    def __init__(self, name: str, fn: Callable, x, sync: Callable[[], None] | None = None) -> None:
        self.name, self.fn, self.x, self.sync = name, fn, x, sync
        self.times: list[float] = []

    def warm(self, n: int) -> None:
        for _ in range(n):
            self.fn(self.x)
        if self.sync:
            self.sync()

    def time_once(self) -> None:
        start = time.perf_counter()
        self.fn(self.x)
        if self.sync:
            self.sync()
        self.times.append(time.perf_counter() - start)

    def summary(self) -> dict:
        ms = sorted(t * 1e3 for t in self.times)
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        return dict(
            median_ms=round(statistics.median(ms), 3),
            p25_ms=round(q[0], 3),
            p75_ms=round(q[2], 3),
            min_ms=round(ms[0], 3),
            runs=len(ms),
        )


def build_model(spec: str, shared_state: dict | None = None) -> torch.nn.Module:
    """`nextvit_*` (this package) or `timm:<name>` (random weights; nextvit ones share ours)."""
    torch.manual_seed(0)
    if not spec.startswith("timm:"):
        return nextvit.create_model(spec).eval()
    import timm

    model = timm.create_model(spec[len("timm:") :], pretrained=False).eval()
    if shared_state is not None:
        model.load_state_dict(shared_state)
    return model


def fold(spec: str, model: torch.nn.Module) -> torch.nn.Module:
    if not spec.startswith("timm:"):
        return nextvit.fold_batchnorm(model)
    from timm.utils.model import reparameterize_model

    return reparameterize_model(copy.deepcopy(model))


def _torch_fn(model, x, channels_last=False, compile_model=False):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_model:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)

    def run(inp):
        with torch.inference_mode() if not compile_model else torch.no_grad():
            return model(inp)

    return run, x


def ort_bound_run(session, x: torch.Tensor) -> Callable:
    """A call that runs `session` on `x` in place: the input is bound to x's memory, the outputs to its device.

    On CUDA this keeps the host-device copies `session.run` makes (numpy in, numpy out) out of the
    timing, as they are out of the PyTorch and TensorRT rows. The call returns the output OrtValues.
    """
    import numpy as np

    binding = session.io_binding()
    device_type, device_id = x.device.type, x.device.index or 0
    element_type = {torch.float32: np.float32, torch.float16: np.float16}[x.dtype]
    binding.bind_input(
        name=session.get_inputs()[0].name,
        device_type=device_type,
        device_id=device_id,
        element_type=element_type,
        shape=tuple(x.shape),
        buffer_ptr=x.data_ptr(),
    )
    for output in session.get_outputs():
        binding.bind_output(output.name, device_type, device_id)

    def run(_=None):
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    return run


def onnx_artifacts(spec: str, model, mode: str, x: torch.Tensor, workdir: Path) -> dict[str, Path]:
    """The ONNX files a mode runs, made once per model and input shape and shared by its modes:
    the folded fp32 model, and its static int8 QDQ version (calibrated on random ImageNet-range
    inputs, so for latency only)."""
    if mode not in ("onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8"):
        return {}
    tag = f"{spec.replace(':', '_')}_{x.shape[0]}x{x.shape[2]}x{x.shape[3]}"
    files = {"fp32": workdir / f"{tag}.onnx"}
    if not files["fp32"].exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(fold(spec, model), (x,), str(files["fp32"]), opset_version=17, dynamo=False,
                              input_names=["input"])  # fmt: skip
    if mode.endswith("_int8"):
        from nextvit.quantize import quantize_qdq

        files["int8"] = workdir / f"{tag}_int8.onnx"
        if not files["int8"].exists():
            gen = torch.Generator().manual_seed(0)
            calib = [torch.randn(x.shape[1:], generator=gen).clamp_(-2.2, 2.7).numpy() for _ in range(2 * x.shape[0])]
            quantize_qdq(files["fp32"], files["int8"], calib, lambda a: a, calibration_batch=x.shape[0])
    return files


def _onnxruntime_fn(path: Path, x: torch.Tensor, device: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"this onnxruntime has no {provider} (it would fall back silently)")
    options = {"device_id": torch.cuda.current_device()} if device == "cuda" else {}
    session = ort.InferenceSession(str(path), opts, providers=[(provider, options)])
    inp = x.to(device).contiguous()  # kept alive by the Timed that holds it: the binding points into it
    return ort_bound_run(session, inp), inp


def _openvino_fn(path: Path, x: torch.Tensor, precision: str):
    from nextvit.openvino import compile_model

    compiled = compile_model(path, precision, torch.get_num_threads())
    request = compiled.create_infer_request()
    inp = x.numpy()
    return (lambda _: request.infer({0: inp})), inp


def tensorrt_unavailable(device: str) -> str | None:
    """Why TensorRT cannot be timed in this run, or None when it can."""
    if device != "cuda":
        return "TensorRT runs on the GPU: pass --device cuda"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _tensorrt_fn(model, x, workdir: Path, tag: str, fp16: bool):
    """An engine built as export_tensorrt_engine.py builds it (nextvit.tensorrt), run on its CUDA buffers."""
    import tensorrt as trt

    from nextvit.tensorrt import EngineRunner, build_engine_python

    onnx_path, engine_path = workdir / f"{tag}.onnx", workdir / f"{tag}.engine"
    torch.onnx.export(model, (x,), str(onnx_path), opset_version=17, dynamo=False, input_names=["input"])
    build_engine_python(trt, onnx_path, engine_path, "fp16" if fp16 else "fp32", tuple(x.shape), None)
    runner = EngineRunner(trt, engine_path, tuple(x.shape))
    runner.buffers[runner.inputs[0]].copy_(x)
    return (lambda _: runner.run_async()), None


def make_timed(spec: str, model, mode: str, dtype: str, x: torch.Tensor, workdir: Path, device: str) -> Timed | None:
    """One model in one mode, ready to time; None where the combination does not exist."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    tag = spec.replace(":", "_")
    if not combination_exists(mode, dtype):
        return None
    if mode in ("onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8"):
        if device != "cpu" and mode.startswith("openvino"):
            raise RuntimeError("OpenVINO is timed on the CPU only")
        files = onnx_artifacts(spec, model, mode, x, workdir)
        path = files["int8" if mode.endswith("_int8") else "fp32"]
        if mode.startswith("openvino"):
            fn, inp = _openvino_fn(path, x, "bf16" if dtype == "bfloat16" else "fp32")
            return Timed(spec, fn, inp)
        fn, inp = _onnxruntime_fn(path, x, device)
        return Timed(spec, fn, inp, sync=sync)
    if mode == "tensorrt":
        fn, inp = _tensorrt_fn(fold(spec, model), x, workdir, tag, fp16=dtype == "float16")
        return Timed(spec, fn, inp, sync=torch.cuda.synchronize)  # waits for every stream, the engine's too
    # a copy in every mode: `.to()` works in place, and the shared model must stay float32 on the CPU
    # for the next mode, input size and FLOPs count
    net = copy.deepcopy(model) if mode == "eager" else fold(spec, model)
    net = net.to(device=device, dtype=DTYPES[dtype])
    kwargs = dict(channels_last=mode == "folded_cl", compile_model=mode == "compile")
    fn, inp = _torch_fn(net, x.to(device=device, dtype=DTYPES[dtype]), **kwargs)
    return Timed(spec, fn, inp, sync=sync)


# --------------------------------------------------------------------------------------------
# One runtime per process
# --------------------------------------------------------------------------------------------


def _worker(conn, spec: str, mode: str, dtype: str, size: int, batch: int, workdir: str, device: str,
            threads: int | None, warmup: int) -> None:  # fmt: skip
    """A worker process: build one (model, mode, dtype), warm it, then time calls when asked."""
    try:
        if threads:
            torch.set_num_threads(threads)
        shared = build_model(base_name(spec)).state_dict() if spec.startswith("timm:nextvit") else None
        model = build_model(spec, shared)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size * 1000 + batch))
        timed = make_timed(spec, model, mode, dtype, x, Path(workdir), device)
        timed.warm(1 + warmup + (2 if mode == "compile" else 0))
        conn.send(("ready", None))
    except Exception as err:  # noqa: BLE001 - reported by the parent
        conn.send(("error", f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"))
        return
    while True:
        command, count = conn.recv()
        if command == "stop":
            return
        timed.times = []
        for _ in range(count):
            timed.time_once()
        conn.send(timed.times)


class WorkerTimed:
    """A `Timed` whose model lives in a worker process: `time_once` asks it for one timed call."""

    def __init__(self, name: str, process, conn) -> None:
        self.name, self.process, self.conn = name, process, conn
        self.times: list[float] = []

    def time_once(self) -> None:
        self.conn.send(("time", 1))
        self.times += self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop", 0))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()

    summary = Timed.summary


def start_worker(spec: str, mode: str, dtype: str, size: int, batch: int, workdir: Path,
                 args: argparse.Namespace) -> WorkerTimed:  # fmt: skip
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_worker, args=(child, spec, mode, dtype, size, batch, str(workdir), args.device,
                                                    args.threads, args.warmup), daemon=True)  # fmt: skip
    process.start()
    status, why = parent.recv()
    if status != "ready":
        process.join(timeout=30)
        raise RuntimeError(why)
    return WorkerTimed(spec, process, parent)


def _flops_or_zero(model: torch.nn.Module, size: int) -> float:
    """FLOPs at `size`, or 0 for a model that cannot take that size (its timing then reports why)."""
    try:
        return count_flops(model, size)
    except Exception:  # noqa: BLE001
        return 0.0


def gemm_dtypes(args: argparse.Namespace) -> list[str]:
    """The dtypes whose GEMM rate some row's floor needs."""
    needed = {dtype for _, _, dtype in args.entries}
    return [dtype for dtype in DTYPES if dtype in needed]


def parse_entry(text: str) -> tuple[str, str, str]:
    """'MODEL:MODE[:DTYPE]' (MODEL may be timm:<name>; '{model}' stands for the row's model name)."""
    parts = text.split(":")
    dtype = parts.pop() if parts[-1] in DTYPES else "float32"
    if len(parts) < 2 or parts[-1] not in MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL:MODE[:DTYPE], MODE one of {MODES}")
    mode = parts.pop()
    return ":".join(parts), mode, dtype


def base_name(spec: str) -> str:
    return spec.split(":", 1)[-1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models(),
                        help="without --models: this model against timm's of the same name")  # fmt: skip
    parser.add_argument("--models", nargs="+", help="models to time together: nextvit_* or timm:<name>")
    parser.add_argument("--input-size", "--input-sizes", dest="input_sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES))
    parser.add_argument("--entries", nargs="+", type=parse_entry, metavar="MODEL:MODE[:DTYPE]",
                        help="exactly these combinations instead of every model x mode x dtype")  # fmt: skip
    parser.add_argument("--baseline", type=parse_entry, metavar="MODEL:MODE[:DTYPE]",
                        help="every row's ratio to this row of its input and batch size; MODEL may be "
                        "'timm:{model}' (the row's own model name), e.g. timm:{model}:eager")  # fmt: skip
    parser.add_argument("--isolation", choices=["process", "none"], default="process",
                        help="a worker process per model, mode and dtype (no competing thread pools), "
                        "or none")  # fmt: skip
    parser.add_argument("--pause-ms", type=float, default=20.0, help="process isolation: rest between turns")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model at batch 1 (fewer for larger)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="without --models: skip timm's model")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="also write one CSV row per measurement here")
    parser.add_argument("--chart", type=Path, default=None, help="draw a latency-accuracy chart (PNG) here")
    parser.add_argument("--chart-mode", default="folded", choices=MODES, help="the mode the chart plots")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown table of the rows here")
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    if args.entries:
        args.models = list(dict.fromkeys(spec for spec, _, _ in args.entries))
    elif args.models is None:
        args.models = [args.model] + ([] if args.no_timm else [f"timm:{args.model}"])
    if not args.entries:
        args.entries = [(spec, mode, dtype) for dtype in args.dtypes for mode in args.modes for spec in args.models
                        if combination_exists(mode, dtype)]  # fmt: skip
    else:
        bad = [e for e in args.entries if not combination_exists(e[1], e[2])]
        if bad:
            parser.error(f"--entries: {bad[0][1]} does not run in {bad[0][2]}")
    args.modes = list(dict.fromkeys(mode for _, mode, _ in args.entries))
    for spec in args.models:
        if not spec.startswith("timm:") and spec not in nextvit.list_models():
            parser.error(f"--models: {spec!r} is neither one of {nextvit.list_models()} nor timm:<name>")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    return args


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    models = {spec: None for spec in args.models}
    ours_state = {}
    for spec in args.models:  # timm's Next-ViT gets our weights, so both compute the same thing
        shared = ours_state.get(base_name(spec)) if spec.startswith("timm:nextvit") else None
        models[spec] = build_model(spec, shared)
        if not spec.startswith("timm:"):
            ours_state[spec] = models[spec].state_dict()
    # FLOPs once per model and size, before any timing, on the CPU float32 models (never moved)
    flops = {(spec, size): _flops_or_zero(m, size) for size in args.input_sizes for spec, m in models.items()}
    gemm = {dtype: gemm_gflops(device=args.device, dtype=DTYPES[dtype]) for dtype in gemm_dtypes(args)}
    skip = {"tensorrt": tensorrt_unavailable(args.device)} if "tensorrt" in args.modes else {}
    print(f"# {info['cpu']} ({' '.join(info['cpu_isa']) or 'no AVX2'}), {info['logical_cores']} logical cores, "
          f"{info['torch_threads']} torch threads" + (f", {info['gpu']}" if args.device == "cuda" else ""))  # fmt: skip
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", commit {info['git_commit']}")
    rates = ", ".join(f"{dtype} {rate:.4g}" for dtype, rate in gemm.items())
    where = "a worker process each, turns" if args.isolation == "process" else "one process, calls"
    print(
        f"# GEMM rate here (GFLOP/s): {rates}; warm-up {args.warmup} calls, then timed calls in alternation "
        f"({where} in alternation)"
    )
    print(f"# median [p25-p75] ms per batch; ratio: to {args.models[0]}; /floor: to FLOPs / GEMM rate of the dtype")
    for mode, why in skip.items():
        if why:
            print(f"# {mode}: skipped ({why})")

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.input_sizes:
            for batch in args.batch_sizes:
                x = torch.randn(batch, 3, size, size)
                for dtype in gemm:  # the best rate seen so far: a shared machine drifts
                    gemm[dtype] = max(gemm[dtype], gemm_gflops(device=args.device, dtype=DTYPES[dtype]))
                runs = max(5, args.runs // max(1, batch // 2) // (2 if size > 300 else 1))
                print(f"\n{size}x{size}, batch {batch}", flush=True)
                timed = []
                for spec, mode, dtype in args.entries:
                    if skip.get(mode):
                        continue
                    try:  # one model that cannot run here (e.g. a fixed input size) does not end the run
                        onnx_artifacts(spec, models[spec], mode, x, Path(tmp))  # made once, here
                        if args.isolation == "process":
                            t = start_worker(spec, mode, dtype, size, batch, Path(tmp), args)
                        else:
                            t = make_timed(spec, models[spec], mode, dtype, x, Path(tmp), args.device)
                            t.warm(1 + args.warmup + (2 if mode == "compile" else 0))
                        timed.append(((spec, mode, dtype), t))
                    except Exception as err:  # noqa: BLE001 - reported in the result, then go on
                        why = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                        failed.append(dict(model=spec, mode=mode, dtype=dtype, batch=batch, input_size=size,
                                           error=why))  # fmt: skip
                        print(f"  {mode:<16} {dtype:<9} {spec:<26} cannot run: {why}", flush=True)
                try:
                    for _ in range(runs):
                        for _, t in timed:
                            t.time_once()
                            if args.isolation == "process" and len(timed) > 1:
                                time.sleep(args.pause_ms / 1e3)  # the last runtime's threads go to sleep
                finally:
                    for _, t in timed:
                        if isinstance(t, WorkerTimed):
                            t.close()
                medians = {key: t.summary()["median_ms"] for key, t in timed}
                for (spec, mode, dtype), t in timed:
                    first = next(k for k in medians if k[1:] == (mode, dtype))
                    row = dict(model=spec, mode=mode, dtype=dtype, device=args.device, batch=batch, input_size=size,
                               warmup=args.warmup, isolation=args.isolation, gflops=round(flops[spec, size] / 1e9, 4),
                               **t.summary())  # fmt: skip
                    row["ratio_to_first"] = round(row["median_ms"] / medians[first], 3)
                    if args.baseline is not None:
                        b_spec, b_mode, b_dtype = args.baseline
                        key = (b_spec.replace("{model}", base_name(spec)), b_mode, b_dtype)
                        if key in medians:
                            row["baseline"] = ":".join(key)
                            row["ratio_to_baseline"] = round(row["median_ms"] / medians[key], 3)
                    int8 = mode.endswith("_int8")  # no int8 GEMM rate is measured: no floor
                    row["floor_ms"] = None if int8 else floor_ms(flops[spec, size], batch, gemm[dtype])
                    rows.append(row)
                    to_floor = f"{row['median_ms'] / row['floor_ms']:.2f}" if row["floor_ms"] else "n/a"
                    to_base = f"   x{row['ratio_to_baseline']:.3f} baseline" if "ratio_to_baseline" in row else ""
                    print(f"  {mode:<16} {dtype:<9} {spec:<26} {row['median_ms']:9.1f} "
                          f"[{row['p25_ms']:.1f}-{row['p75_ms']:.1f}]   ratio {row['ratio_to_first']:.3f}"
                          f"   /floor {to_floor}{to_base}", flush=True)  # fmt: skip
                torch._dynamo.reset()

    for row in rows:  # floors against the best GEMM rate of their dtype seen in the whole run (none for int8)
        if not row["mode"].endswith("_int8"):
            row["floor_ms"] = floor_ms(flops[row["model"], row["input_size"]], row["batch"], gemm[row["dtype"]])
    gemm = {dtype: float(f"{rate:.4g}") for dtype, rate in gemm.items()}
    command = ["deployment/benchmark.py", *(sys.argv[1:] if args.argv is None else args.argv)]
    return dict(models=args.models, gemm_gflops=gemm, machine=info, skipped=skip, failed=failed, rows=rows,
                command=command,
                isolation=args.isolation, baseline=":".join(args.baseline) if args.baseline else None)  # fmt: skip


def write_csv(result: dict, path: Path) -> None:
    info = result["machine"]
    provenance = dict(cpu=info["cpu"], gpu=info.get("gpu", ""), torch_threads=info["torch_threads"],
                      torch=info["versions"]["torch"], onnxruntime=info["versions"].get("onnxruntime", ""),
                      timm=info["versions"].get("timm", ""), commit=info["git_commit"], date=info["date"])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*result["rows"][0], *provenance])
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(row | provenance)


def draw_chart(result: dict, path: Path, mode: str) -> None:
    """Top-1 (published) against latency (measured here) at batch 1, the smallest input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["mode"] == mode and r["batch"] == 1 and r["dtype"] == "float32"]
    if not rows:
        raise SystemExit(f"--chart: no batch-1 float32 rows in mode {mode!r} to draw")
    size = min(r["input_size"] for r in rows)
    rows = [r for r in rows if r["input_size"] == size and base_name(r["model"]) in ACCURACY]
    info = result["machine"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=150)
    ours = sorted((r for r in rows if not r["model"].startswith("timm:")), key=lambda r: r["median_ms"])
    ax.plot([r["median_ms"] for r in ours], [ACCURACY[r["model"]][0] for r in ours], "o-", color="tab:red",
            label="Next-ViT (this package, BatchNorm folded)")  # fmt: skip
    for r in ours:
        label = "Next-ViT-" + r["model"].split("_")[-1][0].upper()
        ax.annotate(label, (r["median_ms"], ACCURACY[r["model"]][0]), textcoords="offset points", xytext=(6, -10))
    for r in rows:
        if r["model"].startswith("timm:"):
            acc = ACCURACY[base_name(r["model"])][0]
            ax.plot(r["median_ms"], acc, "s", color="tab:blue")
            ax.annotate(r["model"], (r["median_ms"], acc), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel(f"latency, ms (batch 1, {size}x{size}, float32, median; {mode})")
    ax.set_ylabel("ImageNet-1K top-1, % (published)")
    where = info.get("gpu") or f"{info['cpu']}, {info['torch_threads']} threads"
    ax.set_title(f"Latency measured on {where}\ntorch {info['versions']['torch']}, commit {info['git_commit']}",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def markdown_table(result: dict) -> str:
    """A table per input and batch size: a line per model, a column per mode and dtype, each cell the
    median ms and, where a baseline was timed, the ratio to it."""
    info = result["machine"]
    lines = [f"Measured on {info['cpu']} ({', '.join(info['cpu_isa']) or 'no AVX2'}), {info['torch_threads']} "
             f"threads, {info['date'][:10]}; torch {info['versions']['torch']}, onnxruntime "
             f"{info['versions'].get('onnxruntime', '-')}, openvino {info['versions'].get('openvino', '-')}; "
             f"median of timed calls after warm-up, "
             f"{'each runtime in its own process' if result.get('isolation') == 'process' else 'all in one process'}"
             + (f"; ratios to {result['baseline']}" if result.get("baseline") else "") + "."]  # fmt: skip
    groups: dict = {}
    for row in result["rows"]:
        groups.setdefault((row["input_size"], row["batch"]), []).append(row)
    for (size, batch), rows in groups.items():
        columns = list(dict.fromkeys((r["mode"], r["dtype"]) for r in rows))
        names = list(dict.fromkeys(r["model"] for r in rows))
        lines += ["", f"{size}x{size}, batch {batch}, ms (x baseline):", "",
                  "| model | " + " | ".join(f"{m} {d}" for m, d in columns) + " |",
                  "|---|" + "---:|" * len(columns)]  # fmt: skip
        for name in names:
            cells = []
            for mode, dtype in columns:
                hit = [r for r in rows if (r["model"], r["mode"], r["dtype"]) == (name, mode, dtype)]
                if not hit:
                    cells.append("")
                    continue
                ratio = hit[0].get("ratio_to_baseline")
                cells.append(f"{hit[0]['median_ms']:.1f}" + (f" ({ratio:.2f})" if ratio is not None else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    if args.csv and result["rows"]:
        write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    if args.markdown and result["rows"]:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(result))
        print(f"wrote {args.markdown}")
    if args.chart:
        draw_chart(result, args.chart, args.chart_mode)
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
