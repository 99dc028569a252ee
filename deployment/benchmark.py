"""Inference latency of Next-ViT against timm's port and classic peers, in one process.

    python deployment/benchmark.py                       # nextvit_small vs timm's, 224, batch 1 and 8
    python deployment/benchmark.py --batch-sizes 1 --modes eager folded --runs 10
    python deployment/benchmark.py --models nextvit_small nextvit_base nextvit_large timm:resnet50 \\
        timm:convnext_tiny timm:efficientformer_l1 --input-sizes 224 384 --modes folded onnxruntime \\
        --output logs/benchmark_zoo_cpu.json --csv logs/benchmark_zoo_cpu.csv --chart images/latency_accuracy_cpu.png

Models are this package's (`nextvit_small`, ...) or timm's (`timm:<name>`, random weights, no
download). Without `--models`, `--model` is compared with timm's model of the same name, sharing
the same weights. For each input size, batch size, dtype and mode, every model is timed in
alternation (one call each, round after round), so all see the same machine state; each row gives
the median and quartiles and the ratio to the first model of `--models`. Modes:

* eager: the model as trained (BatchNorms in place);
* folded: BatchNorms folded (ours: `nextvit.fold_batchnorm`; timm models: timm's own
  `reparameterize_model`, which is what timm offers for deployment);
* folded_cl: folded, with channels_last weights and inputs;
* compile: folded, `torch.compile` (inductor) with freezing, under no_grad;
* onnxruntime: the folded model exported to ONNX (opset 17) and run by ONNX Runtime;
* tensorrt: the folded model as a TensorRT engine (where TensorRT and a GPU exist; skipped otherwise).

dtypes: float32; bfloat16 and float16 for the PyTorch modes; float16 for TensorRT (an fp16 engine,
the paper's setting). The compute floor of a row is the model's FLOPs (counted once, on the CPU)
divided by the matrix-multiply rate this device reaches in a large GEMM of the row's dtype: no
implementation in that dtype can beat it by much. On CUDA, ONNX Runtime runs with its input and
outputs bound to GPU memory (IO binding), so its rows, like the PyTorch and TensorRT ones, hold no
host-device copies. Every row records the machine, library versions, threads, dtype, batch,
resolution, warm-up and run counts, and the git commit.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import nextvit
from nextvit.flops import count_flops

MODES = ("eager", "folded", "folded_cl", "compile", "onnxruntime", "tensorrt")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# ImageNet-1K top-1 (%) at 224 of the published weights, for the latency-accuracy chart; the
# benchmark itself times random weights of the same architectures.
ACCURACY = {
    "nextvit_small": (82.5, "Next-ViT paper / original README"),
    "nextvit_base": (83.2, "Next-ViT paper / original README"),
    "nextvit_large": (83.6, "Next-ViT paper / original README"),
    "resnet50": (80.4, "Wightman et al. 2021, ResNet strikes back (A1)"),
    "convnext_tiny": (82.1, "Liu et al. 2022, ConvNeXt"),
    "efficientformer_l1": (79.2, "Li et al. 2022, EfficientFormer"),
}


def machine_info(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("timm", "onnxruntime", "tensorrt", "nextvit"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    info = dict(
        cpu=cpu,
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


def floor_ms(flops: float, batch: int, gflops_rate: float | None) -> float | None:
    """The compute floor of one batch in ms, or None where it is unknown (no FLOPs count, no rate)."""
    if not flops or not gflops_rate:
        return None
    return round(2 * flops * batch / (gflops_rate * 1e9) * 1e3, 2)


def combination_exists(mode: str, dtype: str) -> bool:
    """ONNX Runtime is timed in float32; TensorRT builds float32 or float16 engines."""
    return not ((mode == "onnxruntime" and dtype != "float32") or (mode == "tensorrt" and dtype == "bfloat16"))


class Timed:
    """A callable under test plus its input, timed one call at a time."""

    def __init__(self, name: str, fn: Callable, x, sync: Callable[[], None] | None = None) -> None:
        self.name, self.fn, self.x, self.sync = name, fn, x, sync
        self.times: list[float] = []

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
        )


def build_model(spec: str, shared_state: dict | None = None) -> torch.nn.Module:
    """`nextvit_*` (this package) or `timm:<name>` (random weights; nextvit ones share ours)."""
    torch.manual_seed(0)
    if not spec.startswith("timm:"):
        return nextvit.create_model(spec).eval()
    import timm

    model = timm.create_model(spec[len("timm:") :], pretrained=False).eval()
    if shared_state is not None:
        model.load_state_dict(shared_state)
    return model


def fold(spec: str, model: torch.nn.Module) -> torch.nn.Module:
    if not spec.startswith("timm:"):
        return nextvit.fold_batchnorm(model)
    from timm.utils.model import reparameterize_model

    return reparameterize_model(copy.deepcopy(model))


def _torch_fn(model, x, channels_last=False, compile_model=False):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_model:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)

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


def _onnx_fn(model, x, workdir: Path, tag: str, device: str):
    import onnxruntime as ort

    path = workdir / f"{tag}.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["input"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"this onnxruntime has no {provider} (it would fall back silently)")
    options = {"device_id": torch.cuda.current_device()} if device == "cuda" else {}
    session = ort.InferenceSession(str(path), opts, providers=[(provider, options)])
    inp = x.to(device).contiguous()  # kept alive by the Timed that holds it: the binding points into it
    return ort_bound_run(session, inp), inp


def tensorrt_unavailable(device: str) -> str | None:
    """Why TensorRT cannot be timed in this run, or None when it can."""
    if device != "cuda":
        return "TensorRT runs on the GPU: pass --device cuda"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _tensorrt_fn(model, x, workdir: Path, tag: str, fp16: bool):
    """An engine built as export_tensorrt_engine.py builds it (nextvit.tensorrt), run on its CUDA buffers."""
    import tensorrt as trt

    from nextvit.tensorrt import EngineRunner, build_engine_python

    onnx_path, engine_path = workdir / f"{tag}.onnx", workdir / f"{tag}.engine"
    torch.onnx.export(model, (x,), str(onnx_path), opset_version=17, dynamo=False, input_names=["input"])
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
    if mode == "onnxruntime":
        fn, inp = _onnx_fn(fold(spec, model), x, workdir, tag, device)
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


def _flops_or_zero(model: torch.nn.Module, size: int) -> float:
    """FLOPs at `size`, or 0 for a model that cannot take that size (its timing then reports why)."""
    try:
        return count_flops(model, size)
    except Exception:  # noqa: BLE001
        return 0.0


def gemm_dtypes(args: argparse.Namespace) -> list[str]:
    """The dtypes whose GEMM rate some row's floor needs."""
    needed = {d for m in args.modes for d in args.dtypes if combination_exists(m, d)}
    return [dtype for dtype in DTYPES if dtype in needed]


