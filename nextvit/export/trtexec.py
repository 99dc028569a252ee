"""trtexec, TensorRT's command-line tool: its argument lists, its output, its version.

trtexec is run as an argument list (never a shell string). Its performance summary is parsed in
both formats it has printed: TensorRT 8.2 and later, and TensorRT 7 / 8.0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .errors import ExportError

__all__ = [
    "parse_trtexec_summary",
    "latency_summary",
    "parse_trtexec_version",
    "tensorrt_major",
    "trtexec_build_command",
    "trtexec_profile_command",
    "shape_flags",
    "run_trtexec",
    "read_trtexec_outputs",
    "check_with_trtexec",
]

_LOG_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*" + _NUMBER + r"\s*ms")
_SUMMARY_METRICS = {  # TensorRT 8.2 and later: "Name: min = 1 ms, max = ..., percentile(99%) = ... ms"
    "Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}
_SECTION_METRICS = {  # TensorRT 7 and 8.0: a heading line, then "min: 1 ms (end to end 2 ms)" lines
    "Host Latency": "latency_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute": "gpu_compute_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}


def _stat_key(name: str, percent: str | None) -> str:
    if percent is None:
        return name
    value = float(percent)
    return f"p{int(value) if value.is_integer() else value}"


def parse_trtexec_summary(text: str) -> dict:
    """The performance summary of a trtexec run as numbers.

    Returns ``throughput_qps`` (engine runs per second: multiply by the batch size for images) and,
    for each metric trtexec reports (``latency_ms``: host latency, H2D + compute + D2H;
    ``gpu_compute_ms``; ``enqueue_ms``; ``h2d_ms``; ``d2h_ms``), a dict of min/max/mean/median
    and percentiles (``p90``, ``p95``, ``p99``), plus the total times in seconds. Both the summary
    format of TensorRT 8.2+ and the per-section format of TensorRT 7/8.0 are understood; metrics
    that are not in the text are left out.
    """
    result: dict = {}
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if "=== Performance summary ===" in line), None)
    section = None
    for line in lines if start is None else lines[start:]:
        if m := re.match(r"Throughput:\s*" + _NUMBER + r"\s*qps", line, re.IGNORECASE):
            if float(m.group(1)) > 0 or "throughput_qps" not in result:
                result["throughput_qps"] = float(m.group(1))
            continue
        if m := re.match(r"Total Host Walltime:\s*" + _NUMBER + r"\s*s", line):
            result["total_host_walltime_s"] = float(m.group(1))
            continue
        if m := re.match(r"Total GPU Compute Time:\s*" + _NUMBER + r"\s*s", line):
            result["total_gpu_compute_s"] = float(m.group(1))
            continue
        head, _, rest = line.partition(":")
        if head in _SUMMARY_METRICS and "=" in rest:
            stats = {_stat_key(name, percent or None): float(v) for name, percent, v in _STAT.findall(rest)}
            if stats:
                result[_SUMMARY_METRICS[head]] = stats
            section = None
            continue
        if line in _SECTION_METRICS:  # older format: a heading on its own line
            section = _SECTION_METRICS[line]
            continue
        if section is not None:
            if m := re.match(r"(min|max|mean|median):\s*" + _NUMBER + r"\s*ms", line):
                result.setdefault(section, {})[m.group(1)] = float(m.group(2))
            elif m := re.match(r"percentile:\s*" + _NUMBER + r"\s*ms at (\d+(?:\.\d+)?)%", line):
                result.setdefault(section, {})[_stat_key("percentile", m.group(2))] = float(m.group(1))
            elif m := re.match(r"walltime:\s*" + _NUMBER + r"\s*s", line):
                result["total_host_walltime_s"] = float(m.group(1))
    return result


def latency_summary(parsed: dict, batch_size: int) -> dict:
    """Mean, median and p99 latency and the throughput, from `parse_trtexec_summary`'s result."""
    latency = parsed.get("latency_ms") or parsed.get("gpu_compute_ms") or {}
    qps = parsed.get("throughput_qps")
    if not qps and latency.get("mean"):
        qps = 1000.0 / latency["mean"]
    return dict(
        mean_ms=latency.get("mean"),
        median_ms=latency.get("median"),
        p99_ms=latency.get("p99"),
        throughput_qps=qps,
        throughput_images_per_s=qps * batch_size if qps else None,
        gpu_compute_mean_ms=parsed.get("gpu_compute_ms", {}).get("mean"),
        gpu_compute_median_ms=parsed.get("gpu_compute_ms", {}).get("median"),
        measure="trtexec Latency (host: H2D + GPU compute + D2H)" if "latency_ms" in parsed else "GPU compute time",
    )


