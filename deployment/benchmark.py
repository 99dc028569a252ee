"""Inference latency of Next-ViT against timm's port and classic peers, in one process.

    python deployment/benchmark.py                       # nextvit_small vs timm's, 224, batch 1 and 8
    python deployment/benchmark.py --batch-sizes 1 --modes eager folded --runs 10
    python deployment/benchmark.py --models nextvit_small nextvit_base nextvit_large timm:resnet50 \\
        timm:convnext_tiny timm:efficientformer_l1 --input-sizes 224 384 --modes folded onnxruntime \\
        --output logs/benchmark_zoo_cpu.json --csv logs/benchmark_zoo_cpu.csv --chart images/latency_accuracy_cpu.png
    python deployment/benchmark.py --device cuda --models nextvit_small timm:nextvit_small timm:resnet50 \\
        timm:resnet101 --reference timm:resnet101 --modes folded cudagraph compile aoti --dtypes float16 \\
        --batch-sizes 1 8 256 --isolation none           # the paper's comparison on a GPU (make bench-cuda)

Models are this package's (`nextvit_small`, ...) or timm's (`timm:<name>`, random weights, no
download). Without `--models`, `--model` is compared with timm's model of the same name, sharing
the same weights. For each input size and batch size, every (model, mode, dtype) is timed in
alternation, a few calls at a time, round after round, so all see the same machine state; each
row gives the median and quartiles, the ratio to the first model of `--models` in the same mode
and dtype, and with `--baseline` the ratio to that row (e.g. `timm:nextvit_small:eager`).

Runtimes do not share a process (`--isolation process`, the default): each (model, mode, dtype)
runs in a worker process of its own that sleeps while another is timed, so no runtime's thread
pool (PyTorch's OpenMP threads, ONNX Runtime's and OpenVINO's spinning workers) competes with the
one being measured; a pause separates the turns. `--isolation none` keeps all in this process
(quicker to start; ONNX Runtime then reads up to 1.6x slower beside PyTorch). Modes:

* eager: the model as trained (BatchNorms in place);
* folded: BatchNorms folded (ours: `nextvit.fold_batchnorm`; timm models: timm's own
  `reparameterize_model`, which is what timm offers for deployment);
* folded_cl: folded, with channels_last weights and inputs;
* compile: folded, `torch.compile` (inductor) with freezing, under no_grad; on CUDA with channels_last
  and `--compile-mode` (default reduce-overhead: the compiled graph replayed as a CUDA graph);
* cudagraph (CUDA): folded, channels_last, captured once as a CUDA graph for the static input shape and
  replayed (each call copies its batch into the graph's input buffer);
* aoti: the folded model as the `.pt2` package deployment/export_aoti.py writes (torch.export +
  AOTInductor, float32 in and out, computing in the row's dtype), loaded with torch alone; on CUDA its
  calls are replayed as a CUDA graph (the row says when capture failed and it ran without);
* onnxruntime: the folded model exported to ONNX (opset 17) and run by ONNX Runtime;
* onnxruntime_int8: that ONNX model quantized to static int8 QDQ (`nextvit.export.quantize`, per-channel
  weights, calibrated on random ImageNet-range inputs: latency only; its default recipe, which keeps the
  last stage's E-MHSA in fp32) and run by ONNX Runtime; onnxruntime_int8_full: every layer in int8;
* openvino / openvino_int8 / openvino_int8_full: the same fp32 / int8 ONNX models compiled by OpenVINO for the CPU;
  with `--dtypes bfloat16`, the fp32 model under OpenVINO's bf16 precision hint;
* tensorrt: the folded model as a TensorRT engine (where TensorRT and a GPU exist; skipped otherwise).

dtypes: float32; bfloat16 and float16 for the PyTorch modes (the folded model runs oneDNN in bf16
where the CPU has bf16 units); bfloat16 for OpenVINO; float16 for TensorRT (an fp16 engine, the
paper's setting). The CPU's int8/bf16 instruction sets (VNNI, AVX512-BF16, AMX) are recorded with
the machine: they decide what the low-precision rows can gain. The int8 modes take float32
inputs (quantization happens inside the model).

On CUDA the PyTorch modes are timed by CUDA events around each call after the warm-up, and every
entry's preparation (building, exporting, compiling, capturing, warm-up) is reported apart
(`prepare_s`). Each row gives images/s, and with `--reference MODEL` its ratio to that model's row of
the same size, batch, mode and dtype (Next-ViT-S against ResNet-101 is the paper's comparison).

The compute floor of a row is the model's FLOPs (counted once, on the CPU) divided by the
matrix-multiply rate this device reaches in a large GEMM of the row's dtype: no implementation in
that dtype can beat it by much (int8 rows have none). On CUDA, ONNX Runtime runs with its input and
outputs bound to GPU memory (IO binding), so its rows, like the PyTorch and TensorRT ones, hold no
host-device copies. Every row records the machine, library versions, threads, dtype, batch,
resolution, warm-up and run counts, and the git commit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import nextvit
from nextvit.benchmark.machine import floor_ms, format_ms, gemm_gflops, machine_info, significant
from nextvit.benchmark.report import (
    draw_chart,
    markdown_table,  # noqa: F401 - callers of this script use it
    write_csv,
    write_json,
    write_markdown,
)
from nextvit.benchmark.runners import (
    COMPILE_MODES,
    DEFAULT_COMPILE_MODE,
    DEFAULT_MODES,
    DTYPES,
    INT8_MODES,
    MODES,
    ONNX_MODES,
    base_name,
    build_model,
    combination_exists,
    flops_or_zero,
    mode_unavailable,
    onnx_artifacts,
    prepare_timed,
    tensorrt_unavailable,
)
from nextvit.benchmark.workers import WorkerTimed, start_worker
from nextvit.export import HelpFormatter


def gemm_dtypes(args: argparse.Namespace) -> list[str]:
    """The dtypes whose GEMM rate some row's floor needs."""
    needed = {dtype for _, _, dtype in args.entries}
    return [dtype for dtype in DTYPES if dtype in needed]