def base_name(spec: str) -> str:
    return spec.split(":", 1)[-1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models(),
                        help="without --models: this model against timm's of the same name")  # fmt: skip
    parser.add_argument("--models", nargs="+", help="models to time together: nextvit_* or timm:<name>")
    parser.add_argument("--input-size", "--input-sizes", dest="input_sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=[m for m in MODES if m != "tensorrt"], choices=MODES)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model at batch 1 (fewer for larger)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="without --models: skip timm's model")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="also write one CSV row per measurement here")
    parser.add_argument("--chart", type=Path, default=None, help="draw a latency-accuracy chart (PNG) here")
    parser.add_argument("--chart-mode", default="folded", choices=MODES, help="the mode the chart plots")
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = [args.model] + ([] if args.no_timm else [f"timm:{args.model}"])
    for spec in args.models:
        if not spec.startswith("timm:") and spec not in nextvit.list_models():
            parser.error(f"--models: {spec!r} is neither one of {nextvit.list_models()} nor timm:<name>")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    return args


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    models = {spec: None for spec in args.models}
    ours_state = {}
    for spec in args.models:  # timm's Next-ViT gets our weights, so both compute the same thing
        shared = ours_state.get(base_name(spec)) if spec.startswith("timm:nextvit") else None
        models[spec] = build_model(spec, shared)
        if not spec.startswith("timm:"):
            ours_state[spec] = models[spec].state_dict()
    # FLOPs once per model and size, before any timing, on the CPU float32 models (never moved)
    flops = {(spec, size): _flops_or_zero(m, size) for size in args.input_sizes for spec, m in models.items()}
    gemm = {dtype: gemm_gflops(device=args.device, dtype=DTYPES[dtype]) for dtype in gemm_dtypes(args)}
    skip = {"tensorrt": tensorrt_unavailable(args.device)} if "tensorrt" in args.modes else {}
    print(f"# {info['cpu']}, {info['logical_cores']} logical cores, {info['torch_threads']} torch threads"
          + (f", {info['gpu']}" if args.device == "cuda" else ""))  # fmt: skip
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", commit {info['git_commit']}")
    rates = ", ".join(f"{dtype} {rate:.4g}" for dtype, rate in gemm.items())
    print(f"# GEMM rate here (GFLOP/s): {rates}; warm-up {args.warmup} calls, then timed calls in alternation")
    print(f"# median [p25-p75] ms per batch; ratio: to {args.models[0]}; /floor: to FLOPs / GEMM rate of the dtype")
    for mode, why in skip.items():
        if why:
            print(f"# {mode}: skipped ({why})")

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.input_sizes:
            for batch in args.batch_sizes:
                x = torch.randn(batch, 3, size, size)
                for dtype in gemm:  # the best rate seen so far: a shared machine drifts
                    gemm[dtype] = max(gemm[dtype], gemm_gflops(device=args.device, dtype=DTYPES[dtype]))
                runs = max(5, args.runs // max(1, batch // 2) // (2 if size > 300 else 1))
                print(f"\n{size}x{size}, batch {batch}", flush=True)
                for dtype in args.dtypes:
                    for mode in args.modes:
                        if skip.get(mode):
                            continue
                        timed = []
                        for spec, model in models.items():
                            try:  # one model that cannot run here (e.g. a fixed input size) does not end the run
                                t = make_timed(spec, model, mode, dtype, x, Path(tmp), args.device)
                                if t is not None:
                                    t.warm(1)
                                    timed.append(t)
                            except Exception as err:  # noqa: BLE001 - reported in the result, then go on
                                why = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                                failed.append(dict(model=spec, mode=mode, dtype=dtype, batch=batch, input_size=size,
                                                   error=why))  # fmt: skip
                                print(f"  {mode:<12} {dtype:<9} {spec:<26} cannot run: {why}", flush=True)
                        if not timed:
                            continue
                        for t in timed:
                            t.warm(args.warmup + (2 if mode == "compile" else 0))
                        for _ in range(runs):
                            for t in timed:
                                t.time_once()
                        reference = timed[0].summary()["median_ms"]
                        for t in timed:
                            row = dict(model=t.name, mode=mode, dtype=dtype, device=args.device, batch=batch,
                                       input_size=size, warmup=args.warmup,
                                       gflops=round(flops[t.name, size] / 1e9, 4), **t.summary())  # fmt: skip
                            row["ratio_to_first"] = round(row["median_ms"] / reference, 3)
                            row["floor_ms"] = floor_ms(flops[t.name, size], batch, gemm[dtype])
                            rows.append(row)
                            to_floor = f"{row['median_ms'] / row['floor_ms']:.2f}" if row["floor_ms"] else "n/a"
                            print(f"  {mode:<12} {dtype:<9} {t.name:<26} {row['median_ms']:9.1f} "
                                  f"[{row['p25_ms']:.1f}-{row['p75_ms']:.1f}]   ratio {row['ratio_to_first']:.3f}"
                                  f"   /floor {to_floor}", flush=True)  # fmt: skip
                        torch._dynamo.reset()

    for row in rows:  # floors against the best GEMM rate of their dtype seen in the whole run
        row["floor_ms"] = floor_ms(flops[row["model"], row["input_size"]], row["batch"], gemm[row["dtype"]])
    gemm = {dtype: float(f"{rate:.4g}") for dtype, rate in gemm.items()}
    return dict(models=args.models, gemm_gflops=gemm, machine=info, skipped=skip, failed=failed, rows=rows)


def write_csv(result: dict, path: Path) -> None:
    info = result["machine"]
    provenance = dict(cpu=info["cpu"], gpu=info.get("gpu", ""), torch_threads=info["torch_threads"],
                      torch=info["versions"]["torch"], onnxruntime=info["versions"].get("onnxruntime", ""),
                      timm=info["versions"].get("timm", ""), commit=info["git_commit"], date=info["date"])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*result["rows"][0], *provenance])
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(row | provenance)


