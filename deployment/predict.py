"""Classify your images with any deployed form of a Next-ViT classifier.

    python deployment/predict.py output/demo_classification/nextvit_tiny_int8.onnx photos/ --topk 5
    python deployment/predict.py model.safetensors 'photos/**/*.jpg' --output predictions.csv
    python deployment/predict.py nextvit_small_224x224_openvino_bf16.xml img1.jpg img2.png --output out.jsonl
    python deployment/predict.py model.safetensors photos/ --device cuda --dtype fp16 --batch-size 64
    python deployment/predict.py nextvit_small_224x224_cuda_fp16.pt2 photos/ --batch-size 64

The model is a checkpoint (.pth/.safetensors; run in PyTorch with BatchNorm folded, on the CPU or
with --device cuda on a GPU, in --dtype), an AOTInductor package (.pt2 of export_aoti.py; runs on
the device and in the dtype it was compiled for), an ONNX model (fp32, or the int8 QDQ of
quantize.py), an OpenVINO IR (.xml, any precision), a TensorRT engine (.trt/.engine/.plan, where
TensorRT and a GPU are) or a CoreML model (macOS). On CUDA, batches are copied through pinned host
memory without blocking and a checkpoint runs in channels_last. Images are files,
folders (searched recursively) or glob patterns. The preprocessing (input size, crop, resize
filter, mean/std) and the class names come from the model's sidecar (`<file>.json`, written by
every exporter) or, for a checkpoint, from the `config.json` beside it (written by
classification/main.py) or the training args inside it; the flags override them. Where nothing
says the input size, the script stops and names the flags to pass.

Images are read upright (EXIF orientation), 16-bit images scaled to 8 bits, and an image of more
than --max-image-pixels pixels is refused before it is decoded. Prints the top-k classes of each
image (or writes CSV / JSON lines with --output, under a hidden partial name until the run is done)
and images/s at the end. Exit codes: 0 done, 2 bad input (model file, flags, an unreadable image
without --skip-corrupt, no image readable at all), 3 the model's runtime is missing here (a GPU
for --device cuda or a CUDA .pt2, TensorRT, CoreML).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.export import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    HelpFormatter,
    add_image_reading_args,
    check_image_reading_args,
    check_image_size_flag,
)
from nextvit.images import ImageFileError, collect_images
from nextvit.model import VARIANTS
from nextvit.predict import (
    OUTPUT_FORMATS,
    PREDICT_DEVICES,
    PREDICT_DTYPES,
    PredictError,
    Predictor,
    ResultWriter,
    load_predictor,
    predict_images,
)
from nextvit.preprocess import INTERPOLATIONS, ConfigError
from nextvit.records import read_class_names_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Top-k classes of images with a Next-ViT checkpoint, .pt2, ONNX, OpenVINO, TensorRT or CoreML "
        "model.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the model file (.pth .safetensors .pt2 .onnx .xml .trt .mlpackage)")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns (quote them)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    parser.add_argument("--topk", type=int, default=5, help="classes reported per image")
    parser.add_argument("--output", type=Path, default=None, help="write the predictions to this .csv or .jsonl file")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default=None, help="output format (default: from suffix)")
    add_image_reading_args(parser)
    parser.add_argument(
        "--device",
        choices=PREDICT_DEVICES,
        default=None,
        help="where a checkpoint runs (default: cpu; auto: cuda where there is a GPU); a .pt2 runs on the device it "
        "was compiled for and refuses another",
    )
    parser.add_argument(
        "--dtype",
        choices=PREDICT_DTYPES,
        default=None,
        help="what a checkpoint computes in (default: fp32); a .pt2 computes in the dtype compiled into it",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of ONNX Runtime / OpenVINO / PyTorch")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    parser.add_argument("--quiet", action="store_true", help="print no per-image lines (with --output)")
    group = parser.add_argument_group("overrides (default: the model's sidecar, config.json or training args)")
    group.add_argument("--image-size", type=int, nargs="+", default=None, metavar="SIZE", help="crop size (H [W])")
    group.add_argument("--crop-pct", type=float, default=None, help="resize the shorter side to size / crop_pct")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter")
    group.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"))
    group.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"))
    group.add_argument("--class-names", type=Path, default=None, metavar="FILE", help="one class name per line")
    group.add_argument("--num-classes", type=int, default=None, help="refuse a model with another class count")
    group.add_argument(
        "--model-name",
        default=None,
        choices=sorted(VARIANTS),
        help="variant of a checkpoint (default: from its config.json, training args or weights)",
    )
    return parser


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _progress(total: int, enabled: bool):
    """A progress bar on stderr (tqdm, which huggingface_hub brings), or nothing."""
    if not enabled or not sys.stderr.isatty():
        return None, lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda n: None
    bar = tqdm(total=total, unit="img", file=sys.stderr, leave=False)
    return bar, bar.update


def _checked_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The flags, with what cannot be right refused (argparse's exit code 2) and the output format set."""
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    check_image_reading_args(parser, args)
    check_image_size_flag(parser, args.image_size)
    if args.output is not None and args.format is None:
        args.format = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(args.output.suffix.lower())
        if args.format is None:
            parser.error(f"--output {args.output}: give a .csv or .jsonl file, or --format")
    args.names = None
    if args.class_names is not None:
        try:
            args.names = read_class_names_file(args.class_names)
        except ConfigError as err:
            parser.error(f"--class-names {err}")
    return args


