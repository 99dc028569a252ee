"""What a benchmark times: one model in one mode (eager, folded, compiled, CUDA graph, AOTInductor,
ONNX Runtime, OpenVINO, TensorRT) and dtype, as a callable with its input.

Models are this package's (`nextvit_small`, ...) or timm's (`timm:<name>`, random weights). The ONNX
files and `.pt2` packages come from the deployment exporters (`nextvit.export`), made once per
model and input shape.

On a GPU a small batch is bound by kernel launches in eager PyTorch (Next-ViT-S, batch 8: about
10 ms eager, 1.1-1.5 ms as one CUDA graph on an H200), so the CUDA modes that matter for deployment
remove them: `cudagraph` (the folded model captured once and replayed) and `compile` (inductor, with
its CUDA-graph replay).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..factory import create_model
from ..flops import count_flops
from ..folding import fold_batchnorm

__all__ = [
    "MODES",
    "ONNX_MODES",
    "DEFAULT_MODES",
    "DTYPES",
    "CUDA_ONLY_MODES",
    "COMPILE_MODES",
    "DEFAULT_COMPILE_MODE",
    "combination_exists",
    "mode_unavailable",
    "Timed",
    "cuda_graph_replay",
    "aoti_artifact",
    "base_name",
    "build_model",
    "fold",
    "flops_or_zero",
    "onnx_artifacts",
    "INT8_MODES",
    "tensorrt_unavailable",
    "make_timed",
    "prepare_timed",
]

# the modes that run an ONNX export of the folded model (`onnx_artifacts`), int8 ones quantized
# int8 modes, with the layer groups their model keeps in fp32: the quantizer's default recipe
# (None: DEFAULT_KEEP_FP32), or every group in int8 ("_full", to see what the default costs)
INT8_MODES: dict[str, tuple[str, ...] | None] = {
    "onnxruntime_int8": None, "onnxruntime_int8_full": (), "openvino_int8": None, "openvino_int8_full": (),
}  # fmt: skip
ONNX_MODES = ("onnxruntime", "openvino", *INT8_MODES)
MODES = ("eager", "folded", "folded_cl", "compile", "cudagraph", "aoti", *ONNX_MODES, "tensorrt")
DEFAULT_MODES = ("eager", "folded", "folded_cl", "compile", "onnxruntime")
CUDA_ONLY_MODES = ("cudagraph",)  # and tensorrt, skipped with its reason (`tensorrt_unavailable`)
# the modes PyTorch itself runs on the GPU: timed by CUDA events on the current stream
EVENT_TIMED_MODES = ("eager", "folded", "folded_cl", "compile", "cudagraph", "aoti")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AOTI_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

# `compile` on CUDA: inductor's options per torch.compile mode name. "reduce-overhead" replays the
# compiled graph as a CUDA graph (inductor's default kernels: 1.12 ms for Next-ViT-S fp16 batch 8 on an
# H200, against 6.98 ms compiled without graph replay); "max-autotune" also searches kernel
# configurations (minutes of compilation per model and shape). Freezing (weights as constants) is
# added to each. On the CPU `compile` is inductor with freezing alone.
COMPILE_MODES = {
    "reduce-overhead": {"triton.cudagraphs": True},
    "max-autotune": {"max_autotune": True, "triton.cudagraphs": True},
    "default": {},
}
DEFAULT_COMPILE_MODE = "reduce-overhead"


def combination_exists(mode: str, dtype: str) -> bool:
    """ONNX Runtime and the int8 modes take float32 inputs; OpenVINO runs float32 or bfloat16;
    TensorRT builds float32 or float16 engines."""
    if mode == "openvino":
        return dtype in ("float32", "bfloat16")
    if mode in ONNX_MODES:
        return dtype == "float32"
    if mode == "tensorrt":
        return dtype != "bfloat16"
    return True


def mode_unavailable(mode: str, device: str) -> str | None:
    """Why `mode` cannot run on `device` at all, or None."""
    if mode in CUDA_ONLY_MODES and device != "cuda":
        return f"{mode} runs on a CUDA GPU (--device cuda)"
    if mode.startswith("openvino") and device != "cpu":
        return "OpenVINO is timed on the CPU only"
    return None


class Timed:
    """A callable under test plus its input, timed one call at a time.

    With `cuda_events` a call is timed by CUDA events recorded around it on the current stream (the
    GPU's time from the first launch to the last kernel's end, launch gaps included), otherwise by the
    wall clock up to `sync()`. `prepare_s` is the time spent before timing (building, exporting,
    compiling, capturing, warming up), reported apart from the latency."""

    def __init__(self, name: str, fn: Callable, x, sync: Callable[[], None] | None = None,
                 cuda_events: bool = False) -> None:  # fmt: skip
        self.name, self.fn, self.x, self.sync = name, fn, x, sync
        self.cuda_events = cuda_events
        self.times: list[float] = []
        self.cosine: float | None = None  # the output check (`output_cosine`), once made
        self.prepare_s: float | None = None
        self.note: str | None = None  # what the mode did differently here (e.g. no graph capture)

    def warm(self, n: int) -> None:
        for _ in range(n):
            self.fn(self.x)
        if self.sync:
            self.sync()

    def time_once(self) -> None:
        if self.cuda_events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.fn(self.x)
            end.record()
            end.synchronize()
            self.times.append(start.elapsed_time(end) / 1e3)
            return
        start = time.perf_counter()
        self.fn(self.x)
        if self.sync:
            self.sync()
        self.times.append(time.perf_counter() - start)

    def summary(self) -> dict:
        ms = sorted(t * 1e3 for t in self.times)
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        return dict(
            median_ms=round(statistics.median(ms), 4),
            p25_ms=round(q[0], 4),
            p75_ms=round(q[2], 4),
            min_ms=round(ms[0], 4),
            runs=len(ms),
            clock="cuda events" if self.cuda_events else "wall",
            prepare_s=None if self.prepare_s is None else round(self.prepare_s, 2),
            note=self.note,
            output_cosine=None if self.cosine is None else round(self.cosine, 6),
        )


def base_name(spec: str) -> str:
    """`nextvit_small` from `timm:nextvit_small`."""
    return spec.split(":", 1)[-1]


def build_model(spec: str, shared_state: dict | None = None) -> torch.nn.Module:
    """`nextvit_*` (this package) or `timm:<name>` (random weights; nextvit ones share ours).

    The weights are drawn from seed 0, the same in every process; the caller's random state is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if not spec.startswith("timm:"):
            return create_model(spec).eval()
        import timm

        model = timm.create_model(spec[len("timm:") :], pretrained=False).eval()
    if shared_state is not None:
        model.load_state_dict(shared_state)
    return model