def parse_trtexec_version(text: str) -> str | None:
    """'10.2.0' from '[TensorRT v100200]', or the 'TensorRT version: 8.6.3' line."""
    if m := re.search(r"TensorRT version:\s*([\d.]+)", text):
        return m.group(1)
    if m := re.search(r"\[TensorRT v(\d+)\]", text):
        code = int(m.group(1))
        major = code // 10000 if code >= 10000 else code // 1000
        rest = code % 10000 if code >= 10000 else code % 1000
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def tensorrt_major(version: str | None) -> int | None:
    """10 from '10.3.0'; None when unknown."""
    if not version or not (m := re.match(r"(\d+)", version)):
        return None
    return int(m.group(1))


def trtexec_build_command(trtexec: str, onnx: Path, engine: Path, datatype: str, shape_flags=()) -> list[str]:
    """trtexec's arguments to build an engine (no --explicitBatch: it is the default for ONNX and gone in TRT 10)."""
    command = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *shape_flags]
    if datatype == "fp16":
        command.append("--fp16")
    elif datatype == "int8":
        command.append("--int8")
    return command


def trtexec_profile_command(
    trtexec: str,
    engine: Path,
    warmup_ms: int,
    iterations: int,
    threads: int,
    dump_profile: bool,
    shape_flags=(),
    tensorrt_version: str | None = None,
) -> list[str]:
    """trtexec's arguments for the latency run; `threads` > 1 drives that many streams from their own threads.

    The streams flag is `--infStreams` from TensorRT 10 (`tensorrt_version`, as trtexec reports
    it), where `--streams` is deprecated, and `--streams` before.
    """
    command = [trtexec, f"--loadEngine={engine}", *shape_flags, f"--warmUp={warmup_ms}", f"--iterations={iterations}"]
    if threads > 1:
        major = tensorrt_major(tensorrt_version)
        streams = "--infStreams" if major is not None and major >= 10 else "--streams"
        command += [f"{streams}={threads}", "--threads"]
    if dump_profile:  # per-layer timing slows the run it is attached to: give it a run of its own
        command += ["--dumpProfile", "--separateProfileRun"]
    return command


def shape_flags(name: str, dims: list[int | None], shape: tuple[int, ...]) -> list[str]:
    """trtexec shape flags for an input with free dimensions, fixed to `shape`."""
    if all(d is not None for d in dims):
        return []
    text = f"{name}:" + "x".join(map(str, shape))
    return [f"--minShapes={text}", f"--optShapes={text}", f"--maxShapes={text}"]


def run_trtexec(command: list[str], log_path: Path, what: str, log: Callable[[str], None] = print) -> str:
    """Run trtexec, keep its whole output in `log_path`; on failure, its last lines go to stderr."""
    log("running " + " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    text = result.stdout + result.stderr
    atomic_write_bytes(log_path, text.encode())
    if result.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-25:])
        print(tail, file=sys.stderr)
        raise ExportError(f"trtexec failed ({what}) with exit status {result.returncode}; full log in {log_path}")
    return text


def read_trtexec_outputs(path: Path) -> dict[str, np.ndarray]:
    """The outputs trtexec writes with --exportOutput: a list of {name, dimensions, values}."""
    entries = json.loads(path.read_text())
    outputs = {}
    for entry in entries:
        dims = [int(d) for d in str(entry["dimensions"]).split("x") if d]
        outputs[entry["name"]] = np.asarray(entry["values"], dtype=np.float32).reshape(dims)
    return outputs


def check_with_trtexec(
    trtexec: str, engine: Path, input_name: str, x: np.ndarray, flags: list[str], log: Callable[[str], None] = print
) -> dict:
    """Run the engine once on `x` through trtexec and read back its outputs by name."""
    with tempfile.TemporaryDirectory() as tmp:
        feed, result = Path(tmp) / "input.bin", Path(tmp) / "outputs.json"
        np.ascontiguousarray(x, dtype=np.float32).tofile(feed)
        command = [
            trtexec,
            f"--loadEngine={engine}",
            *flags,
            f"--loadInputs={input_name}:{feed}",
            f"--exportOutput={result}",
            "--iterations=1",
            "--warmUp=0",
            "--duration=0",
        ]
        run_trtexec(command, engine.with_name(engine.name + ".check.log"), "running the engine for the check", log)
        return read_trtexec_outputs(result)