def parse_entry(text: str) -> tuple[str, str, str]:
    """'MODEL:MODE[:DTYPE]' (MODEL may be timm:<name>; '{model}' stands for the row's model name)."""
    parts = text.split(":")
    dtype = parts.pop() if parts[-1] in DTYPES else "float32"
    if len(parts) < 2 or parts[-1] not in MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL:MODE[:DTYPE], MODE one of {MODES}")
    mode = parts.pop()
    return ":".join(parts), mode, dtype


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models(),
                        help="without --models: this model against timm's of the same name")  # fmt: skip
    parser.add_argument("--models", nargs="+", help="models to time together: nextvit_* or timm:<name>")
    parser.add_argument("--input-size", "--input-sizes", dest="input_sizes", type=int, nargs="+", default=[224],
                        help="square input sides to time")  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES,
                        help="how each model runs (see the module doc)")  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES),
                        help="what the models compute in")  # fmt: skip
    parser.add_argument("--entries", nargs="+", type=parse_entry, metavar="MODEL:MODE[:DTYPE]",
                        help="exactly these combinations instead of every model x mode x dtype")  # fmt: skip
    parser.add_argument("--baseline", type=parse_entry, metavar="MODEL:MODE[:DTYPE]",
                        help="every row's ratio to this row of its input and batch size; MODEL may be "
                        "'timm:{model}' (the row's own model name), e.g. timm:{model}:eager")  # fmt: skip
    parser.add_argument("--isolation", choices=["process", "none"], default="process",
                        help="a worker process per model, mode and dtype (no competing thread pools), "
                        "or none")  # fmt: skip
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=250.0,
        help="process isolation: rest between turns, so that the last runtime's threads stop spinning (ONNX "
        "Runtime's spin on after a call; with 20 ms its int8 read 55 ms instead of 26 on a 2-core Xeon)",
    )
    parser.add_argument("--reference", metavar="MODEL",
                        help="every row's ratio to this model's row of the same size, batch, mode and dtype, "
                        "e.g. timm:resnet101 (the paper's comparison)")  # fmt: skip
    parser.add_argument("--compile-mode", choices=sorted(COMPILE_MODES), default=DEFAULT_COMPILE_MODE,
                        help="compile on CUDA: inductor's mode (reduce-overhead and max-autotune replay CUDA "
                        "graphs; max-autotune compiles for minutes)")  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model at batch 1 (fewer for larger)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="without --models: skip timm's model")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="also write one CSV row per measurement here")
    parser.add_argument("--chart", type=Path, default=None, help="draw a latency-accuracy chart (PNG) here")
    parser.add_argument("--chart-mode", default="folded", choices=MODES, help="the mode the chart plots")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown table of the rows here")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    if args.entries:
        args.models = list(dict.fromkeys(spec for spec, _, _ in args.entries))
    elif args.models is None:
        args.models = [args.model] + ([] if args.no_timm else [f"timm:{args.model}"])
    if not args.entries:
        args.entries = [(spec, mode, dtype) for dtype in args.dtypes for mode in args.modes for spec in args.models
                        if combination_exists(mode, dtype)]  # fmt: skip
    else:
        bad = [e for e in args.entries if not combination_exists(e[1], e[2])]
        if bad:
            parser.error(f"--entries: {bad[0][1]} does not run in {bad[0][2]}")
    args.modes = list(dict.fromkeys(mode for _, mode, _ in args.entries))
    for spec in args.models:
        if not spec.startswith("timm:") and spec not in nextvit.list_models():
            parser.error(f"--models: {spec!r} is neither one of {nextvit.list_models()} nor timm:<name>")
    if args.reference is not None and args.reference not in args.models:
        parser.error(f"--reference {args.reference}: not one of the models of the run {args.models}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    for mode in args.modes:
        why = None if mode == "tensorrt" else mode_unavailable(mode, args.device)  # tensorrt: skipped, with why
        if why:
            parser.error(f"--modes {mode}: {why}")
    return args


def build_models(specs: list[str]) -> dict[str, torch.nn.Module]:
    """Every model of the run on the CPU in float32; timm's Next-ViT gets our weights of the same variant
    (when ours is in the run), so both compute the same thing."""
    models, ours_state = {}, {}
    for spec in specs:
        shared = ours_state.get(base_name(spec)) if spec.startswith("timm:nextvit") else None
        models[spec] = build_model(spec, shared)
        if not spec.startswith("timm:"):
            ours_state[spec] = models[spec].state_dict()
    return models


def print_header(args: argparse.Namespace, info: dict, gemm: dict[str, float], skip: dict[str, str | None]) -> None:
    print(f"# {info['cpu']} ({' '.join(info['cpu_isa']) or 'no AVX2'}), {info['logical_cores']} logical cores, "
          f"{info['torch_threads']} torch threads" + (f", {info['gpu']}" if args.device == "cuda" else ""))  # fmt: skip
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", commit {info['git_commit']}")
    rates = ", ".join(f"{dtype} {rate:.4g}" for dtype, rate in gemm.items())
    where = "a worker process each, turns" if args.isolation == "process" else "one process, calls"
    clock = "CUDA events around each call (PyTorch modes)" if args.device == "cuda" else "wall clock"
    print(f"# GEMM rate here (GFLOP/s): {rates}; warm-up {args.warmup} calls, then timed calls in alternation "
          f"({where} in alternation); {clock}")  # fmt: skip
    if args.device == "cuda" and "compile" in args.modes:
        print(f"# compile on CUDA: channels_last, inductor mode {args.compile_mode!r} with freezing")
    reference = f"; vs {args.reference}: to its row of the same mode and dtype" if args.reference else ""
    print(f"# median [p25-p75] ms per batch; ratio: to {args.models[0]}{reference}; /floor: to FLOPs / GEMM rate of "
          "the dtype; prepare: build, export, compile and warm-up time, not in the latency")  # fmt: skip
    for mode, why in skip.items():
        if why:
            print(f"# {mode}: skipped ({why})")