def fold(spec: str, model: torch.nn.Module) -> torch.nn.Module:
    """The deployable form: ours folded by `fold_batchnorm`, timm's by its own `reparameterize_model`."""
    if not spec.startswith("timm:"):
        return fold_batchnorm(model)
    from timm.utils.model import reparameterize_model

    return reparameterize_model(copy.deepcopy(model))


def _torch_fn(model, x, channels_last=False, compile_model=False, compile_options: dict | None = None):
    """Eager or compiled PyTorch. `compile_options` are inductor's (on top of freezing, which puts the
    weights into the graph as constants for this compile only); with "triton.cudagraphs" each call
    marks a new step, so the replayed graph may reuse the last call's output memory."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    graphs = False
    if compile_model:
        options = {"freezing": True, **(compile_options or {})}
        graphs = bool(options.get("triton.cudagraphs"))
        model = torch.compile(model, options=options)

    def run(inp):
        with torch.inference_mode() if not compile_model else torch.no_grad():
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            return model(inp)

    return run, x


def cuda_graph_replay(fn: Callable, x: torch.Tensor, warmup: int = 3) -> Callable:
    """`fn` on a static copy of `x`, captured once as a CUDA graph and replayed.

    Each call copies its input into the static buffer (as serving code would copy a new batch) and
    replays the graph; it returns the static output, overwritten by the next call. Warm-up runs on a
    side stream first (cuDNN picks its algorithms and the allocator fills there, not in the graph)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(warmup):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = fn(static_x)

    def run(inp):
        static_x.copy_(inp)
        graph.replay()
        return static_out

    return run


def _cudagraph_fn(model, x):
    """The folded model in channels_last, captured once as a CUDA graph (`cuda_graph_replay`)."""
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    return cuda_graph_replay(model, x), x


