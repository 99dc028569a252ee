"""Build a TensorRT engine of Next-ViT, check it against PyTorch, and profile it.

    python deployment/export_tensorrt_engine.py --model nextvit_small --batch-size 8 --image-size 224 \\
        --datatype fp16 --profile True --trtexec-path /usr/bin/trtexec --checkpoint nextvit_small_in1k_224.pth
    python deployment/export_tensorrt_engine.py --model nextvit_small --checkpoint ckpt.pth --datatype int8 \\
        --calib-dir calibration_images/
    python deployment/export_tensorrt_engine.py --onnx model.onnx --batch-size 8 --profile
    python deployment/quantize.py --model nextvit_small --checkpoint ckpt.pth --calib-dir train/ --target tensorrt \
        --output small_qdq.onnx
    python deployment/export_tensorrt_engine.py --onnx small_qdq.onnx --datatype int8 --checkpoint ckpt.pth

Steps:

1. TensorRT and a GPU must be here: the `tensorrt` Python module or `trtexec` (`--trtexec-path`,
   or on PATH), and an NVIDIA GPU. Without them the script says so in one sentence and exits
   with status 3, before doing any work.
2. ONNX: the folded model is exported afresh next to the engine (`<engine>.onnx`, checked with
   ONNX Runtime, with its own sidecar), never reused from an earlier run; `--onnx PATH` uses a
   given file instead.
3. Engine: built by the TensorRT Python API when it is importable (or `--builder python`), else
   by trtexec, run as an argument list. fp32, fp16, or int8: explicitly quantized from a QDQ model
   of deployment/quantize.py (`--onnx`, the recommended path: calibrated once, on your images, and
   checked for accuracy there), calibrated on `--calib-dir` images through the Python API, or with
   trtexec built uncalibrated, which is labelled latency-only (its accuracy is meaningless).
4. Check: the engine runs on the same input as PyTorch and the largest difference is compared
   with `--atol + --rtol * max|reference|` (defaults by datatype; int8 is reported, not enforced).
5. Profile (`--profile`): by the TensorRT that built the engine (an engine loads only in the
   TensorRT version that built it): trtexec's performance summary (mean, median, p99 latency,
   throughput) for a trtexec-built engine, CUDA-event timings through the Python runtime for one
   built by the Python API, whatever trtexec is on PATH. `--threads N` (trtexec's `--infStreams`
   from TensorRT 10, `--streams` before) and `--dumpProfile` are trtexec's, so with them `auto`
   builds with trtexec.

The steps are `nextvit.export.tensorrt.build_and_check_engine`; `<engine>.json` records all of
it. Exit status: 0 success, 1 check failed, 2 usage, 3 no TensorRT
or no GPU here. Runs from any directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    DEFAULT_OPSET,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    FLAGS,
    MIN_DYNAMO_OPSET,
    ExportError,
    ExportSource,
    HelpFormatter,
    add_bool_flag,
    add_source_args,
    check_opset,
    check_source_args,
    cli_main,
    default_stem,
    image_hw,
    onnx_is_quantized,
    report_source,
    source_from_args,
    write_sidecar,
)
from nextvit.export.tensorrt import EngineOptions, build_and_check_engine, find_toolchain


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build a TensorRT engine of Next-ViT from ONNX, check it against PyTorch and profile it.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser, checkpoint_optional_with="--onnx")
    parser.add_argument("--datatype", choices=("fp16", "int8", "fp32"), default="fp16", help="engine precision")
    parser.add_argument(
        "--opset-version",
        type=int,
        default=None,
        help=f"opset of the exported ONNX (default: {DEFAULT_OPSET} with torchscript, {MIN_DYNAMO_OPSET} with dynamo)",
    )
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="ONNX exporter")
    parser.add_argument("--onnx", type=Path, default=None, help="build from this ONNX file instead of exporting")
    parser.add_argument(
        "--builder",
        choices=("auto", "python", "trtexec"),
        default="auto",
        help="auto: trtexec when --trtexec-path is given or --profile asks for --threads/--dumpProfile, "
        "else the tensorrt module if importable, else trtexec",
    )
    parser.add_argument("--trtexec-path", default=None, help="trtexec executable (default: found on PATH)")
    parser.add_argument("--calib-dir", type=Path, default=None, help="images to calibrate int8 on (Python API)")
    parser.add_argument(
        "--calib-images",
        "--calib-max-images",
        dest="calib_images",
        type=int,
        default=512,
        help="calibrate on at most this many images, drawn across class folders (as quantize.py's --calib-images)",
    )
    add_bool_flag(parser, "--profile", False, "measure latency (--profile, --no-profile, or --profile True/False)")
    add_bool_flag(parser, "--dumpProfile", False, "print trtexec's per-layer profile")
    parser.add_argument(
        "--threads", type=int, default=1, help="trtexec streams (--infStreams from TensorRT 10), each on its own thread"
    )
    parser.add_argument("--warmUp", type=int, default=200, help="warm-up before timing, in milliseconds")
    parser.add_argument("--iterations", type=int, default=100, help="timed engine runs (at least)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args, allow_no_weights=args.onnx is not None)
    if args.opset_version is None:
        args.opset_version = MIN_DYNAMO_OPSET if args.exporter == "dynamo" else DEFAULT_OPSET
    if args.calib_images < 1:
        parser.error(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.onnx is None:
        try:
            check_opset(args.opset_version, args.exporter)
        except ExportError as err:
            parser.error(err.describe(FLAGS))
    elif not args.onnx.is_file():
        parser.error(f"--onnx {args.onnx}: no such file")
    # a QDQ model from deployment/quantize.py (--target tensorrt) carries its own int8 scales:
    # TensorRT builds it as an explicitly quantized engine, nothing to calibrate
    explicit_qdq = args.onnx is not None and args.onnx.is_file() and onnx_is_quantized(args.onnx)
    if explicit_qdq and args.datatype != "int8":
        parser.error(f"--onnx {args.onnx} is quantized (QuantizeLinear/DequantizeLinear): use --datatype int8")
    if explicit_qdq and args.calib_dir is not None:
        parser.error(f"--onnx {args.onnx} is already quantized: --calib-dir does not apply")
    if args.calib_dir is not None and args.datatype != "int8":
        parser.error("--calib-dir is for --datatype int8")
    if args.calib_dir is not None and not args.calib_dir.is_dir():
        parser.error(f"--calib-dir {args.calib_dir}: no such folder")

    trtexec_only = [flag for flag, on in (("--threads", args.threads > 1), ("--dumpProfile", args.dumpProfile)) if on]
    trtexec_only = trtexec_only if args.profile else []
    # before any work: exits 3 without TensorRT or a GPU
    tools = find_toolchain(args.builder, args.trtexec_path, prefer_trtexec=bool(trtexec_only) and not args.calib_dir)
    builder = tools["builder"]
    if builder == "python" and trtexec_only:
        parser.error(
            f"{' and '.join(trtexec_only)} are trtexec's profile options, but an engine built by the TensorRT "
            "Python API is timed by that TensorRT's own runtime (a trtexec of another version cannot load it): "
            "drop them, or pass --builder trtexec"
        )
    if args.calib_dir is not None and builder != "python":
        parser.error("--calib-dir needs the tensorrt Python module (trtexec cannot calibrate from images)")
    if args.datatype == "int8" and builder == "python" and args.calib_dir is None and not explicit_qdq:
        parser.error(
            "--datatype int8 with the TensorRT Python API needs --calib-dir (images to calibrate on); "
            "--builder trtexec builds an uncalibrated, latency-only int8 engine"
        )

    source: ExportSource | None = None
    if args.checkpoint is not None or args.random_weights:
        source = source_from_args(args)
        report_source(source)
    if source is not None:
        stem, shape = default_stem(source.name, source.image_size, args.features), source.input_shape
    else:  # an ONNX file alone: its input is the flags' (224 by default)
        stem, shape = args.onnx.stem, (args.batch_size, 3, *image_hw(args.image_size or [224]))
    output = args.output or Path(f"{stem}_{args.datatype}.trt")
    options = EngineOptions(
        datatype=args.datatype,
        shape=shape,
        opset=args.opset_version,
        exporter=args.exporter,
        calib_dir=args.calib_dir,
        calib_max_images=args.calib_images,
        features=source.features if source is not None else args.features,
        atol=args.atol,
        rtol=args.rtol,
        profile=args.profile,
        warmup_ms=args.warmUp,
        iterations=args.iterations,
        threads=args.threads,
        dump_profile=args.dumpProfile,
    )
    record = build_and_check_engine(
        output, tools=tools, options=options, source=source, onnx_path=args.onnx,
        log=lambda message: print(message, flush=True),
    )  # fmt: skip
    write_sidecar(output, record)
    check = record["check"]
    if check.get("passed") is False:
        print(f"error: the engine differs from PyTorch by {check['max_abs_diff']:.3g} (max abs)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


if __name__ == "__main__":
    cli_main(main)
