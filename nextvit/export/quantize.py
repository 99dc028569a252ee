"""Static int8 quantization of a Next-ViT: a QDQ ONNX model calibrated on real images.

The folded fp32 ONNX export (`nextvit.export.onnx`) is calibrated with ONNX Runtime on images of an
ImageFolder, through the model's own eval preprocessing (resize to size/crop_pct, bicubic, center
crop, ImageNet mean/std), and rewritten with QuantizeLinear/DequantizeLinear pairs around every
Conv, MatMul and Gemm (per-channel int8 weights). The same file runs in ONNX Runtime and OpenVINO
on CPUs and builds an explicitly quantized TensorRT engine (`target="tensorrt"`: symmetric int8).

Activation type on CPUs (the `reduce_range` choice): int8 kernels on x86 multiply uint8 activations
by int8 weights. With VNNI (AVX512-VNNI, AVX-VNNI, AMX) the products accumulate in 32 bits and the
full 8-bit range is safe. Without it (AVX2, AVX-512 without VNNI), the instruction sums pairs of
products in 16 bits with saturation, so 8-bit weights can overflow; 7-bit weights (`reduce_range`)
avoid that at a small cost in precision. `reduce_range=None` decides from this CPU's flags; set it
explicitly when the model is quantized on one machine for another.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import replace_path, staging_folder
from .onnx import onnx_session
from .verify import cosine_per_sample

if TYPE_CHECKING:
    from .source import ExportSource

__all__ = [
    "QuantizeError",
    "CALIBRATION_METHODS",
    "EvalPreprocess",
    "find_images",
    "labelled_images",
    "cpu_has_vnni",
    "quantize_qdq",
    "evaluate_onnx",
    "onnx_latency_ms",
    "quantize_and_check",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class QuantizeError(ValueError):
    """Bad input for quantization (a folder, a flag value); the message names it."""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPreprocess:
    """The classifier's eval preprocessing: what a calibration image must go through too."""

    size: int
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        """(3, size, size) float32 array for one image file."""
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            short = int(self.size / self.crop_pct)
            scale = short / min(w, h)
            img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = int(round((w - self.size) / 2)), int(round((h - self.size) / 2))
            img = img.crop((left, top, left + self.size, top + self.size))
            pixels = np.asarray(img, dtype=np.float32) / 255.0
        pixels = (pixels - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: str | os.PathLike, limit: int | None = None, seed: int = 0, flag: str = "folder") -> list[Path]:
    """Up to `limit` images under `folder` (recursively), spread over its subfolders (classes):
    one from each in turn, in a seeded random order inside each, so a small sample covers them all."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{flag} {folder}: no such folder")
    groups: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if _is_image(path):
            groups.setdefault(path.parent, []).append(path)
    if not groups:
        raise QuantizeError(f"{flag} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    rng = random.Random(seed)
    for files in groups.values():
        rng.shuffle(files)
    picked: list[Path] = []
    queues = list(groups.values())
    depth = 0
    while queues and (limit is None or len(picked) < limit):
        queues = [q for q in queues if len(q) > depth]
        for q in queues:
            if limit is not None and len(picked) >= limit:
                break
            picked.append(q[depth])
        depth += 1
    return picked


def labelled_images(
    folder: str | os.PathLike, num_classes: int, class_names: Sequence[str] | None = None, flag: str = "folder"
) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image, class index) pairs of an ImageFolder (`folder/<class>/<image>`), checked against the
    classifier: as many class folders as it has outputs, with its class names when they are known."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{flag} {folder}: no such folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise QuantizeError(f"{flag} {folder} has no class folders (expected {folder}/<class>/<image>)")
    if len(classes) != num_classes:
        raise QuantizeError(
            f"{flag} {folder} has {len(classes)} class folders but the checkpoint's classifier has {num_classes} "
            "outputs: evaluate on the validation folder of the data the model was trained on"
        )
    if class_names is not None and list(class_names) != classes:
        differ = [f"{a}/{b}" for a, b in zip(class_names, classes) if a != b][:5]
        raise QuantizeError(
            f"{flag} {folder}: its class folders differ from the checkpoint's classes (checkpoint/folder: "
            f"{', '.join(differ)})"
        )
    samples = [(p, i) for i, name in enumerate(classes) for p in sorted((folder / name).rglob("*")) if _is_image(p)]
    if not samples:
        raise QuantizeError(f"{flag} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return samples, classes


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


def _calibration_reader(images: Sequence[Path], preprocess: Callable, input_name: str, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class FolderReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.position = 0

        def get_next(self) -> dict | None:
            if self.position >= len(images):
                return None
            chunk = images[self.position : self.position + batch]
            self.position += len(chunk)
            return {input_name: np.stack([preprocess(p) for p in chunk])}

        def rewind(self) -> None:
            self.position = 0

    return FolderReader()


def quantize_qdq(
    fp32_onnx: str | os.PathLike,
    output: str | os.PathLike,
    calibration_images: Sequence[Path],
    preprocess: Callable[[Path], np.ndarray],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    target: str = "cpu",
    reduce_range: bool | None = None,
    input_name: str = "input",
    calibration_batch: int = 8,
) -> dict:
    """Write a static int8 QDQ model of `fp32_onnx` to `output`; return the settings used.

    `target="cpu"`: uint8 activations (asymmetric), int8 weights, `reduce_range` from the CPU's
    flags when None (see the module doc). `target="tensorrt"`: int8 activations and weights, both
    symmetric (zero point 0), which is what TensorRT's explicit quantization takes.
    """
    _require_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if target not in ("cpu", "tensorrt"):
        raise QuantizeError(f"target must be 'cpu' or 'tensorrt', got {target!r}")
    if not calibration_images:
        raise QuantizeError("no calibration images")
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    if target == "tensorrt":
        activation, symmetric, reduce_range = QuantType.QInt8, True, False
    else:
        activation, symmetric = QuantType.QUInt8, False
        if reduce_range is None:
            reduce_range = not cpu_has_vnni()
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    output = Path(output)
    with staging_folder(output) as tmp:  # written complete beside `output`, then moved onto it
        prepared, quantized = tmp / "prepared.onnx", tmp / output.name
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=False)
        quantize_static(
            str(prepared),
            str(quantized),
            _calibration_reader(calibration_images, preprocess, input_name, calibration_batch),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            extra_options=extra,
        )
        replace_path(quantized, output)
    return dict(
        format="QDQ",
        method=method,
        calibration_images=len(calibration_images),
        per_channel=per_channel,
        target=target,
        activations="int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
        weights="int8 symmetric" + (", 7-bit range" if reduce_range else ""),
        reduce_range=bool(reduce_range),
        cpu_vnni=cpu_has_vnni(),
        quantized_ops=["Conv", "MatMul", "Gemm"],
    )


# --------------------------------------------------------------------------------------------
# Evaluation and latency
# --------------------------------------------------------------------------------------------


def evaluate_onnx(
    fp32_onnx: str | os.PathLike,
    int8_onnx: str | os.PathLike,
    samples: Sequence[tuple[Path, int]],
    preprocess: Callable[[Path], np.ndarray],
    *,
    input_name: str = "input",
    batch: int = 16,
) -> dict:
    """Top-1 of both models on labelled images, how often they agree, and how close their logits are."""
    fp32, int8 = onnx_session(fp32_onnx), onnx_session(int8_onnx)
    logits = {"fp32": [], "int8": []}
    for start in range(0, len(samples), batch):
        x = np.stack([preprocess(p) for p, _ in samples[start : start + batch]])
        logits["fp32"].append(fp32.run(None, {input_name: x})[0])
        logits["int8"].append(int8.run(None, {input_name: x})[0])
    a, b = np.concatenate(logits["fp32"]), np.concatenate(logits["int8"])
    labels = np.array([label for _, label in samples])
    cosine = cosine_per_sample(b, a)
    top1_fp32 = float((a.argmax(1) == labels).mean() * 100)
    top1_int8 = float((b.argmax(1) == labels).mean() * 100)
    return dict(
        images=len(samples),
        top1_fp32=round(top1_fp32, 3),
        top1_int8=round(top1_int8, 3),
        top1_drop=round(top1_fp32 - top1_int8, 3),
        top1_agreement=round(float((a.argmax(1) == b.argmax(1)).mean() * 100), 3),
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
    preprocess: Callable[[Path], np.ndarray],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    target: str = "cpu",
    reduce_range: bool | None = None,
    eval_samples: Sequence[tuple[Path, int]] | None = None,
    max_drop: float = 1.0,
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
    import torch

    from ..files import sha256_file
    from .errors import EXIT_CHECK_FAILED, ExportError
    from .onnx import DEFAULT_OPSET, export_and_check_onnx
    from .record import provenance, source_record
    from .verify import compare_cosine

    output = Path(output)
    with staging_folder(output) as tmp:
        fp32 = tmp / "fp32.onnx"
        fp32_record = export_and_check_onnx(
            source, fp32, opset=DEFAULT_OPSET, dynamic_batch=True, atol=1e-4, rtol=1e-4, log=lambda m: None
        )
        if not fp32_record["check"]["passed"]:
            raise ExportError(
                f"the fp32 export differs from PyTorch ({fp32_record['check']['max_abs_diff']:.3g}); "
                "nothing was written"
            )
        log(f"calibrating on {len(calibration_images)} images ({method}, target {target})")
        int8 = tmp / "int8.onnx"
        settings = quantize_qdq(
            fp32,
            int8,
            calibration_images,
            preprocess,
            method=method,
            per_channel=per_channel,
            target=target,
            reduce_range=reduce_range,
            input_name=source.input_name,
        )
        record: dict = dict(
            format="onnx-qdq-int8",
            output=output.name,
            **source_record(source),
            quantization=dict(**settings, **(record_extra or {})),
        )
        x = source.example_input(batch=4, seed=1)
        got = onnx_session(int8).run(None, {source.input_name: x.numpy()})
        record["check"] = dict(
            runtime="onnxruntime (CPUExecutionProvider)",
            reference="the PyTorch eval-mode model as loaded, float32",
            input="ImageNet-normalised uniform random pixels, seed 1, batch 4",
            **compare_cosine(got, source.reference_outputs(x), None),
        )
        log(f"int8 vs PyTorch fp32 on random images: logit cosine {record['check']['cosine_min']:.5f} (min)")
        if eval_samples is not None:
            log(f"evaluating fp32 and int8 on {len(eval_samples)} images")
            accuracy = evaluate_onnx(fp32, int8, eval_samples, preprocess, input_name=source.input_name)
            accuracy.update(max_drop=max_drop)
            record["accuracy"] = accuracy
            log(
                f"top-1 fp32 {accuracy['top1_fp32']:.2f}%  int8 {accuracy['top1_int8']:.2f}%  "
                f"drop {accuracy['top1_drop']:.2f} points  agreement {accuracy['top1_agreement']:.2f}%  "
                f"logit cosine {accuracy['logit_cosine_mean']:.5f}"
            )
            if accuracy["top1_drop"] > max_drop:
                raise ExportError(
                    f"int8 loses {accuracy['top1_drop']:.2f} points of top-1, more than the {max_drop} allowed; "
                    "nothing was written",
                    EXIT_CHECK_FAILED,
                    param="max_drop",
                )
        if latency_runs > 0:
            shape = (1, *source.input_shape[1:])
            threads = torch.get_num_threads()
            fp32_ms = onnx_latency_ms(fp32, shape, runs=latency_runs, threads=threads)
            int8_ms = onnx_latency_ms(int8, shape, runs=latency_runs, threads=threads)
            record["latency"] = dict(
                runtime="onnxruntime CPUExecutionProvider", batch=1, threads=threads, runs=latency_runs,
                warmup=5, statistic="median", fp32_ms=round(fp32_ms, 3), int8_ms=round(int8_ms, 3),
                int8_over_fp32=round(int8_ms / fp32_ms, 3),
            )  # fmt: skip
            log(f"ONNX Runtime batch 1, {threads} threads: fp32 {fp32_ms:.2f} ms, int8 {int8_ms:.2f} ms "
                f"({int8_ms / fp32_ms:.2f}x)")  # fmt: skip
        replace_path(int8, output)
    record.update(output_sha256=sha256_file(output), **provenance())
    return record