def aoti_artifact(spec: str, model, dtype: str, x: torch.Tensor, workdir: Path, device: str) -> Path:
    """The `.pt2` package of the folded model that deployment/export_aoti.py would write (float32
    interface, computing in `dtype`, static batch), made once per model, shape, dtype and device."""
    from ..export.aoti import CastedModel, compile_package, export_program

    tag = f"{spec.replace(':', '_')}_{x.shape[0]}x{x.shape[2]}x{x.shape[3]}_{device}_{AOTI_DTYPE_NAMES[dtype]}"
    path = workdir / f"{tag}.pt2"
    if not path.exists():
        module = CastedModel(fold(spec, model), DTYPES[dtype]).to(device).eval()
        compile_package(export_program(module, x.to(device), dynamic_batch=False), path)
    return path


def _aoti_fn(path: Path, x: torch.Tensor, device: str):
    """A `.pt2` package as a user loads it; on CUDA its calls are captured as a CUDA graph too (the
    package is loaded for single-threaded use, which allows it), or run as they are where capture fails."""
    runner = torch._inductor.aoti_load_package(str(path), run_single_threaded=device == "cuda")
    inp = x.to(device)
    if device != "cuda":
        return runner, inp, None
    try:
        return cuda_graph_replay(runner, inp), inp, "package calls replayed as a CUDA graph"
    except Exception as err:  # noqa: BLE001 - timed without graph replay instead, and said so
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
        torch.cuda.synchronize()
        runner = torch._inductor.aoti_load_package(str(path))
        return runner, inp, f"no CUDA graph ({why})"


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
    if mode not in ONNX_MODES:
        return {}
    tag = f"{spec.replace(':', '_')}_{x.shape[0]}x{x.shape[2]}x{x.shape[3]}"
    files = {"fp32": workdir / f"{tag}.onnx"}
    if not files["fp32"].exists():
        _export_onnx(fold(spec, model), x, files["fp32"])
    if mode in INT8_MODES:
        from nextvit.export.quantize import quantize_qdq

        key = int8_artifact(mode)
        files[key] = workdir / f"{tag}_{key}.onnx"
        if not files[key].exists():
            gen = torch.Generator().manual_seed(0)
            calib = [torch.randn(x.shape[1:], generator=gen).clamp_(-2.2, 2.7).numpy() for _ in range(2 * x.shape[0])]
            quantize_qdq(files["fp32"], files[key], calib, lambda a: a, calibration_batch=x.shape[0],
                         keep_fp32=INT8_MODES[mode])  # fmt: skip
    return files


def int8_artifact(mode: str) -> str:
    """Which of `onnx_artifacts`' files an ONNX mode runs: fp32, int8 (the default recipe) or int8_full."""
    if mode not in INT8_MODES:
        return "fp32"
    return "int8_full" if mode.endswith("_full") else "int8"


