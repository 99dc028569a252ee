"""Static int8 quantization of a Next-ViT: a QDQ ONNX model calibrated on real images.

The folded fp32 ONNX export (`nextvit.export.onnx`) is calibrated with ONNX Runtime on images of an
ImageFolder, through the model's own eval preprocessing (resize to size/crop_pct, bicubic, center
crop, ImageNet mean/std; `preprocess` may return None for an image to skip, as
`nextvit.images.ImageReader` does with `skip_corrupt`), and rewritten with QuantizeLinear/DequantizeLinear
pairs around every Conv, MatMul and Gemm (per-channel int8 weights). The same file runs in ONNX Runtime and OpenVINO
on CPUs and builds an explicitly quantized TensorRT engine (`target="tensorrt"`: symmetric int8).

Activation type on CPUs (the `reduce_range` choice): int8 kernels on x86 multiply uint8 activations
by int8 weights. With VNNI (AVX512-VNNI, AVX-VNNI, AMX) the products accumulate in 32 bits and the
full 8-bit range is safe. Without it (AVX2, AVX-512 without VNNI), the instruction sums pairs of
products in 16 bits with saturation, so 8-bit weights can overflow; 7-bit weights (`reduce_range`)
avoid that at a small cost in precision. `reduce_range=None` decides from this CPU's flags; set it
explicitly when the model is quantized on one machine for another.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import replace_path, staging_folder
from .layer_groups import layer_groups, layer_nodes
from .onnx import onnx_session
from .verify import cosine_per_sample

if TYPE_CHECKING:
    from .source import ExportSource

__all__ = [
    "QuantizeError",
    "CALIBRATION_METHODS",
    "DEFAULT_KEEP_FP32",
    "QUANTIZED_OPS",
    "cpu_has_vnni",
    "quantize_qdq",
    "int8_graph_stats",
    "evaluate_onnx",
    "onnx_latency_ms",
    "quantize_and_check",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# which op types get Q/DQ pairs. "all": every op type ONNX Runtime's QDQ quantizer handles (its
# default), so residual Adds, Concats, pooling and activations stay in int8 between layers;
# "conv-matmul": only the weight layers, so activations return to fp32 around every Add and Concat
# (measured 0.63x of fp32 against 0.45x for "all" on a Xeon with AMX: deployment/README.md).
QUANTIZED_OPS: dict[str, tuple[str, ...] | None] = {"all": None, "conv-matmul": ("Conv", "MatMul", "Gemm")}
# layer groups (nextvit.export.layer_groups) left in fp32 unless asked otherwise: the last stage's
# E-MHSA. On the demo's model (10,000 images, deployment/README.md) keeping it fp32 cut the images on
# which int8 and fp32 disagree from 1.9% to 0.6%; no other group moved that figure by 0.2 points.
DEFAULT_KEEP_FP32 = ("stages.3.e_mhsa",)
# nodes of ONNX Runtime's optimised graph that compute in 8 bits, and those that only move data
_INT8_OPS = ("QGemm", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention")
_LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Slice", "Identity",
               "ReorderInput", "ReorderOutput", "Split", "Expand")  # fmt: skip


class QuantizeError(ValueError):
    """Bad input for quantization (a folder, a flag value); the message names it."""


# --------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------


def cpu_has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


def _require_onnxruntime():
    try:
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            "ONNX Runtime is not installed: pip install onnxruntime (requirements.txt pins the tested version)"
        ) from err
    return onnxruntime


Preprocess = Callable[[Path], "np.ndarray | None"]  # None: an image to skip (unreadable, counted by the caller)


def _calibration_reader(images: Sequence[Path], preprocess: Preprocess, input_name: str, batch: int):
    """ONNX Runtime's feed: batches of exactly `batch` images (the histogram calibrators stack the
    batches' activations and fail on a shorter one), skipped images left out; `used` counts the rest."""
    from onnxruntime.quantization import CalibrationDataReader

    class FolderReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.position, self.used, self.this_pass = 0, 0, 0

        def get_next(self) -> dict | None:
            arrays: list[np.ndarray] = []
            while len(arrays) < batch and self.position < len(images):
                x = preprocess(images[self.position])
                self.position += 1
                if x is not None:
                    arrays.append(x)
            if len(arrays) < batch:
                return None  # the remainder is left out
            self.this_pass += batch
            self.used = max(self.used, self.this_pass)
            return {input_name: np.stack(arrays)}

        def rewind(self) -> None:
            self.position, self.this_pass = 0, 0

    return FolderReader()


