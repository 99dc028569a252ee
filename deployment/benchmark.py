"""CPU inference latency of Next-ViT against timm's port of the same model, in one process.

    python deployment/benchmark.py                       # nextvit_small, 224, batch 1 and 8
    python deployment/benchmark.py --batch-sizes 1 --modes eager folded --runs 10

For each batch size and each mode, this package's model and timm's `nextvit_small` (folded with
timm's own `reparameterize_model`) are timed in alternation, so both see the same machine state,
and the ratio ours/timm is printed. Modes:

* eager: the model as trained (BatchNorms in place);
* folded: BatchNorms folded (ours: `nextvit.fold_batchnorm`; timm: `reparameterize_model`);
* folded_cl: folded, with channels_last weights and inputs;
* compile: folded, `torch.compile` (inductor) with freezing, under no_grad;
* onnxruntime: the folded model exported to ONNX and run by ONNX Runtime (ours only).

The compute floor is the model's FLOPs divided by the fp32 matrix-multiply rate this machine
reaches in a large GEMM: no implementation can beat it by much. Each row records the machine,
library versions, threads, dtype, batch, resolution, warm-up and run counts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import nextvit
from nextvit.flops import count_flops

MODES = ("eager", "folded", "folded_cl", "compile", "onnxruntime")


def machine_info() -> dict:
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
    for name in ("timm", "onnxruntime", "nextvit"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return dict(
        cpu=cpu,
        logical_cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        versions=versions,
        git_commit=commit,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def gemm_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The best fp32 matrix-multiply rate this machine reaches (GFLOP/s, 2 FLOPs per MAC)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class Runner:
    """A callable under test plus its input, timed one call at a time."""

    def __init__(self, name: str, fn, x) -> None:
        self.name, self.fn, self.x = name, fn, x
        self.times: list[float] = []

    def warm(self, n: int) -> None:
        for _ in range(n):
            self.fn(self.x)

    def time_once(self) -> None:
        start = time.perf_counter()
        self.fn(self.x)
        self.times.append(time.perf_counter() - start)

    def summary(self) -> dict:
        ms = sorted(t * 1e3 for t in self.times)
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        return dict(
            median_ms=round(statistics.median(ms), 2),
            p25_ms=round(q[0], 2),
            p75_ms=round(q[2], 2),
            min_ms=round(ms[0], 2),
            runs=len(ms),
        )


def _torch_runner(model, x, channels_last=False, compile_model=False):
    model = model.eval()
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


def _onnx_runner(model, x, workdir: Path):
    import onnxruntime as ort

    path = workdir / "model.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["input"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = x.numpy()
    return (lambda inp: session.run(None, {"input": inp})), feed


def build_pair(model_name: str, mode: str, x: torch.Tensor, workdir: Path, with_timm: bool):
    """(ours, timm's or None) runners for one mode."""
    torch.manual_seed(0)
    ours = nextvit.create_model(model_name).eval()
    theirs = None
    if with_timm and model_name in ("nextvit_small", "nextvit_base", "nextvit_large"):
        import timm
        from timm.utils.model import reparameterize_model

        theirs = timm.create_model(model_name).eval()
        theirs.load_state_dict(ours.state_dict())
    else:
        reparameterize_model = None

    if mode == "onnxruntime":
        fn, inp = _onnx_runner(nextvit.fold_batchnorm(ours), x, workdir)
        return Runner("ours", fn, inp), None
    if mode != "eager":
        ours = nextvit.fold_batchnorm(ours)
        if theirs is not None:
            theirs = reparameterize_model(copy.deepcopy(theirs))
    kwargs = dict(channels_last=mode == "folded_cl", compile_model=mode == "compile")
    fn, inp = _torch_runner(ours, x, **kwargs)
    runner_ours = Runner("ours", fn, inp)
    runner_timm = None
    if theirs is not None:
        fn, inp = _torch_runner(theirs, x, **kwargs)
        runner_timm = Runner("timm", fn, inp)
    return runner_ours, runner_timm


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models())
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model (batch 1; fewer for larger)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="skip the comparison with timm's model")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    info = machine_info()
    flops = count_flops(nextvit.create_model(args.model), args.input_size)
    gemm = gemm_gflops()
    print(
        f"# {args.model} at {args.input_size}x{args.input_size}, fp32, {info['cpu']}, "
        f"{info['logical_cores']} logical cores, {info['torch_threads']} torch threads"
    )
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", commit {info['git_commit']}")
    print(f"# {flops / 1e9:.2f} GFLOPs (MACs) per image; fp32 GEMM rate here {gemm:.0f} GFLOP/s")
    print(f"# warm-up {args.warmup} calls, then timed calls alternating ours and timm's; median [p25-p75] ms")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, args.input_size, args.input_size)
            gemm = max(gemm, gemm_gflops())  # the best rate seen so far: a shared machine drifts
            floor_ms = 2 * flops * batch / (gemm * 1e9) * 1e3
            print(f"\nbatch {batch}: compute floor {floor_ms:.1f} ms")
            runs = max(5, args.runs // max(1, batch // 2))
            for mode in args.modes:
                ours, theirs = build_pair(args.model, mode, x, Path(tmp), with_timm=not args.no_timm)
                pair = [r for r in (ours, theirs) if r is not None]
                for r in pair:
                    r.warm(args.warmup if mode != "compile" else args.warmup + 2)
                for _ in range(runs):
                    for r in pair:
                        r.time_once()
                row = dict(
                    mode=mode,
                    batch=batch,
                    input_size=args.input_size,
                    dtype="float32",
                    warmup=args.warmup,
                    ours=ours.summary(),
                    floor_ms=round(floor_ms, 2),
                )
                o = row["ours"]
                line = f"  {mode:<12} ours {o['median_ms']:8.1f} [{o['p25_ms']:.1f}-{o['p75_ms']:.1f}]"
                if theirs is not None:
                    row["timm"] = theirs.summary()
                    row["ratio_ours_timm"] = round(row["ours"]["median_ms"] / row["timm"]["median_ms"], 3)
                    line += f"   timm {row['timm']['median_ms']:8.1f}   ours/timm {row['ratio_ours_timm']:.3f}"
                row["ratio_ours_floor"] = round(row["ours"]["median_ms"] / floor_ms, 3)
                print(line + f"   ours/floor {row['ratio_ours_floor']:.2f}", flush=True)
                rows.append(row)
                torch._dynamo.reset()

    for row in rows:  # floors against the best GEMM rate seen in the whole run
        row["floor_ms"] = round(2 * flops * row["batch"] / (gemm * 1e9) * 1e3, 2)
        row["ratio_ours_floor"] = round(row["ours"]["median_ms"] / row["floor_ms"], 3)
    result = dict(model=args.model, gflops=round(flops / 1e9, 4), gemm_gflops=round(gemm, 1), machine=info, rows=rows)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