def draw_chart(result: dict, path: Path, mode: str) -> None:
    """Top-1 (published) against latency (measured here) at batch 1, the smallest input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["mode"] == mode and r["batch"] == 1 and r["dtype"] == "float32"]
    if not rows:
        raise SystemExit(f"--chart: no batch-1 float32 rows in mode {mode!r} to draw")
    size = min(r["input_size"] for r in rows)
    rows = [r for r in rows if r["input_size"] == size and base_name(r["model"]) in ACCURACY]
    info = result["machine"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=150)
    ours = sorted((r for r in rows if not r["model"].startswith("timm:")), key=lambda r: r["median_ms"])
    ax.plot([r["median_ms"] for r in ours], [ACCURACY[r["model"]][0] for r in ours], "o-", color="tab:red",
            label="Next-ViT (this package, BatchNorm folded)")  # fmt: skip
    for r in ours:
        label = "Next-ViT-" + r["model"].split("_")[-1][0].upper()
        ax.annotate(label, (r["median_ms"], ACCURACY[r["model"]][0]), textcoords="offset points", xytext=(6, -10))
    for r in rows:
        if r["model"].startswith("timm:"):
            acc = ACCURACY[base_name(r["model"])][0]
            ax.plot(r["median_ms"], acc, "s", color="tab:blue")
            ax.annotate(r["model"], (r["median_ms"], acc), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel(f"latency, ms (batch 1, {size}x{size}, float32, median; {mode})")
    ax.set_ylabel("ImageNet-1K top-1, % (published)")
    where = info.get("gpu") or f"{info['cpu']}, {info['torch_threads']} threads"
    ax.set_title(f"Latency measured on {where}\ntorch {info['versions']['torch']}, commit {info['git_commit']}",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    if args.csv and result["rows"]:
        write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    if args.chart:
        draw_chart(result, args.chart, args.chart_mode)
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