def _activation_settings(target: str, reduce_range: bool | None, method: str) -> dict:
    """The activation type, symmetry and weight range for `target` (see the module doc), as keyword
    arguments of ONNX Runtime's `quantize_static` (less the enums, filled in by the caller)."""
    if target == "tensorrt":
        symmetric, reduce_range = True, False
    else:
        symmetric = False
        if reduce_range is None:
            reduce_range = not cpu_has_vnni()
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    return dict(reduce_range=bool(reduce_range), extra_options=extra)


def _check_quantize_args(method: str, target: str, ops: str, calibration_images: Sequence[Path]) -> None:
    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if target not in ("cpu", "tensorrt"):
        raise QuantizeError(f"target must be 'cpu' or 'tensorrt', got {target!r}")
    if ops not in QUANTIZED_OPS:
        raise QuantizeError(f"ops must be one of {tuple(QUANTIZED_OPS)}, got {ops!r}")
    if not calibration_images:
        raise QuantizeError("no calibration images")


def quantize_qdq(
    fp32_onnx: str | os.PathLike,
    output: str | os.PathLike,
    calibration_images: Sequence[Path],
    preprocess: Preprocess,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    target: str = "cpu",
    reduce_range: bool | None = None,
    input_name: str = "input",
    calibration_batch: int = 8,
    ops: str = "all",
    quantize_head: bool = False,
    keep_fp32: Sequence[str] | None = None,
) -> dict:
    """Write a static int8 QDQ model of `fp32_onnx` to `output`; return the settings used.

    `ops` picks the op types to quantize (`QUANTIZED_OPS`): "all" (default, the fast one) or
    "conv-matmul" (only the weight layers, this project's recipe before). The classifier (the
    Gemm or MatMul that writes the model's output) stays fp32 unless `quantize_head`: it is a
    sliver of the compute, and on the demo's model keeping it fp32 took 0.25 points off the top-1
    drop, with either calibration method. `keep_fp32` names more layer groups to leave in fp32
    (`nextvit.export.layer_groups`: `stem`, `stages.0.mhca`, ...); None keeps `DEFAULT_KEEP_FP32`
    (the last stage's E-MHSA) where the graph has it, and () quantizes every group.

    `target="cpu"`: uint8 activations (asymmetric), int8 weights, `reduce_range` from the CPU's
    flags when None (see the module doc). `target="tensorrt"`: int8 activations and weights, both
    symmetric (zero point 0), which is what TensorRT's explicit quantization takes.
    """
    _require_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _check_quantize_args(method, target, ops, calibration_images)
    calibration_batch = max(1, min(calibration_batch, len(calibration_images)))
    settings = _activation_settings(target, reduce_range, method)
    calibrate = getattr(
        CalibrationMethod, {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[method]
    )
    reader = _calibration_reader(list(calibration_images), preprocess, input_name, calibration_batch)
    output = Path(output)
    with staging_folder(output) as tmp:  # written complete beside `output`, then moved onto it
        prepared, quantized = tmp / "prepared.onnx", tmp / output.name
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=False)
        head = [] if quantize_head else _classifier_nodes(prepared)
        if keep_fp32 is None:
            keep_fp32 = [g for g in DEFAULT_KEEP_FP32 if g in layer_groups(prepared)]
        try:
            head += [n for n in layer_nodes(prepared, keep_fp32) if n not in head]
        except ValueError as err:
            raise QuantizeError(str(err)) from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
                quantize_static(
                    str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=calibrate,
                    op_types_to_quantize=list(QUANTIZED_OPS[ops]) if QUANTIZED_OPS[ops] else None,
                    nodes_to_exclude=head, **settings,
                )  # fmt: skip
        finally:
            if reader.used == 0:  # ONNX Runtime's own error for no data says nothing of the images
                raise QuantizeError(f"none of the {len(calibration_images)} calibration images could be read")
        replace_path(quantized, output)
    return dict(
        format="QDQ",
        method=method,
        calibration_images=reader.used,
        per_channel=per_channel,
        target=target,
        activations="int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
        weights="int8 symmetric" + (", 7-bit range" if settings["reduce_range"] else ""),
        reduce_range=settings["reduce_range"],
        cpu_vnni=cpu_has_vnni(),
        quantized_ops=ops,
        fp32_groups=list(keep_fp32),
        fp32_nodes_kept=head,
        quantized_op_types=list(QUANTIZED_OPS[ops] or _registry_op_types()),
    )