def _load(args: argparse.Namespace) -> Predictor:
    """The model file as a `Predictor` (`PredictError` for what cannot be used), announced on stderr."""
    overrides = dict(input_size=args.image_size, crop_pct=args.crop_pct, interpolation=args.interpolation,
                     mean=args.mean, std=args.std)  # fmt: skip
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = load_predictor(
        args.model, preprocessing=overrides, class_names=args.names, num_classes=args.num_classes,
        model=args.model_name, threads=args.threads, device=args.device, dtype=args.dtype,
    )  # fmt: skip
    prep = predictor.preprocessing
    print(
        f"{predictor.artifact}: {predictor.runtime}; {predictor.num_classes} classes"
        f"{'' if predictor.class_names else ' (no names known: indices shown; --class-names FILE)'}; input "
        f"{prep.input_size[0]}x{prep.input_size[1]} (shorter side {prep.resize_shorter_side}, {prep.interpolation}, "
        "center crop)",
        file=sys.stderr,
    )
    for note in predictor.notes:
        print(f"note: {note}", file=sys.stderr)
    return predictor


def _run(args: argparse.Namespace, predictor: Predictor, images: list[Path]) -> int:
    """Predict every image, printing or writing each result; the output file takes its name only
    when the run completes, and a failed run leaves no file that looks like its result."""
    writer = ResultWriter(args.output, args.format, args.topk) if args.output is not None else None
    show = not (args.quiet and writer is not None)

    def on_prediction(pred) -> None:
        if writer is not None:
            writer.write(pred)
        if show:
            tops = ", ".join(f"{n} {p:.3f}" for n, p in zip(pred.names, pred.probabilities))
            print(f"{pred.path}: {tops}")

    bar, on_progress = _progress(len(images), enabled=writer is not None and not show)
    summary, failure = None, None
    try:
        _, summary = predict_images(
            predictor, images, batch_size=args.batch_size, topk=args.topk, skip_corrupt=args.skip_corrupt,
            max_pixels=args.max_image_pixels, workers=args.workers, on_prediction=on_prediction,
            on_progress=on_progress,
        )  # fmt: skip
    except ImageFileError as err:
        failure = f"{err}; stopped"
    except ValueError as err:
        failure = str(err)
    finally:
        if bar is not None:
            bar.close()
    if summary is not None and summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s), e.g. {summary.skipped[0]}", file=sys.stderr)
    if failure is None and summary.images == 0:
        failure = f"none of the {len(images)} image(s) could be read: nothing was predicted"
    kept = writer.close(complete=failure is None) if writer is not None else None
    if failure is not None:
        if kept is not None:
            print(f"the {writer.rows} prediction(s) made before the failure are in {kept}", file=sys.stderr)
        return _error(failure)
    batch = predictor.batch_size(args.batch_size)
    print(
        f"{summary.images} image(s) in {summary.seconds:.2f} s: {summary.images_per_s:.1f} images/s "
        f"(batch {batch}; model {summary.model_seconds:.2f} s, the rest decoding and preprocessing)"
        + (f"; wrote {args.output}" if writer is not None else ""),
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _checked_args(build_parser(), argv)
    try:
        images = collect_images(args.images)
    except ImageFileError as err:
        return _error(str(err))
    try:
        predictor = _load(args)
    except PredictError as err:
        return _error(str(err), EXIT_UNAVAILABLE if err.unavailable else EXIT_USAGE)
    print(f"{len(images)} image(s)", file=sys.stderr)
    return _run(args, predictor, images)


if __name__ == "__main__":
    sys.exit(main())
