"""The numeric check of an exported model against the PyTorch reference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import ExportError

__all__ = ["compare", "compare_cosine", "cosine_per_sample", "wilson_interval", "paired_difference_interval"]


def compare(outputs: Sequence, references: Sequence[torch.Tensor], atol: float | None, rtol: float | None) -> dict:
    """Largest absolute difference, and relative to the largest reference value, over all outputs.

    It passes when every output's max |difference| <= atol + rtol * max |reference| (a tolerance
    None is not enforced). Shapes must match exactly.
    """
    import numpy as np

    if len(outputs) != len(references):
        raise ExportError(f"the exported model has {len(outputs)} outputs, PyTorch {len(references)}")
    per_output, passed = [], True
    for out, ref in zip(outputs, references):
        out = np.asarray(out, dtype=np.float64)
        ref = ref.detach().double().cpu().numpy()
        if out.shape != ref.shape:
            raise ExportError(f"output shape {list(out.shape)} differs from PyTorch's {list(ref.shape)}")
        max_abs = float(np.abs(out - ref).max()) if out.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        limit = None if atol is None and rtol is None else (atol or 0.0) + (rtol or 0.0) * scale
        ok = limit is None or max_abs <= limit
        passed &= ok
        per_output.append(dict(max_abs_diff=max_abs, max_rel_diff=max_abs / max(scale, 1e-12), ref_max_abs=scale))
    return dict(
        max_abs_diff=max(p["max_abs_diff"] for p in per_output),
        max_rel_diff=max(p["max_rel_diff"] for p in per_output),
        atol=atol,
        rtol=rtol,
        passed=bool(passed),
        per_output=per_output,
    )


def cosine_per_sample(output, reference):
    """Cosine similarity of each sample's flattened output with the reference's (float64)."""
    import numpy as np

    a = np.asarray(output, dtype=np.float64)
    b = reference.detach().double().cpu().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    a, b = a.reshape(a.shape[0], -1), b.astype(np.float64).reshape(b.shape[0], -1)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def compare_cosine(outputs: Sequence, references: Sequence[torch.Tensor], min_cosine: float | None) -> dict:
    """For reduced precision (bf16, int8), where an absolute tolerance says little: the smallest and
    mean per-sample cosine over all outputs; it passes when the smallest is >= `min_cosine`."""
    import numpy as np

    if len(outputs) != len(references):
        raise ExportError(f"the exported model has {len(outputs)} outputs, PyTorch {len(references)}")
    cos = np.concatenate([cosine_per_sample(o, r) for o, r in zip(outputs, references)])
    return dict(
        kind="logit cosine",
        cosine_mean=round(float(cos.mean()), 6),
        cosine_min=round(float(cos.min()), 6),
        min_cosine=min_cosine,
        passed=bool(min_cosine is None or cos.min() >= min_cosine),
    )


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent (sound near 0% and 100%, unlike p +- z*se)."""
    if trials <= 0:
        return (0.0, 100.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half) * 100, min(1.0, centre + half) * 100)


def paired_difference_interval(correct_a: Sequence[bool], correct_b: Sequence[bool], z: float = 1.96) -> dict:
    """Top-1 of A minus top-1 of B on the same images, in points, with a 95% interval.

    The images are shared, so the difference is the mean of per-image differences (+1, 0, -1) and
    its standard error comes from their spread: much narrower than two independent accuracies',
    since most images are right (or wrong) for both. With n images one image is 100/n points."""
    import numpy as np

    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal, non-empty lists of outcomes, got {a.shape} and {b.shape}")
    d = a - b
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("inf")
    mean = float(d.mean())
    return dict(
        difference=round(mean * 100, 3),
        interval95=[round((mean - z * se) * 100, 3), round((mean + z * se) * 100, 3)],
        standard_error=round(se * 100, 3),
        images=int(d.size),
        one_image_points=round(100 / d.size, 3),
    )
