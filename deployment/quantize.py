"""Static int8 quantization of Next-ViT: a QDQ ONNX model calibrated on your images, checked on them.

    python deployment/quantize.py --model nextvit_small --checkpoint nextvit_small_in1k_224.pth \\
        --calib-dir /data/imagenet/train --calib-images 512 --eval-dir /data/imagenet/val --max-drop 0.5
    python deployment/quantize.py --model nextvit_small --checkpoint ckpt.pth --calib-dir train/ --target tensorrt

The checkpoint is folded and exported to fp32 ONNX, calibrated with ONNX Runtime on `--calib-images`
images of `--calib-dir` (spread over its class folders) through the eval preprocessing (resize to
size/crop_pct, bicubic, center crop, ImageNet mean/std; `config.json` beside a checkpoint written by
classification/main.py, or a training checkpoint's own args, supply the variant, size, crop and class
names), and rewritten as QDQ with
per-channel int8 weights around every op type ONNX Runtime quantizes (`--ops conv-matmul`: only
the weight layers, slower). `--target tensorrt` makes activations symmetric int8, as TensorRT's explicit quantization
needs (build it with export_tensorrt_engine.py --onnx FILE --int8).

With `--eval-dir` (an ImageFolder of the classes the model was trained on) fp32 and int8 top-1,
their agreement and the logits' cosine are measured, with 95% intervals, and written to the
sidecar; a drop above `--max-drop` points (0.5) exits with status 1 and writes nothing. With n
images one image is 100/n points, and the drop's interval depends on how many images flip between
fp32 and int8: with 1-2% flipping, 2,000 images give about +-0.5 points, 10,000 about +-0.2 (a note
says when the interval is wider than half the gate). An unreadable image (or
one above --max-image-pixels) stops the run with its name, or with --skip-corrupt is left out and
counted (in the sidecar's `skipped_images`). Exit codes: 0 done, 1 accuracy drop too large, 2 bad input
(flags, folders, checkpoint, images), 3 ONNX Runtime missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    FLAGS,
    ExportError,
    HelpFormatter,
    add_bool_flag,
    add_image_reading_args,
    add_source_args,
    check_image_reading_args,
    check_source_args,
    cli_main,
    default_stem,
    report_source,
    source_from_args,
    write_sidecar,
)
from nextvit.export.quantize import (
    CALIBRATION_METHODS,
    DEFAULT_KEEP_FP32,
    QUANTIZED_OPS,
    QuantizeError,
    quantize_and_check,
)
from nextvit.export.sensitivity import SENSITIVITY_MODES, sensitivity_of_source
from nextvit.images import ImageFileError, ImageReader, find_images, labelled_images
from nextvit.preprocess import Preprocessing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Quantize Next-ViT to a static int8 QDQ ONNX model, calibrated and evaluated on image folders.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument(
        "--calib-dir", type=Path, required=True, help="images to calibrate on (an ImageFolder or any tree)"
    )
    parser.add_argument("--calib-images", type=int, default=256, help="how many calibration images to use")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax", help="activation ranges from")
    parser.add_argument(
        "--target",
        choices=("cpu", "tensorrt"),
        default="cpu",
        help="cpu: uint8 activations for ONNX Runtime/OpenVINO; tensorrt: symmetric int8 activations",
    )
    parser.add_argument(
        "--reduce-range",
        choices=("auto", "on", "off"),
        default="auto",
        help="7-bit weights, for x86 CPUs without VNNI (auto: from this CPU's flags)",
    )
    add_bool_flag(parser, "--per-channel", True, "one weight scale per output channel")
    parser.add_argument("--eval-dir", type=Path, default=None, help="labelled images (ImageFolder) to measure top-1 on")
    parser.add_argument(
        "--ops",
        choices=tuple(QUANTIZED_OPS),
        default="all",
        help="op types to quantize: all (every type ONNX Runtime quantizes; activations stay int8 between layers) "
        "or conv-matmul (only the weight layers)",
    )
    parser.add_argument(
        "--quantize-head", action="store_true", help="quantize the classifier too (default: it stays fp32)"
    )
    parser.add_argument(
        "--keep-fp32",
        nargs="*",
        default=None,
        metavar="GROUP",
        help="layer groups left in fp32, by stage and block part: stem, stages.<i>.{patch_embed,mhca,e_mhsa,"
        "projection,mlp,block}, norm (see --sensitivity); recorded in the sidecar. Default: "
        + " ".join(DEFAULT_KEEP_FP32)
        + ", the one group that int8 hurt on the demo's model (deployment/README.md); the flag alone: none",
    )
    parser.add_argument(
        "--sensitivity",
        choices=SENSITIVITY_MODES,
        default=None,
        help="write no model: measure on --eval-dir the top-1 drop with each layer group kept in fp32 (keep-fp32) "
        "or alone in int8 (int8-only), and write the table as JSON to --output (default <stem>_int8_sensitivity.json)",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        help="largest top-1 drop (points) accepted on --eval-dir (10,000 images see about 0.2 points)",
    )
    parser.add_argument("--latency-runs", type=int, default=30, help="timed ONNX Runtime calls per model (0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images are drawn")
    add_image_reading_args(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag values that cannot work: argparse's one-line error and exit code 2, before any work."""
    check_source_args(parser, args)
    if args.calib_images < 1:
        parser.error(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.features and args.eval_dir is not None:
        parser.error("--eval-dir measures classification accuracy: it does not apply to --features")
    if args.max_drop < 0:
        parser.error(f"--max-drop must be 0 or more, got {args.max_drop}")
    if args.sensitivity and args.eval_dir is None:
        parser.error("--sensitivity measures top-1 on labelled images: give --eval-dir")


def quantize_options(args: argparse.Namespace) -> dict:
    """The recipe the flags ask for, as `quantize_qdq`'s keyword arguments."""
    return dict(
        method=args.calib_method,
        per_channel=args.per_channel,
        target=args.target,
        reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range],
        ops=args.ops,
        quantize_head=args.quantize_head,
        keep_fp32=args.keep_fp32,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("error: ONNX Runtime is not installed (pip install onnxruntime); nothing was written", file=sys.stderr)
        return EXIT_UNAVAILABLE

    if args.image_size is not None and len(args.image_size) != 1:
        parser.error("--image-size: quantization calibrates on square center crops, give one size")
    check_image_reading_args(parser, args)
    try:
        calib = find_images(args.calib_dir, args.calib_images, args.seed, flag="--calib-dir")
    except ImageFileError as err:
        return _error(f"{err}; nothing was written")

    source = source_from_args(args)
    report_source(source)
    samples = None
    if args.eval_dir is not None:
        try:
            samples, _ = labelled_images(args.eval_dir, source.num_classes, source.class_names, flag="--eval-dir")
        except ImageFileError as err:
            return _error(f"{err}; nothing was written")
        if len(samples) < 2000:
            print(
                f"note: {len(samples)} evaluation images: one image is {100 / len(samples):.2f} points, too coarse to "
                "see a 0.5-point drop (use 2,000 or more)",
                file=sys.stderr,
            )
    suffix = "_int8_sensitivity.json" if args.sensitivity else "_int8.onnx"
    output = args.output or Path(default_stem(source.name, source.image_size, args.features) + suffix)
    prep = source.preprocessing or Preprocessing(source.image_size)  # features: the crop the checks use
    read = ImageReader(prep.array, args.skip_corrupt, args.max_image_pixels)
    print(f"calibration images from {args.calib_dir}" + (f", evaluation on {args.eval_dir}" if samples else ""))
    options = quantize_options(args)
    if args.sensitivity:
        return _sensitivity(args, source, output, calib, read, samples, options)
    try:
        record = quantize_and_check(
            source,
            output,
            calib,
            read,
            **options,
            eval_samples=samples,
            max_drop=args.max_drop,
            latency_runs=args.latency_runs,
            record_extra=dict(calib_dir=str(args.calib_dir)),
        )
    except ExportError as err:  # a failed check: one line, nothing written
        return _error(err.describe(FLAGS), err.exit_code)
    except (ImageFileError, QuantizeError) as err:
        return _error(f"{err}; nothing was written")
    if "accuracy" in record:
        record["accuracy"]["eval_dir"] = str(args.eval_dir)
    skipped = sorted(set(read.skipped))  # calibration may read an image more than once
    record["skipped_images"] = dict(count=len(skipped), files=skipped[:20])
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", file=sys.stderr)
    write_sidecar(output, record)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB) and {output.name}.json")
    return EXIT_OK


def _sensitivity(args, source, output: Path, calib, read, samples, options: dict) -> int:
    """--sensitivity: the per-group table (nextvit.export.sensitivity), written as JSON to `output`."""
    import json

    from nextvit.files import atomic_write_bytes

    try:
        report = sensitivity_of_source(source, calib, read, samples, mode=args.sensitivity, **options)
    except ExportError as err:
        return _error(err.describe(FLAGS), err.exit_code)
    except (ImageFileError, QuantizeError) as err:
        return _error(f"{err}; nothing was written")
    report.update(checkpoint=str(args.checkpoint), calib_dir=str(args.calib_dir), eval_dir=str(args.eval_dir))
    atomic_write_bytes(output, (json.dumps(report, indent=1) + "\n").encode())
    print(f"wrote {output}")
    return EXIT_OK


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    cli_main(main)