def prepare_entry(args: argparse.Namespace, spec: str, model, mode: str, dtype: str, x: torch.Tensor, workdir: Path):
    """One (model, mode, dtype) built, warmed and checked, in its worker process or in this one."""
    started = time.perf_counter()
    onnx_artifacts(spec, model, mode, x, workdir)  # made once, here, shared by the ONNX modes' workers
    if args.isolation == "process":
        timed = start_worker(spec, mode, dtype, x.shape[2], x.shape[0], workdir, device=args.device,
                             threads=args.threads, warmup=args.warmup, compile_mode=args.compile_mode)  # fmt: skip
    else:
        timed = prepare_timed(spec, model, mode, dtype, x, workdir, args.device, args.warmup, args.compile_mode)
    if mode in ONNX_MODES:  # the export is part of what the mode costs before its first call
        timed.prepare_s = time.perf_counter() - started
    return timed


def prepare_entries(args: argparse.Namespace, models: dict, x: torch.Tensor, workdir: Path, skip: dict,
                    failed: list[dict]) -> list[tuple[tuple[str, str, str], object]]:  # fmt: skip
    """Every entry of the run ready to time at this input; one that cannot run (e.g. a model with a
    fixed input size) is reported in `failed` and the others go on."""
    timed = []
    batch, size = x.shape[0], x.shape[2]
    for spec, mode, dtype in args.entries:
        if skip.get(mode):
            continue
        try:
            timed.append(((spec, mode, dtype), prepare_entry(args, spec, models[spec], mode, dtype, x, workdir)))
        except Exception as err:  # noqa: BLE001 - reported in the result, then go on
            why = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            failed.append(dict(model=spec, mode=mode, dtype=dtype, batch=batch, input_size=size, error=why))
            print(f"  {mode:<16} {dtype:<9} {spec:<26} cannot run: {why}", flush=True)
    return timed


