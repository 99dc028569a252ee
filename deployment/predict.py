"""Classify your images with any deployed form of a Next-ViT classifier.

    python deployment/predict.py output/demo_classification/nextvit_tiny_int8.onnx photos/ --topk 5
    python deployment/predict.py model.safetensors 'photos/**/*.jpg' --output predictions.csv
    python deployment/predict.py nextvit_small_224x224_openvino_bf16.xml img1.jpg img2.png --output out.jsonl

The model is a checkpoint (.pth/.safetensors; run in PyTorch with BatchNorm folded), an ONNX model
(fp32, or the int8 QDQ of quantize.py), an OpenVINO IR (.xml, any precision), a TensorRT engine
(.trt/.engine/.plan, where TensorRT and a GPU are) or a CoreML model (macOS). Images are files,
folders (searched recursively) or glob patterns. The preprocessing (input size, crop, resize
filter, mean/std) and the class names come from the model's sidecar (`<file>.json`, written by
every exporter) or from the `config.json` beside a checkpoint (written by classification/main.py);
the flags override them. Without either, the script stops and names the flags to pass.

Prints the top-k classes of each image (or writes CSV / JSON lines with --output) and images/s at
the end. Exit codes: 0 done, 2 bad input (model file, flags, an unreadable image without
--skip-corrupt), 3 the model's runtime is missing here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nextvit.images import ImageFileError, collect_images
from nextvit.predict import OUTPUT_FORMATS, PredictError, ResultWriter, load_predictor, predict_images
from nextvit.preprocess import INTERPOLATIONS

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Top-k classes of images with a Next-ViT checkpoint, ONNX, OpenVINO, TensorRT or CoreML model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the model file (.pth .safetensors .onnx .xml .trt .mlpackage)")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns (quote them)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    parser.add_argument("--topk", type=int, default=5, help="classes reported per image")
    parser.add_argument("--output", type=Path, default=None, help="write the predictions to this .csv or .jsonl file")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default=None, help="output format (default: from suffix)")
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable images (counted) instead of stopping"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of ONNX Runtime / OpenVINO / PyTorch")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    parser.add_argument("--quiet", action="store_true", help="print no per-image lines (with --output)")
    group = parser.add_argument_group("overrides (default: the model's sidecar or config.json)")
    group.add_argument("--image-size", type=int, nargs="+", default=None, metavar="SIZE", help="crop size (H [W])")
    group.add_argument("--crop-pct", type=float, default=None, help="resize the shorter side to size / crop_pct")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter")
    group.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"))
    group.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"))
    group.add_argument("--class-names", type=Path, default=None, metavar="FILE", help="one class name per line")
    group.add_argument("--num-classes", type=int, default=None, help="refuse a model with another class count")
    group.add_argument("--model-name", default=None, help="variant of a checkpoint without config.json")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    if args.image_size is not None and (len(args.image_size) not in (1, 2) or min(args.image_size) < 32):
        parser.error(f"--image-size takes one or two sides of at least 32 pixels, got {args.image_size}")
    fmt = args.format
    if args.output is not None and fmt is None:
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(args.output.suffix.lower())
        if fmt is None:
            parser.error(f"--output {args.output}: give a .csv or .jsonl file, or --format")
    class_names = None
    if args.class_names is not None:
        try:
            class_names = [n.strip() for n in args.class_names.read_text().splitlines() if n.strip()]
        except (OSError, UnicodeError) as err:
            parser.error(f"--class-names {args.class_names}: cannot read it ({err})")
        if not class_names:
            parser.error(f"--class-names {args.class_names}: holds no names (one per line)")
    try:
        images = collect_images(args.images)
    except ImageFileError as err:
        return _error(str(err))
    overrides = dict(input_size=args.image_size, crop_pct=args.crop_pct, interpolation=args.interpolation,
                     mean=args.mean, std=args.std)  # fmt: skip
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        predictor = load_predictor(
            args.model, preprocessing=overrides, class_names=class_names, num_classes=args.num_classes,
            model=args.model_name, threads=args.threads,
        )  # fmt: skip
    except PredictError as err:
        return _error(str(err), EXIT_UNAVAILABLE if err.unavailable else EXIT_USAGE)
    prep = predictor.preprocessing
    print(
        f"{predictor.artifact}: {predictor.runtime}; {predictor.num_classes} classes"
        f"{'' if predictor.class_names else ' (no names known: indices shown; --class-names FILE)'}; input "
        f"{prep.input_size[0]}x{prep.input_size[1]} (shorter side {prep.resize_shorter_side}, {prep.interpolation}, "
        f"center crop); {len(images)} image(s)",
        file=sys.stderr,
    )
    writer = ResultWriter(args.output, fmt, args.topk) if args.output is not None else None
    show = not (args.quiet and writer is not None)

    def on_prediction(pred) -> None:
        if writer is not None:
            writer.write(pred)
        if show:
            tops = ", ".join(f"{n} {p:.3f}" for n, p in zip(pred.names, pred.probabilities))
            print(f"{pred.path}: {tops}")

    bar, on_progress = _progress(len(images), enabled=writer is not None and not show)
    complete = False
    try:
        _, summary = predict_images(
            predictor, images, batch_size=args.batch_size, topk=args.topk, skip_corrupt=args.skip_corrupt,
            workers=args.workers, on_prediction=on_prediction, on_progress=on_progress,
        )  # fmt: skip
        complete = True
    except ImageFileError as err:
        return _error(f"{err}; stopped")
    except ValueError as err:
        return _error(str(err))
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close(complete)
            if not complete:
                print(f"the predictions made so far are in {writer.partial}", file=sys.stderr)
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s), e.g. {summary.skipped[0]}", file=sys.stderr)
    batch = predictor.fixed_batch or args.batch_size
    print(
        f"{summary.images} image(s) in {summary.seconds:.2f} s: {summary.images_per_s:.1f} images/s "
        f"(batch {batch}; model {summary.model_seconds:.2f} s, the rest decoding and preprocessing)"
        + (f"; wrote {args.output}" if writer is not None else ""),
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
