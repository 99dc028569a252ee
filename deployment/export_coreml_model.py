"""Convert Next-ViT to a CoreML model, check it, and record how it was made.

    python deployment/export_coreml_model.py --model nextvit_small --batch-size 1 --image-size 224 \\
        --checkpoint nextvit_small_in1k_224.pth
    python deployment/export_coreml_model.py --model nextvit_small --checkpoint ckpt.pth --convert-to neuralnetwork
    python deployment/export_coreml_model.py --model nextvit_small --checkpoint ckpt.pth --features --image-size 512

The folded model (`--no-fold` keeps the BatchNorms) is traced with `torch.jit.trace` and converted
by coremltools, to an ML program (`.mlpackage`, default) or a neural network (`.mlmodel`).

Input (`--input-type`): ``image`` (default), an RGB image of 0-255 pixels with the ImageNet
normalisation built into the model (one image: ``--batch-size 1``), or ``tensor``, a normalised
float32 (B, 3, H, W) array. How the normalisation is split is explained in `nextvit/export/coreml.py`.

Checks: the traced model against the PyTorch model, the converted model's input and output
description (names, types, shapes) as written to disk, and on macOS a prediction against PyTorch
(elsewhere CoreML cannot run: the script says so and the sidecar `<output>.json` records it).
Runs from any directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    HelpFormatter,
    add_source_args,
    check_source_args,
    cli_main,
    default_stem,
    report_source,
    source_from_args,
    write_sidecar,
)
from nextvit.export.coreml import convert_and_check_coreml, import_coremltools


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert Next-ViT to CoreML (.mlpackage or .mlmodel) and check it.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument(
        "--convert-to",
        choices=("mlprogram", "neuralnetwork"),
        default="mlprogram",
        help="ML program (.mlpackage) or the older neural network format (.mlmodel)",
    )
    parser.add_argument(
        "--input-type",
        choices=("image", "tensor"),
        default="image",
        help="an RGB image with the ImageNet normalisation built in, or a normalised float tensor",
    )
    parser.add_argument(
        "--compute-precision",
        choices=("float16", "float32"),
        default="float16",
        help="precision of an ML program (neural networks decide at run time)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args)
    if args.input_type == "image" and args.batch_size != 1:
        parser.error(
            f"--batch-size {args.batch_size}: CoreML image inputs hold one image; "
            "use --batch-size 1 or --input-type tensor"
        )
    import_coremltools()  # exits 3 before any work when coremltools is missing
    suffix = ".mlpackage" if args.convert_to == "mlprogram" else ".mlmodel"
    if args.output is not None and args.output.suffix != suffix:
        parser.error(f"--output {args.output}: a {args.convert_to} is saved as {suffix}")

    source = source_from_args(args, input_name="image" if args.input_type == "image" else "input")
    report_source(source)
    output = args.output or Path(default_stem(source.name, source.image_size, args.features) + suffix)
    record = convert_and_check_coreml(
        source, output, convert_to=args.convert_to, input_type=args.input_type, compute_precision=args.compute_precision
    )
    write_sidecar(output, record)
    check = record["check"]
    print(f"wrote {output} and {output.name}.json (conversion {record['conversion_seconds']:.1f} s)")
    if check.get("passed") is False:
        print(f"error: CoreML differs from PyTorch by {check['max_abs_diff']:.3g} (max abs)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


if __name__ == "__main__":
    cli_main(main)