def time_in_turns(args: argparse.Namespace, timed: list, runs: int) -> None:
    """`runs` rounds of one timed call per entry, in turn (workers rest between turns), then stop the workers."""
    try:
        for _ in range(runs):
            for _, t in timed:
                t.time_once()
                if args.isolation == "process" and len(timed) > 1:
                    time.sleep(args.pause_ms / 1e3)  # the last runtime's threads go to sleep
    finally:
        for _, t in timed:
            if isinstance(t, WorkerTimed):
                t.close()


def runs_at(args: argparse.Namespace, batch: int, size: int) -> int:
    """Timed calls per entry: fewer for large batches and inputs on the CPU (each takes seconds there)."""
    if args.device == "cuda":
        return max(5, args.runs)
    return max(5, args.runs // max(1, batch // 2) // (2 if size > 300 else 1))


def make_rows(args: argparse.Namespace, timed: list, flops: dict, gemm: dict[str, float], size: int,
              batch: int) -> list[dict]:  # fmt: skip
    """A row per timed entry: its timing, throughput, ratios (to the first model, the baseline, the
    reference model) and compute floor."""
    medians = {key: t.summary()["median_ms"] for key, t in timed}
    rows = []
    for (spec, mode, dtype), t in timed:
        row = dict(model=spec, mode=mode, dtype=dtype, device=args.device, batch=batch, input_size=size,
                   warmup=args.warmup, isolation=args.isolation, gflops=round(flops[spec, size] / 1e9, 4),
                   **t.summary())  # fmt: skip
        if mode == "compile" and args.device == "cuda":
            row["compile_mode"] = args.compile_mode
        row["images_per_s"] = significant(batch / (row["median_ms"] / 1e3)) if row["median_ms"] > 0 else None
        first = next(k for k in medians if k[1:] == (mode, dtype))
        row["ratio_to_first"] = round(row["median_ms"] / medians[first], 3)
        if args.baseline is not None:
            b_spec, b_mode, b_dtype = args.baseline
            key = (b_spec.replace("{model}", base_name(spec)), b_mode, b_dtype)
            if key in medians:
                row["baseline"] = ":".join(key)
                row["ratio_to_baseline"] = round(row["median_ms"] / medians[key], 3)
        if args.reference is not None and (args.reference, mode, dtype) in medians:
            row["reference"] = args.reference
            row["ratio_to_reference"] = round(row["median_ms"] / medians[args.reference, mode, dtype], 3)
        int8 = mode in INT8_MODES  # no int8 GEMM rate is measured: no floor
        row["floor_ms"] = None if int8 else floor_ms(flops[spec, size], batch, gemm[dtype])
        rows.append(row)
    return rows


def ms_text(ms: float) -> str:
    """A latency with 3 significant digits (GPU rows are a millisecond or less)."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def format_row(row: dict) -> str:
    """One report line: latency, throughput, ratios, floor, output check, preparation time."""
    to_floor = (
        f"{row['median_ms'] / row['floor_ms']:.3g} (floor {format_ms(row['floor_ms'])})" if row["floor_ms"] else "n/a"
    )
    line = (f"  {row['mode']:<16} {row['dtype']:<9} {row['model']:<26} {ms_text(row['median_ms']):>7} "
            f"[{ms_text(row['p25_ms'])}-{ms_text(row['p75_ms'])}]   {row['images_per_s']:.4g} img/s   "
            f"ratio {row['ratio_to_first']:.3f}   /floor {to_floor}")  # fmt: skip
    if "ratio_to_baseline" in row:
        line += f"   x{row['ratio_to_baseline']:.3f} baseline"
    if "ratio_to_reference" in row:
        line += f"   x{row['ratio_to_reference']:.3f} {base_name(row['reference'])}"
    if row["output_cosine"] is not None:
        line += f"   cosine {row['output_cosine']:.5f}"
    if row.get("prepare_s") is not None and row["prepare_s"] >= 1:
        line += f"   prepare {row['prepare_s']:.1f} s"
    if row.get("note"):
        line += f"   ({row['note']})"
    return line


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    models = build_models(args.models)
    # FLOPs once per model and size, before any timing, on the CPU float32 models (never moved)
    flops = {(spec, size): flops_or_zero(m, size) for size in args.input_sizes for spec, m in models.items()}
    gemm = {dtype: gemm_gflops(device=args.device, dtype=DTYPES[dtype]) for dtype in gemm_dtypes(args)}
    skip = {"tensorrt": tensorrt_unavailable(args.device)} if "tensorrt" in args.modes else {}
    print_header(args, info, gemm, skip)

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.input_sizes:
            for batch in args.batch_sizes:
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size * 1000 + batch))
                for dtype in gemm:  # the best rate seen so far: a shared machine drifts
                    gemm[dtype] = max(gemm[dtype], gemm_gflops(device=args.device, dtype=DTYPES[dtype]))
                print(f"\n{size}x{size}, batch {batch}", flush=True)
                timed = prepare_entries(args, models, x, Path(tmp), skip, failed)
                time_in_turns(args, timed, runs_at(args, batch, size))
                for row in make_rows(args, timed, flops, gemm, size, batch):
                    rows.append(row)
                    print(format_row(row), flush=True)
                torch._dynamo.reset()

    for row in rows:  # floors against the best GEMM rate of their dtype seen in the whole run (none for int8)
        if row["mode"] not in INT8_MODES:
            row["floor_ms"] = floor_ms(flops[row["model"], row["input_size"]], row["batch"], gemm[row["dtype"]])
    gemm = {dtype: float(f"{rate:.4g}") for dtype, rate in gemm.items()}
    command = ["deployment/benchmark.py", *(sys.argv[1:] if args.argv is None else args.argv)]
    return dict(models=args.models, gemm_gflops=gemm, machine=info, skipped=skip, failed=failed, rows=rows,
                command=command, isolation=args.isolation, baseline=":".join(args.baseline) if args.baseline else None,
                reference=args.reference, compile_mode=args.compile_mode)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.output:
        write_json(result, args.output)
        print(f"\nwrote {args.output}")
    if args.csv and result["rows"]:
        write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    if args.markdown and result["rows"]:
        write_markdown(result, args.markdown)
        print(f"wrote {args.markdown}")
    if args.chart:
        try:
            draw_chart(result, args.chart, args.chart_mode)
        except ValueError as err:
            raise SystemExit(f"--chart: {err}") from None
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
