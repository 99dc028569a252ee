"""Export Next-ViT to ONNX, check it against PyTorch with ONNX Runtime, and record how it was made.

    python deployment/export_onnx.py --model nextvit_small --checkpoint nextvit_small_in1k_224.pth
    python deployment/export_onnx.py --model nextvit_small --checkpoint ckpt.pth --dynamic-batch --exporter dynamo
    python deployment/export_onnx.py --model nextvit_small --checkpoint ckpt.pth --features --image-size 800 1344

BatchNorms are folded first (`--no-fold` keeps them). The model is always exported afresh and
written atomically; an existing file at the output path is replaced. The result is run by ONNX
Runtime on the same input as the PyTorch model and the script exits with status 1 when the
largest difference is above `--atol + --rtol * max|reference|`. `<output>.json` records the
model, checkpoint (path and sha256), input, opset, preprocessing, exporter, versions and the
measured difference. Runs from any directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    DEFAULT_OPSET,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    MIN_DYNAMO_OPSET,
    ExportError,
    HelpFormatter,
    add_source_args,
    check_opset,
    check_source_args,
    cli_main,
    default_stem,
    export_and_check_onnx,
    report_source,
    sidecar_path,
    source_from_args,
    write_sidecar,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export Next-ViT to ONNX and check it against PyTorch with ONNX Runtime.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx.export(dynamo=False) (tracing, opsets 14+) or dynamo=True (torch.export, opsets 18+)",
    )
    parser.add_argument(
        "--opset-version",
        type=int,
        default=None,
        help=f"ONNX opset (default: {DEFAULT_OPSET} with torchscript, {MIN_DYNAMO_OPSET} with dynamo)",
    )
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim/onnxslim even when one is installed")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args)
    opset = args.opset_version or (MIN_DYNAMO_OPSET if args.exporter == "dynamo" else DEFAULT_OPSET)
    try:
        check_opset(opset, args.exporter)
    except ExportError as err:
        parser.error(str(err))
    atol = 1e-4 if args.atol is None else args.atol
    rtol = 1e-4 if args.rtol is None else args.rtol

    source = source_from_args(args)
    report_source(source)
    output = args.output or Path(default_stem(source.name, source.image_size, args.features) + ".onnx")
    record = export_and_check_onnx(
        source,
        output,
        opset=opset,
        exporter=args.exporter,
        dynamic_batch=args.dynamic_batch,
        simplify=not args.no_simplify,
        atol=atol,
        rtol=rtol,
    )
    write_sidecar(output, record)
    print(f"wrote {sidecar_path(output).name}")
    if not record["check"]["passed"]:
        check = record["check"]
        print(
            f"error: {output} differs from PyTorch by {check['max_abs_diff']:.3g} (max abs), above the tolerance"
            f" atol {atol} + rtol {rtol} * max|reference|",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK


if __name__ == "__main__":
    cli_main(main)
