"""Inference latency of Next-ViT against timm's port and classic peers, in one process.

    python deployment/benchmark.py                       # nextvit_small vs timm's, 224, batch 1 and 8
    python deployment/benchmark.py --batch-sizes 1 --modes eager folded --runs 10
    python deployment/benchmark.py --models nextvit_small nextvit_base nextvit_large timm:resnet50 \\
        timm:convnext_tiny timm:efficientformer_l1 --input-sizes 224 384 --modes folded onnxruntime \\
        --output logs/benchmark_zoo_cpu.json --csv logs/benchmark_zoo_cpu.csv --chart images/latency_accuracy_cpu.png

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
* compile: folded, `torch.compile` (inductor) with freezing, under no_grad;
* onnxruntime: the folded model exported to ONNX (opset 17) and run by ONNX Runtime;
* onnxruntime_int8: that ONNX model quantized to static int8 QDQ (`nextvit.export.quantize`, per-channel
  weights, calibrated on random ImageNet-range inputs: latency only) and run by ONNX Runtime;
* openvino / openvino_int8: the same fp32 / int8 ONNX models compiled by OpenVINO for the CPU;
  with `--dtypes bfloat16`, the fp32 model under OpenVINO's bf16 precision hint;
* tensorrt: the folded model as a TensorRT engine (where TensorRT and a GPU exist; skipped otherwise).

dtypes: float32; bfloat16 and float16 for the PyTorch modes (the folded model runs oneDNN in bf16
where the CPU has bf16 units); bfloat16 for OpenVINO; float16 for TensorRT (an fp16 engine, the
paper's setting). The CPU's int8/bf16 instruction sets (VNNI, AVX512-BF16, AMX) are recorded with
the machine: they decide what the low-precision rows can gain. The int8 modes take float32
inputs (quantization happens inside the model).

The compute floor of a row is the model's FLOPs (counted once, on the CPU) divided by the
matrix-multiply rate this device reaches in a large GEMM of the row's dtype: no implementation in
that dtype can beat it by much (int8 rows have none). On CUDA, ONNX Runtime runs with its input and
outputs bound to GPU memory (IO binding), so its rows, like the PyTorch and TensorRT ones, hold no
host-device copies. Every row records the machine, library versions, threads, dtype, batch,
resolution, warm-up and run counts, and the git commit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import nextvit
from nextvit.benchmark.machine import floor_ms, gemm_gflops, machine_info
from nextvit.benchmark.report import draw_chart, markdown_table, write_csv
from nextvit.benchmark.runners import (
    DEFAULT_MODES,
    DTYPES,
    MODES,
    base_name,
    build_model,
    combination_exists,
    flops_or_zero,
    make_timed,
    onnx_artifacts,
    output_cosine,
    tensorrt_unavailable,
)
from nextvit.benchmark.workers import WorkerTimed, start_worker


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models(),
                        help="without --models: this model against timm's of the same name")  # fmt: skip
    parser.add_argument("--models", nargs="+", help="models to time together: nextvit_* or timm:<name>")
    parser.add_argument("--input-size", "--input-sizes", dest="input_sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES))
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model at batch 1 (fewer for larger)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="without --models: skip timm's model")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="also write one CSV row per measurement here")
    parser.add_argument("--chart", type=Path, default=None, help="draw a latency-accuracy chart (PNG) here")
    parser.add_argument("--chart-mode", default="folded", choices=MODES, help="the mode the chart plots")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown table of the rows here")
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
    flops = {(spec, size): flops_or_zero(m, size) for size in args.input_sizes for spec, m in models.items()}
    gemm = {dtype: gemm_gflops(device=args.device, dtype=DTYPES[dtype]) for dtype in gemm_dtypes(args)}
    skip = {"tensorrt": tensorrt_unavailable(args.device)} if "tensorrt" in args.modes else {}
    print(f"# {info['cpu']} ({' '.join(info['cpu_isa']) or 'no AVX2'}), {info['logical_cores']} logical cores, "
          f"{info['torch_threads']} torch threads" + (f", {info['gpu']}" if args.device == "cuda" else ""))  # fmt: skip
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", commit {info['git_commit']}")
    rates = ", ".join(f"{dtype} {rate:.4g}" for dtype, rate in gemm.items())
    where = "a worker process each, turns" if args.isolation == "process" else "one process, calls"
    print(
        f"# GEMM rate here (GFLOP/s): {rates}; warm-up {args.warmup} calls, then timed calls in alternation "
        f"({where} in alternation)"
    )
    print(f"# median [p25-p75] ms per batch; ratio: to {args.models[0]}; /floor: to FLOPs / GEMM rate of the dtype")
    for mode, why in skip.items():
        if why:
            print(f"# {mode}: skipped ({why})")

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.input_sizes:
            for batch in args.batch_sizes:
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size * 1000 + batch))
                for dtype in gemm:  # the best rate seen so far: a shared machine drifts
                    gemm[dtype] = max(gemm[dtype], gemm_gflops(device=args.device, dtype=DTYPES[dtype]))
                runs = max(5, args.runs // max(1, batch // 2) // (2 if size > 300 else 1))
                print(f"\n{size}x{size}, batch {batch}", flush=True)
                timed = []
                for spec, mode, dtype in args.entries:
                    if skip.get(mode):
                        continue
                    try:  # one model that cannot run here (e.g. a fixed input size) does not end the run
                        onnx_artifacts(spec, models[spec], mode, x, Path(tmp))  # made once, here
                        if args.isolation == "process":
                            t = start_worker(
                                spec,
                                mode,
                                dtype,
                                size,
                                batch,
                                Path(tmp),
                                device=args.device,
                                threads=args.threads,
                                warmup=args.warmup,
                            )
                        else:
                            t = make_timed(spec, models[spec], mode, dtype, x, Path(tmp), args.device)
                            t.warm(1 + args.warmup + (2 if mode == "compile" else 0))
                            t.cosine = output_cosine(t, models[spec], x)
                        timed.append(((spec, mode, dtype), t))
                    except Exception as err:  # noqa: BLE001 - reported in the result, then go on
                        why = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                        failed.append(dict(model=spec, mode=mode, dtype=dtype, batch=batch, input_size=size,
                                           error=why))  # fmt: skip
                        print(f"  {mode:<16} {dtype:<9} {spec:<26} cannot run: {why}", flush=True)
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
                medians = {key: t.summary()["median_ms"] for key, t in timed}
                for (spec, mode, dtype), t in timed:
                    first = next(k for k in medians if k[1:] == (mode, dtype))
                    row = dict(model=spec, mode=mode, dtype=dtype, device=args.device, batch=batch, input_size=size,
                               warmup=args.warmup, isolation=args.isolation, gflops=round(flops[spec, size] / 1e9, 4),
                               **t.summary())  # fmt: skip
                    row["ratio_to_first"] = round(row["median_ms"] / medians[first], 3)
                    if args.baseline is not None:
                        b_spec, b_mode, b_dtype = args.baseline
                        key = (b_spec.replace("{model}", base_name(spec)), b_mode, b_dtype)
                        if key in medians:
                            row["baseline"] = ":".join(key)
                            row["ratio_to_baseline"] = round(row["median_ms"] / medians[key], 3)
                    int8 = mode.endswith("_int8")  # no int8 GEMM rate is measured: no floor
                    row["floor_ms"] = None if int8 else floor_ms(flops[spec, size], batch, gemm[dtype])
                    rows.append(row)
                    to_floor = f"{row['median_ms'] / row['floor_ms']:.2f}" if row["floor_ms"] else "n/a"
                    to_base = f"   x{row['ratio_to_baseline']:.3f} baseline" if "ratio_to_baseline" in row else ""
                    if row["output_cosine"] is not None:
                        to_base += f"   cosine {row['output_cosine']:.5f}"
                    print(f"  {mode:<16} {dtype:<9} {spec:<26} {row['median_ms']:9.1f} "
                          f"[{row['p25_ms']:.1f}-{row['p75_ms']:.1f}]   ratio {row['ratio_to_first']:.3f}"
                          f"   /floor {to_floor}{to_base}", flush=True)  # fmt: skip
                torch._dynamo.reset()

    for row in rows:  # floors against the best GEMM rate of their dtype seen in the whole run (none for int8)
        if not row["mode"].endswith("_int8"):
            row["floor_ms"] = floor_ms(flops[row["model"], row["input_size"]], row["batch"], gemm[row["dtype"]])
    gemm = {dtype: float(f"{rate:.4g}") for dtype, rate in gemm.items()}
    command = ["deployment/benchmark.py", *(sys.argv[1:] if args.argv is None else args.argv)]
    return dict(models=args.models, gemm_gflops=gemm, machine=info, skipped=skip, failed=failed, rows=rows,
                command=command,
                isolation=args.isolation, baseline=":".join(args.baseline) if args.baseline else None)  # fmt: skip


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
    if args.markdown and result["rows"]:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(result))
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
