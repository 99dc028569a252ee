"""TensorRT's Python API for Next-ViT engines: build (fp32, fp16, calibrated int8), run, time.

Used by deployment/export_tensorrt_engine.py and by deployment/benchmark.py's `tensorrt` mode.
Needs the `tensorrt` module (8.5 or later: the named-tensor API) and a CUDA device; the module
object is passed in, so importing this file needs neither.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from .export import ExportError, atomic_write_bytes

__all__ = ["EngineRunner", "build_engine_python", "make_calibrator", "timings_summary"]


def make_calibrator(trt, batches: list, cache_path: Path):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the calibration batches from GPU memory; never reads an old cache (it could be stale)."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index, self.current = 0, None

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(batches):
                return None
            self.current = torch.from_numpy(batches[self.index]).cuda().contiguous()
            self.index += 1
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_engine_python(trt, onnx_path: Path, engine: Path, datatype: str, shape: tuple[int, ...], calibrator) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if datatype == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif datatype == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build a {datatype} engine from {onnx_path} (see its log above)")
    atomic_write_bytes(engine, bytes(serialized))


class EngineRunner:
    """Runs a serialized engine with PyTorch CUDA tensors as its buffers (TensorRT 8.5+ tensor API)."""

    def __init__(self, trt, engine_path: Path, input_shape: tuple[int, ...]) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        for name in self.inputs:
            if -1 in tuple(self.engine.get_tensor_shape(name)):
                self.context.set_input_shape(name, input_shape)
        self.buffers = {}
        for name in names:
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            shape = tuple(self.context.get_tensor_shape(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def run_async(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.buffers[self.inputs[0]].copy_(torch.from_numpy(x))
        torch.cuda.synchronize()
        self.run_async()
        self.stream.synchronize()
        return {n: self.buffers[n].float().cpu().numpy() for n in self.outputs}

    def time(self, warmup_ms: int, iterations: int) -> list[float]:
        """Per-run GPU time in ms (CUDA events around each run, no host-device copies)."""
        end = time.perf_counter() + warmup_ms / 1000
        while time.perf_counter() < end:
            self.run_async()
            self.stream.synchronize()
        times = []
        for _ in range(iterations):
            start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_event.record(self.stream)
            self.run_async()
            end_event.record(self.stream)
            end_event.synchronize()
            times.append(start_event.elapsed_time(end_event))
        return times


def timings_summary(times_ms: list[float], batch_size: int) -> dict:
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    return dict(
        mean_ms=mean,
        median_ms=statistics.median(ordered),
        p99_ms=ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
        min_ms=ordered[0],
        max_ms=ordered[-1],
        throughput_qps=1000.0 / mean,
        throughput_images_per_s=1000.0 / mean * batch_size,
        measure="CUDA events around execute_async_v3 (GPU time, no host-device copies)",
        runs=len(ordered),
    )
