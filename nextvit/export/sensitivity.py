"""Where int8 loses accuracy: the top-1 drop with one layer group at a time left out of (or alone in) int8.

`int8_sensitivity` quantizes the same fp32 ONNX model once with every group in int8 (the
baseline), then once per layer group (`nextvit.export.layer_groups`) either keeping that group in
fp32 (`mode="keep-fp32"`: how many points it costs) or quantizing only that group
(`mode="int8-only"`: the damage it does alone), and measures each model's top-1 against fp32 on
the same labelled images, with 95% intervals. The images are read once and fp32 runs once.
`deployment/quantize.py --sensitivity` prints it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .layer_groups import layer_groups
from .onnx import onnx_session
from .quantize import DEFAULT_KEEP_FP32, QuantizeError, checked_fp32_export, quantize_qdq

if TYPE_CHECKING:
    from .source import ExportSource
from .verify import cosine_per_sample, paired_difference_interval

__all__ = ["SENSITIVITY_MODES", "int8_sensitivity", "sensitivity_of_source"]

SENSITIVITY_MODES = ("keep-fp32", "int8-only")
_NOT_MEASURED = ("graph",)  # nodes without a module path (reshapes of the input, constants)


def _read_all(samples: Sequence[tuple[Path, int]], preprocess: Callable) -> tuple[np.ndarray, np.ndarray]:
    loaded = [(preprocess(p), label) for p, label in samples]
    loaded = [(x, label) for x, label in loaded if x is not None]
    if not loaded:
        raise QuantizeError(f"none of the {len(samples)} evaluation images could be read")
    return np.stack([x for x, _ in loaded]), np.array([label for _, label in loaded])


def _logits(onnx_path: str | os.PathLike, x: np.ndarray, input_name: str, batch: int = 64) -> np.ndarray:
    session = onnx_session(onnx_path)
    return np.concatenate([session.run(None, {input_name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _compare(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray) -> dict:
    drop = paired_difference_interval(fp32.argmax(1) == labels, int8.argmax(1) == labels)
    return dict(
        top1_int8=round(float((int8.argmax(1) == labels).mean() * 100), 3),
        top1_drop=drop["difference"],
        top1_drop_interval95=drop["interval95"],
        top1_agreement=round(float((fp32.argmax(1) == int8.argmax(1)).mean() * 100), 3),
        logit_cosine_mean=round(float(cosine_per_sample(int8, fp32).mean()), 6),
    )


def int8_sensitivity(
    fp32_onnx: str | os.PathLike,
    calibration_images: Sequence[Path],
    preprocess: Callable,
    eval_samples: Sequence[tuple[Path, int]],
    *,
    mode: str = "keep-fp32",
    groups: Sequence[str] | None = None,
    keep_fp32: Sequence[str] | None = None,
    input_name: str = "input",
    log: Callable[[str], None] = print,
    **quantize_options,
) -> dict:
    """The baseline int8 model's drop, then one row per group (see the module doc), largest effect first.

    `keep_fp32` groups stay fp32 in every model, the baseline included (None: `DEFAULT_KEEP_FP32`,
    as `quantize_qdq` does; () for a baseline with every group in int8); `groups` limits the rows
    (default: every group of the graph). `quantize_options` go to `quantize_qdq` (method, target, ...).
    """
    if mode not in SENSITIVITY_MODES:
        raise QuantizeError(f"mode must be one of {SENSITIVITY_MODES}, got {mode!r}")
    all_groups = layer_groups(fp32_onnx)
    if keep_fp32 is None:
        keep_fp32 = [g for g in DEFAULT_KEEP_FP32 if g in all_groups]
    names = [g for g in (groups or all_groups) if g not in _NOT_MEASURED and g not in keep_fp32]
    unknown = [g for g in list(names) + list(keep_fp32) if g not in all_groups]
    if unknown:
        raise QuantizeError(
            f"no layer group {', '.join(unknown)} in this model; its groups are {', '.join(all_groups)}"
        )
    x, labels = _read_all(eval_samples, preprocess)
    fp32 = _logits(fp32_onnx, x, input_name)
    top1_fp32 = round(float((fp32.argmax(1) == labels).mean() * 100), 3)

    def measure(kept: Sequence[str]) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            int8_path = Path(tmp) / "int8.onnx"
            quantize_qdq(fp32_onnx, int8_path, calibration_images, preprocess, input_name=input_name,
                         keep_fp32=list(kept), **quantize_options)  # fmt: skip
            return _compare(fp32, _logits(int8_path, x, input_name), labels)

    baseline = measure(keep_fp32)
    log(f"fp32 top-1 {top1_fp32:.2f}%, int8 {baseline['top1_int8']:.2f}%: drop {baseline['top1_drop']:.2f} points "
        f"({len(labels)} images, one image = {100 / len(labels):.3f} points)")  # fmt: skip
    rows = []
    for name in names:
        if mode == "keep-fp32":
            kept = [*keep_fp32, name]
        else:
            kept = [g for g in all_groups if g != name and g not in _NOT_MEASURED] + list(keep_fp32)
        row = dict(group=name, nodes=len(all_groups[name]), **measure(kept))
        row["effect"] = round(baseline["top1_drop"] - row["top1_drop"] if mode == "keep-fp32" else row["top1_drop"], 3)
        lo, hi = row["top1_drop_interval95"]
        log(f"  {name:<24} {row['nodes']:>4} nodes  drop {row['top1_drop']:6.2f} ({lo:.2f} to {hi:.2f})  "
            f"agreement {row['top1_agreement']:.2f}%  cosine {row['logit_cosine_mean']:.5f}")  # fmt: skip
        rows.append(row)
    rows.sort(key=lambda r: -r["effect"])
    return dict(mode=mode, images=int(len(labels)), top1_fp32=top1_fp32, keep_fp32=list(keep_fp32),
                baseline=baseline, groups=rows, quantize_options=quantize_options)  # fmt: skip


def sensitivity_of_source(
    source: ExportSource,
    calibration_images: Sequence[Path],
    preprocess: Callable,
    eval_samples: Sequence[tuple[Path, int]],
    **options,
) -> dict:
    """`int8_sensitivity` of a loaded checkpoint: its folded fp32 ONNX export (checked against
    PyTorch, in a temporary folder), then the table."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        checked_fp32_export(source, fp32)
        return int8_sensitivity(fp32, calibration_images, preprocess, eval_samples, input_name=source.input_name,
                                **options)  # fmt: skip
