"""Export Next-ViT to OpenVINO IR (fp32, bf16-hinted or int8), check it against PyTorch, time it.

    python deployment/export_openvino.py --model nextvit_small --checkpoint nextvit_small_in1k_224.pth
    python deployment/export_openvino.py --model nextvit_small --checkpoint ckpt.pth --precision bf16
    python deployment/export_onnx.py ... ; python deployment/quantize.py ... --output small_int8.onnx
    python deployment/export_openvino.py --model nextvit_small --checkpoint ckpt.pth --precision int8 \\
        --onnx small_int8.onnx

fp32 and bf16 convert the folded fp32 ONNX export (made here) to `<output>.xml` + `.bin`; bf16 is
the same IR compiled with OpenVINO's bf16 inference hint (the sidecar records whether this CPU
honoured it). int8 converts the QDQ model that deployment/quantize.py wrote. The compiled model is
compared with the PyTorch fp32 model on ImageNet-range random images: fp32 within
--atol + --rtol * max|reference|, bf16 and int8 by the logits' cosine (--min-cosine). Exit codes:
0 done, 1 the check failed (the files are kept, the sidecar says so), 2 bad input, 3 OpenVINO missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    HelpFormatter,
    add_source_args,
    check_source_args,
    check_summary,
    cli_main,
    default_stem,
    report_source,
    source_from_args,
    write_sidecar,
)
from nextvit.export.openvino import PRECISIONS, export_and_check_openvino


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export Next-ViT to OpenVINO IR and check it against PyTorch.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="what the IR is compiled and checked in"
    )
    parser.add_argument(
        "--onnx", type=Path, default=None, help="convert this ONNX file (required for int8: a QDQ model)"
    )
    parser.add_argument("--min-cosine", type=float, default=0.99, help="bf16/int8: least logit cosine to PyTorch fp32")
    parser.add_argument("--latency-runs", type=int, default=30, help="timed calls at batch 1 (0: skip)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args)
    if args.precision == "int8" and args.onnx is None:
        parser.error("--precision int8 converts a QDQ ONNX model: make it with deployment/quantize.py, pass --onnx")
    if args.onnx is not None and not args.onnx.is_file():
        parser.error(f"--onnx {args.onnx}: no such file")
    if args.output is not None and args.output.suffix != ".xml":
        parser.error(f"--output {args.output}: OpenVINO IR is an .xml file (with a .bin beside it)")
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("error: OpenVINO is not installed (pip install openvino); nothing was written", file=sys.stderr)
        return EXIT_UNAVAILABLE

    source = source_from_args(args)
    report_source(source)
    default = default_stem(source.name, source.image_size, args.features) + f"_openvino_{args.precision}.xml"
    output = args.output or Path(default)
    record = export_and_check_openvino(
        source,
        output,
        precision=args.precision,
        onnx_path=args.onnx,
        atol=args.atol,
        rtol=args.rtol,
        min_cosine=args.min_cosine,
        latency_runs=args.latency_runs,
    )
    write_sidecar(output, record)
    summary = check_summary(record["check"], args.precision == "fp32", args.min_cosine)
    print(f"wrote {output} + {output.with_suffix('.bin').name}; check against PyTorch {summary}")
    return EXIT_OK if record["check"]["passed"] else EXIT_CHECK_FAILED


if __name__ == "__main__":
    cli_main(main)
