"""OpenVINO on the CPU: convert an ONNX export (fp32, or int8 QDQ from `nextvit.export.quantize`) to
OpenVINO IR, compile it in fp32 or with the bf16 precision hint, run and time it.

bf16 is a compile-time hint, not a file format: the same IR runs in bf16 where the CPU has bf16
units (AVX512-BF16, AMX) and OpenVINO falls back to fp32 elsewhere; `effective_precision` reads
what it chose. An int8 QDQ model keeps its quantization through the conversion.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..files import replace_path, sha256_file, staging_folder
from .errors import EXIT_USAGE, ExportError
from .record import provenance, source_record
from .source import ExportSource
from .verify import compare, compare_cosine

__all__ = ["PRECISIONS", "require_openvino", "convert_onnx", "save_ir", "compile_model", "effective_precision",
           "run", "latency_ms", "export_and_check_openvino"]  # fmt: skip

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
    bin_path = xml_path.with_suffix(".bin")
    with staging_folder(xml_path) as tmp:
        tmp_xml = tmp / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        replace_path(tmp_xml.with_suffix(".bin"), bin_path)
        replace_path(tmp_xml, xml_path)
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


def export_and_check_openvino(
    source: ExportSource,
    output: str | os.PathLike,
    *,
    precision: str = "fp32",
    onnx_path: str | os.PathLike | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float = 0.99,
    latency_runs: int = 30,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Convert `source` (through a fresh folded fp32 ONNX export, or `onnx_path`, e.g. an int8 QDQ
    model) to IR at `output` (.xml + .bin), compile it in `precision`, check it against PyTorch
    (fp32: within atol + rtol * max|reference|, default 1e-4 each; bf16/int8: the logits' cosine),
    and time it at batch 1. Returns the sidecar record (not written)."""
    from .onnx import DEFAULT_OPSET, export_and_check_onnx

    output = Path(output)
    if output.suffix != ".xml":
        raise ExportError(
            "OpenVINO IR is an .xml file (with a .bin beside it)", EXIT_USAGE, param="output", value=str(output)
        )
    if precision == "int8" and onnx_path is None:
        raise ExportError("int8 converts a QDQ ONNX model (from quantize): give it", EXIT_USAGE, param="onnx")
    with staging_folder(output) as tmp:
        converted = onnx_path
        if converted is None:
            converted = tmp / "fp32.onnx"
            export_and_check_onnx(source, converted, opset=DEFAULT_OPSET, dynamic_batch=True, log=lambda m: None)
        save_ir(convert_onnx(converted), output)

    threads = threads or torch.get_num_threads()
    compiled = compile_model(output, precision, threads)
    x = source.example_input()
    outputs = run(compiled, x.numpy())
    refs = source.reference_outputs(x)
    if precision == "fp32":
        atol = 1e-4 if atol is None else atol
        rtol = 1e-4 if rtol is None else rtol
        check = dict(kind="max difference", **compare(outputs, refs, atol, rtol))
    else:
        check = compare_cosine(outputs, refs, min_cosine)
    check.update(runtime="openvino CPU", reference="the PyTorch eval-mode model as loaded, float32",
                 effective_precision=effective_precision(compiled))  # fmt: skip
    record = dict(
        format="openvino-ir",
        output=output.name,
        weights=output.with_suffix(".bin").name,
        output_sha256=sha256_file(output),
        precision=precision,
        converted_from=str(onnx_path) if onnx_path else "folded fp32 ONNX export (opset 17, dynamic batch)",
        **source_record(source),
        check=check,
        **provenance(["openvino"]),
    )
    if latency_runs > 0:
        ms = latency_ms(compiled, (1, *source.input_shape[1:]), runs=latency_runs)
        record["latency"] = dict(batch=1, threads=threads, runs=latency_runs, warmup=5, statistic="median",
                                 ms=round(ms, 3))  # fmt: skip
        log(f"OpenVINO {precision} (computes in {check['effective_precision']}), batch 1, {threads} threads: "
            f"{ms:.2f} ms")  # fmt: skip
    return record