def _classifier_nodes(onnx_path: Path) -> list[str]:
    """The Gemm/MatMul nodes that write a graph output directly (the classifier; none for features)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and set(n.output) & outputs]


def _registry_op_types() -> list[str]:
    """The op types ONNX Runtime's QDQ quantizer handles (what `ops="all"` quantizes where present)."""
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(QDQRegistry)


def int8_graph_stats(int8_onnx: str | os.PathLike, threads: int | None = None) -> dict:
    """How ONNX Runtime runs a QDQ model on this CPU: the nodes of its optimised graph (all
    optimisations, as at run time) that compute in int8 (QLinear* and integer kernels), the
    Quantize/DequantizeLinear conversions left between them, data-movement nodes, and the rest,
    which compute in fp32. A recipe whose graph keeps many fp32 nodes between conversions pays for
    the conversions and gains little from int8."""
    import onnx

    ort = _require_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="nextvit-int8-stats-") as folder:
        tmp = Path(folder)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp / "optimized.onnx")
        options.log_severity_level = 3  # its note that the saved graph is specific to this CPU: it is read here only
        if threads:
            options.intra_op_num_threads = threads
        ort.InferenceSession(str(int8_onnx), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(tmp / "optimized.onnx"), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    groups = {"int8": 0, "conversions": 0, "layout": 0, "fp32": 0}
    for op, n in counts.items():
        if op.startswith("QLinear") or op in _INT8_OPS:
            groups["int8"] += n
        elif op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
            groups["conversions"] += n
        elif op in _LAYOUT_OPS:
            groups["layout"] += n
        else:
            groups["fp32"] += n
    return dict(
        runtime="onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL",
        nodes=sum(counts.values()),
        int8_nodes=groups["int8"],
        fp32_nodes=groups["fp32"],
        conversion_nodes=groups["conversions"],
        layout_nodes=groups["layout"],
        op_types=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


# --------------------------------------------------------------------------------------------
# Evaluation and latency
# --------------------------------------------------------------------------------------------


def evaluate_onnx(
    fp32_onnx: str | os.PathLike,
    int8_onnx: str | os.PathLike,
    samples: Sequence[tuple[Path, int]],
    preprocess: Preprocess,
    *,
    input_name: str = "input",
    batch: int = 16,
) -> dict:
    """Top-1 of both models on labelled images, how often they agree and how close their logits
    are, with 95% intervals: the drop is a paired difference on the same images, the agreement a
    Wilson interval. With n images one image is 100/n points, so 300 images cannot see a 0.5-point
    drop; about 2,000 or more are needed for the interval to be that narrow. Images that
    `preprocess` skips (None) are left out of every figure and counted in `skipped`."""
    from .verify import paired_difference_interval, wilson_interval

    fp32, int8 = onnx_session(fp32_onnx), onnx_session(int8_onnx)
    logits: dict[str, list] = {"fp32": [], "int8": []}
    labels_kept: list[int] = []
    for start in range(0, len(samples), batch):
        loaded = [(preprocess(p), label) for p, label in samples[start : start + batch]]
        loaded = [(x, label) for x, label in loaded if x is not None]
        if not loaded:
            continue
        x = np.stack([x for x, _ in loaded])
        labels_kept += [label for _, label in loaded]
        logits["fp32"].append(fp32.run(None, {input_name: x})[0])
        logits["int8"].append(int8.run(None, {input_name: x})[0])
    if not labels_kept:
        raise QuantizeError(f"none of the {len(samples)} evaluation images could be read")
    a, b = np.concatenate(logits["fp32"]), np.concatenate(logits["int8"])
    labels = np.array(labels_kept)
    cosine = cosine_per_sample(b, a)
    right_fp32, right_int8 = a.argmax(1) == labels, b.argmax(1) == labels
    agree = int((a.argmax(1) == b.argmax(1)).sum())
    drop = paired_difference_interval(right_fp32, right_int8)
    low, high = wilson_interval(agree, len(labels))
    return dict(
        images=len(labels),
        skipped=len(samples) - len(labels),
        top1_fp32=round(float(right_fp32.mean() * 100), 3),
        top1_int8=round(float(right_int8.mean() * 100), 3),
        top1_drop=drop["difference"],
        top1_drop_interval95=drop["interval95"],
        one_image_points=drop["one_image_points"],
        top1_agreement=round(agree / len(labels) * 100, 3),
        top1_agreement_interval95=[round(low, 3), round(high, 3)],
        logit_cosine_mean=round(float(cosine.mean()), 6),
        logit_cosine_min=round(float(cosine.min()), 6),
    )


def onnx_latency_ms(path: str | os.PathLike, shape: Sequence[int], *, runs: int = 30, warmup: int = 5,
                    threads: int | None = None, input_name: str = "input") -> float:  # fmt: skip
    """Median latency of one ONNX Runtime call on the CPU (ms), after `warmup` calls."""
    session = onnx_session(path, threads)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {input_name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {input_name: x})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3) if times else math.nan


def quantize_and_check(
    source: ExportSource,
    output: str | os.PathLike,
    calibration_images: Sequence[Path],
    preprocess: Preprocess,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    target: str = "cpu",
    reduce_range: bool | None = None,
    ops: str = "all",
    quantize_head: bool = False,
    keep_fp32: Sequence[str] | None = None,
    eval_samples: Sequence[tuple[Path, int]] | None = None,
    max_drop: float = 0.5,
    latency_runs: int = 30,
    record_extra: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """The whole static int8 path: export `source` to fp32 ONNX (checked), calibrate and quantize it,
    compare the int8 outputs with PyTorch (logit cosine), evaluate fp32 and int8 top-1 on
    `eval_samples` when given, time both in ONNX Runtime, and move the int8 file onto `output`.

    Returns the sidecar record (not written). Raises `ExportError` (check failed) and writes
    nothing when the fp32 export does not match PyTorch or int8 loses more than `max_drop` points.
    """
    from ..files import sha256_file
    from .record import provenance, source_record

    output = Path(output)
    with staging_folder(output) as tmp:
        fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
        checked_fp32_export(source, fp32)
        log(f"calibrating on up to {len(calibration_images)} images ({method}, target {target})")
        settings = quantize_qdq(
            fp32, int8, calibration_images, preprocess, method=method, per_channel=per_channel, target=target,
            reduce_range=reduce_range, input_name=source.input_name, ops=ops, quantize_head=quantize_head,
            keep_fp32=keep_fp32,
        )  # fmt: skip
        record: dict = dict(
            format="onnx-qdq-int8",
            output=output.name,
            **source_record(source),
            quantization=dict(**settings, **(record_extra or {})),
            check=_int8_against_pytorch(source, int8, log),
            int8_graph=_int8_graph(int8, log),
        )
        if eval_samples is not None:
            record["accuracy"] = _gated_accuracy(fp32, int8, eval_samples, preprocess, source, max_drop, log)
        if latency_runs > 0:
            record["latency"] = _fp32_and_int8_latency(fp32, int8, source, latency_runs, log)
        replace_path(int8, output)
    record.update(output_sha256=sha256_file(output), **provenance())
    return record


def checked_fp32_export(source: ExportSource, fp32: Path) -> None:
    """Step 1: the folded fp32 ONNX model (dynamic batch), refused when it does not match PyTorch."""
    from .errors import ExportError
    from .onnx import DEFAULT_OPSET, export_and_check_onnx

    record = export_and_check_onnx(
        source, fp32, opset=DEFAULT_OPSET, dynamic_batch=True, atol=1e-4, rtol=1e-4, log=lambda m: None
    )
    if not record["check"]["passed"]:
        raise ExportError(
            f"the fp32 export differs from PyTorch ({record['check']['max_abs_diff']:.3g}); nothing was written"
        )


def _int8_against_pytorch(source: ExportSource, int8: Path, log: Callable[[str], None]) -> dict:
    """Step 3: the int8 model's logits against the PyTorch model's on random images (cosine)."""
    from .verify import compare_cosine

    x = source.example_input(batch=4, seed=1)
    got = onnx_session(int8).run(None, {source.input_name: x.numpy()})
    check = dict(
        runtime="onnxruntime (CPUExecutionProvider)",
        reference="the PyTorch eval-mode model as loaded, float32",
        input="normalised uniform random pixels, seed 1, batch 4",
        **compare_cosine(got, source.reference_outputs(x), None),
    )
    log(f"int8 vs PyTorch fp32 on random images: logit cosine {check['cosine_min']:.5f} (min)")
    return check


def _int8_graph(int8: Path, log: Callable[[str], None]) -> dict:
    """Step 4: what of ONNX Runtime's optimised graph computes in int8 here."""
    import torch

    stats = int8_graph_stats(int8, threads=torch.get_num_threads())
    log(f"ONNX Runtime's optimised int8 graph: {stats['int8_nodes']} int8 nodes, {stats['fp32_nodes']} fp32, "
        f"{stats['conversion_nodes']} quantize/dequantize, {stats['layout_nodes']} data movement")  # fmt: skip
    return stats


def _gated_accuracy(fp32, int8, samples, preprocess: Preprocess, source, max_drop: float, log) -> dict:
    """Step 5: fp32 and int8 top-1 on labelled images; `ExportError` when int8 loses more than `max_drop`."""
    from .errors import EXIT_CHECK_FAILED, ExportError

    log(f"evaluating fp32 and int8 on {len(samples)} images")
    accuracy = evaluate_onnx(fp32, int8, samples, preprocess, input_name=source.input_name)
    accuracy.update(max_drop=max_drop)
    lo, hi = accuracy["top1_drop_interval95"]
    alo, ahi = accuracy["top1_agreement_interval95"]
    log(
        f"top-1 fp32 {accuracy['top1_fp32']:.2f}%  int8 {accuracy['top1_int8']:.2f}%  "
        f"drop {accuracy['top1_drop']:.2f} points (95% interval {lo:.2f} to {hi:.2f})  "
        f"agreement {accuracy['top1_agreement']:.2f}% ({alo:.2f}-{ahi:.2f})  "
        f"logit cosine {accuracy['logit_cosine_mean']:.5f}  [{accuracy['images']} images, "
        f"one image = {accuracy['one_image_points']:.2f} points]"
    )
    half_width = (hi - lo) / 2
    if max_drop > 0 and half_width > max_drop / 2:
        log(f"note: the drop's 95% interval is +-{half_width:.2f} points, more than half the {max_drop}-point gate, "
            "which then passes or fails on the sample as much as on the model: evaluate on more images")  # fmt: skip
    if accuracy["top1_drop"] > max_drop:
        raise ExportError(
            f"int8 loses {accuracy['top1_drop']:.2f} points of top-1, more than the {max_drop} allowed; "
            "nothing was written",
            EXIT_CHECK_FAILED,
            param="max_drop",
        )
    return accuracy


def _fp32_and_int8_latency(fp32: Path, int8: Path, source, runs: int, log) -> dict:
    """Step 6: median batch-1 latency of both models in ONNX Runtime on this CPU."""
    import torch

    shape = (1, *source.input_shape[1:])
    threads = torch.get_num_threads()
    fp32_ms = onnx_latency_ms(fp32, shape, runs=runs, threads=threads)
    int8_ms = onnx_latency_ms(int8, shape, runs=runs, threads=threads)
    log(f"ONNX Runtime batch 1, {threads} threads: fp32 {fp32_ms:.2f} ms, int8 {int8_ms:.2f} ms "
        f"({int8_ms / fp32_ms:.2f}x)")  # fmt: skip
    return dict(
        runtime="onnxruntime CPUExecutionProvider", batch=1, threads=threads, runs=runs, warmup=5,
        statistic="median", fp32_ms=round(fp32_ms, 3), int8_ms=round(int8_ms, 3),
        int8_over_fp32=round(int8_ms / fp32_ms, 3),
    )  # fmt: skip