def _export_onnx(module: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """The deployment scripts' ONNX export (TorchScript exporter, opset 17), of any module (timm's too)."""
    from nextvit.export import DEFAULT_OPSET, export_onnx
    from nextvit.files import atomic_write_bytes

    atomic_write_bytes(path, export_onnx(module, x, opset=DEFAULT_OPSET).SerializeToString())


def _onnxruntime_fn(path: Path, x: torch.Tensor, device: str):
    from nextvit.export import onnx_session

    session = onnx_session(path, torch.get_num_threads(), device)
    inp = x.to(device).contiguous()  # kept alive by the Timed that holds it: the binding points into it
    return ort_bound_run(session, inp), inp


def _openvino_fn(path: Path, x: torch.Tensor, precision: str):
    from nextvit.export.openvino import compile_model

    compiled = compile_model(path, precision, torch.get_num_threads())
    request = compiled.create_infer_request()
    inp = x.numpy()
    return (lambda _: request.infer({0: inp})), inp


def tensorrt_unavailable(device: str) -> str | None:
    """Why TensorRT cannot be timed in this run, or None when it can."""
    from ..export.tensorrt import tensorrt_module

    if device != "cuda":
        return "TensorRT runs on the GPU (device cuda)"
    if tensorrt_module() is None:
        return "the tensorrt Python package is not installed (or does not import)"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _tensorrt_fn(model, x, workdir: Path, tag: str, fp16: bool):
    """An engine built as export_tensorrt_engine.py builds it (nextvit.export.tensorrt), run on its CUDA buffers."""
    import tensorrt as trt

    from nextvit.export.tensorrt import EngineRunner, build_engine_python

    onnx_path, engine_path = workdir / f"{tag}.onnx", workdir / f"{tag}.engine"
    _export_onnx(model, x, onnx_path)
    build_engine_python(trt, onnx_path, engine_path, "fp16" if fp16 else "fp32", tuple(x.shape), None)
    runner = EngineRunner(trt, engine_path, tuple(x.shape))
    runner.buffers[runner.inputs[0]].copy_(x)
    return (lambda _: runner.run_async()), None


def make_timed(spec: str, model, mode: str, dtype: str, x: torch.Tensor, workdir: Path, device: str,
               compile_mode: str = DEFAULT_COMPILE_MODE) -> Timed | None:  # fmt: skip
    """One model in one mode, ready to time; None where the combination does not exist."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    events = device == "cuda" and mode in EVENT_TIMED_MODES
    tag = spec.replace(":", "_")
    if not combination_exists(mode, dtype):
        return None
    why = mode_unavailable(mode, device)
    if why:
        raise RuntimeError(why)
    if mode == "aoti":  # the package takes float32 whatever it computes in
        path = aoti_artifact(spec, model, dtype, x, workdir, device)
        fn, inp, note = _aoti_fn(path, x, device)
        timed = Timed(spec, fn, inp, sync=sync, cuda_events=events)
        timed.note = note
        return timed
    if mode in ONNX_MODES:
        files = onnx_artifacts(spec, model, mode, x, workdir)
        path = files[int8_artifact(mode)]
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
    inp = x.to(device=device, dtype=DTYPES[dtype])
    if mode == "cudagraph":
        fn, inp = _cudagraph_fn(net, inp)
        return Timed(spec, fn, inp, sync=sync, cuda_events=events)
    on_gpu = device == "cuda"  # compiled on channels_last there, with inductor's options of `compile_mode`
    kwargs = dict(channels_last=mode == "folded_cl" or (mode == "compile" and on_gpu), compile_model=mode == "compile",
                  compile_options=COMPILE_MODES[compile_mode] if on_gpu else None)  # fmt: skip
    fn, inp = _torch_fn(net, inp, **kwargs)
    return Timed(spec, fn, inp, sync=sync, cuda_events=events)


def prepare_timed(spec: str, model, mode: str, dtype: str, x: torch.Tensor, workdir: Path, device: str,
                  warmup: int, compile_mode: str = DEFAULT_COMPILE_MODE) -> Timed:  # fmt: skip
    """`make_timed`, warmed up (compiled modes a few calls more: inductor's graph replay records on its
    second and third calls), with the time that took (`prepare_s`) and its output check."""
    started = time.perf_counter()
    timed = make_timed(spec, model, mode, dtype, x, workdir, device, compile_mode)
    timed.warm(1 + warmup + (2 if mode == "compile" else 0))
    timed.prepare_s = time.perf_counter() - started
    timed.cosine = output_cosine(timed, model, x)
    return timed


def _as_array(output):
    """A runtime's first output as a float64 numpy array; None where it stays on the device (TensorRT)."""
    import numpy as np

    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu().numpy().astype(np.float64)
    if isinstance(output, (list, tuple)):  # ONNX Runtime's OrtValues
        first = output[0]
        return np.asarray(first.numpy() if hasattr(first, "numpy") else first, dtype=np.float64)
    if hasattr(output, "values"):  # OpenVINO's result, by output port
        return np.asarray(next(iter(output.values())), dtype=np.float64)
    return None


def output_cosine(timed: Timed, model: torch.nn.Module, x: torch.Tensor) -> float | None:
    """The output check of a timed entry: the smallest per-sample cosine between what it computes on
    its input and the eager float32 `model` (the same weights) on the same input `x`. None where
    the output cannot be read back."""
    import numpy as np

    got = _as_array(timed.fn(timed.x))
    if got is None:
        return None
    with torch.inference_mode():
        ref = model.eval()(x.float().cpu()).double().numpy()
    got, ref = got.reshape(len(ref), -1), ref.reshape(len(ref), -1)
    cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
    return float(cos.min())


def flops_or_zero(model: torch.nn.Module, size: int) -> float:
    """FLOPs at `size`, or 0 for a model that cannot take that size (its timing then reports why)."""
    try:
        return count_flops(model, size)
    except Exception:  # noqa: BLE001
        return 0.0
