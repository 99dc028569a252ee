"""OpenVINO on the CPU: convert an ONNX export (fp32, or int8 QDQ from `nextvit.quantize`) to
OpenVINO IR, compile it in fp32 or with the bf16 precision hint, run and time it.

bf16 is a compile-time hint, not a file format: the same IR runs in bf16 where the CPU has bf16
units (AVX512-BF16, AMX) and OpenVINO falls back to fp32 elsewhere; `effective_precision` reads
what it chose. An int8 QDQ model keeps its quantization through the conversion.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["PRECISIONS", "require_openvino", "convert_onnx", "save_ir", "compile_model", "effective_precision",
           "run", "latency_ms"]  # fmt: skip

PRECISIONS = ("fp32", "bf16", "int8")


def require_openvino():
    """The `openvino` module, or ModuleNotFoundError with the install line."""
    try:
        import openvino
    except ImportError as err:
        raise ModuleNotFoundError(
            "OpenVINO is not installed: pip install openvino (requirements.txt pins the tested version)"
        ) from err
    return openvino


def convert_onnx(onnx_path: str | os.PathLike):
    """An `openvino.Model` read from an ONNX file."""
    ov = require_openvino()
    return ov.convert_model(str(onnx_path))


def save_ir(model, xml_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<name>.xml` and `<name>.bin` (fp32 weights kept as they are), replacing both together:
    they are written in a temporary folder beside the target and moved in when both are complete."""
    ov = require_openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    bin_path = xml_path.with_suffix(".bin")
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=f".{xml_path.name}.") as tmp:
        tmp_xml = Path(tmp) / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)
        os.replace(tmp_xml, xml_path)
    return xml_path, bin_path


def compile_model(model, precision: str = "fp32", threads: int | None = None):
    """Compile for the CPU, for latency: fp32, or fp32 weights with the bf16 inference hint. An
    int8 QDQ model runs its int8 kernels with either; "int8" means fp32 for the rest of its ops."""
    ov = require_openvino()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if isinstance(model, (str, os.PathLike)):
        model = ov.Core().read_model(str(model))
    return ov.Core().compile_model(model, "CPU", config)


def effective_precision(compiled) -> str:
    """What OpenVINO actually computes in ('f32' or 'bf16'), after its own fallback."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def run(compiled, x: np.ndarray) -> list[np.ndarray]:
    result = compiled(np.ascontiguousarray(x, dtype=np.float32))
    return [np.asarray(result[out]) for out in compiled.outputs]


def latency_ms(compiled, shape: Sequence[int], runs: int = 30, warmup: int = 5) -> float:
    """Median latency of one synchronous call (ms)."""
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer({0: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
