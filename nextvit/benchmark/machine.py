"""The machine a benchmark runs on: CPU, instruction sets, versions, and the matrix-multiply rate
that sets each row's compute floor."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import time
from pathlib import Path

import torch

from ..export.record import git_commit

__all__ = ["ISA_FLAGS", "machine_info", "gemm_gflops", "floor_ms", "significant", "format_ms"]

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine_info(device: str = "cpu") -> dict:
    """CPU model, its int8/bf16 instruction sets, cores, threads, GPU, library versions, commit, date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = git_commit() or ""
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


def significant(value: float, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits: a GPU's floor is microseconds, which a fixed
    number of decimals of a millisecond rounds to 0."""
    return float(f"{value:.{digits}g}")


def floor_ms(flops: float, batch: int, gflops_rate: float | None) -> float | None:
    """The compute floor of one batch in ms (3 significant digits), or None where it is unknown (no FLOPs
    count, no rate)."""
    if not flops or not gflops_rate:
        return None
    return significant(2 * flops * batch / (gflops_rate * 1e9) * 1e3)


def format_ms(ms: float | None) -> str:
    """A duration for a report line, readable from nanoseconds to minutes: '68.4 ms', '1.12 ms', '4.12 us'."""
    if ms is None:
        return "n/a"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.3g} ms"
    if ms >= 1e-3:
        return f"{ms * 1e3:.3g} us"
    return f"{ms * 1e6:.3g} ns"
