"""What a benchmark times: one model in one mode (eager, folded, compiled, ONNX Runtime, OpenVINO,
TensorRT) and dtype, as a callable with its input.

Models are this package's (`nextvit_small`, ...) or timm's (`timm:<name>`, random weights). The ONNX
files come from the deployment exporters (`nextvit.export`), made once per model and input shape.
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
    "combination_exists",
    "Timed",
    "base_name",
    "build_model",
    "fold",
    "flops_or_zero",
    "onnx_artifacts",
    "tensorrt_unavailable",
    "make_timed",
]

# the modes that run an ONNX export of the folded model (`onnx_artifacts`), int8 ones quantized
ONNX_MODES = ("onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8")
MODES = ("eager", "folded", "folded_cl", "compile", *ONNX_MODES, "tensorrt")
DEFAULT_MODES = ("eager", "folded", "folded_cl", "compile", "onnxruntime")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


class Timed:
    """A callable under test plus its input, timed one call at a time."""

    def __init__(self, name: str, fn: Callable, x, sync: Callable[[], None] | None = None) -> None:
        self.name, self.fn, self.x, self.sync = name, fn, x, sync
        self.times: list[float] = []
        self.cosine: float | None = None  # the output check (`output_cosine`), once made

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


def _torch_fn(model, x, channels_last=False, compile_model=False):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_model:  # weights frozen into the graph as constants, for this compile only
        model = torch.compile(model, options={"freezing": True})

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
    if mode not in ONNX_MODES:
        return {}
    tag = f"{spec.replace(':', '_')}_{x.shape[0]}x{x.shape[2]}x{x.shape[3]}"
    files = {"fp32": workdir / f"{tag}.onnx"}
    if not files["fp32"].exists():
        _export_onnx(fold(spec, model), x, files["fp32"])
    if mode.endswith("_int8"):
        from nextvit.export.quantize import quantize_qdq

        files["int8"] = workdir / f"{tag}_int8.onnx"
        if not files["int8"].exists():
            gen = torch.Generator().manual_seed(0)
            calib = [torch.randn(x.shape[1:], generator=gen).clamp_(-2.2, 2.7).numpy() for _ in range(2 * x.shape[0])]
            quantize_qdq(files["fp32"], files["int8"], calib, lambda a: a, calibration_batch=x.shape[0])
    return files


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


def make_timed(spec: str, model, mode: str, dtype: str, x: torch.Tensor, workdir: Path, device: str) -> Timed | None:
    """One model in one mode, ready to time; None where the combination does not exist."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    tag = spec.replace(":", "_")
    if not combination_exists(mode, dtype):
        return None
    if mode in ONNX_MODES:
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
