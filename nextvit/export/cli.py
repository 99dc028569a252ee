"""The command-line layer of the deployment scripts: shared flags, and library errors as flags and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..images import MAX_IMAGE_PIXELS
from ..loading import LoadError
from ..model import VARIANTS
from ..preprocess import CROP_PCT, INTERPOLATIONS, MIN_IMAGE_SIDE, ConfigError, image_size_hw
from ..records import read_class_names_file
from .errors import EXIT_USAGE, ExportError
from .source import ExportSource, load_source

__all__ = [
    "FLAGS",
    "HelpFormatter",
    "check_image_size_flag",
    "parse_bool",
    "add_bool_flag",
    "add_source_args",
    "add_preprocessing_args",
    "add_image_reading_args",
    "check_image_reading_args",
    "preprocessing_overrides",
    "read_class_names",
    "check_source_args",
    "source_from_args",
    "report_source",
    "check_summary",
    "cli_main",
]

# library parameter -> the flag that sets it, for error messages
FLAGS = {
    "model": "--model",
    "checkpoint": "--checkpoint",
    "num_classes": "--num-classes",
    "image_size": "--image-size",
    "batch_size": "--batch-size",
    "features": "--features",
    "opset": "--opset-version",
    "exporter": "--exporter",
    "onnx": "--onnx",
    "trtexec_path": "--trtexec-path",
    "builder": "--builder",
    "calib_dir": "--calib-dir",
    "precision": "--precision",
    "kv_pool": "--kv-pool",
    "class_names": "--class-names",
    "calib_max_images": "--calib-images",
    "max_drop": "--max-drop",
    "output": "--output",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each flag's default, added only where its help does not already say it and
    there is one to show (no "(default: ...) (default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def check_image_size_flag(parser: argparse.ArgumentParser, sizes: list[int] | None, flag: str = "--image-size") -> None:
    """Refuse an input size the model cannot take (argparse's exit code 2), naming the flag."""
    if sizes is None:
        return
    try:
        image_size_hw(sizes, MIN_IMAGE_SIDE)
    except ConfigError as err:
        parser.error(f"{flag} {' '.join(map(str, sizes))}: {err}")


def parse_bool(value: str | bool) -> bool:
    """'true/false', 'yes/no', 'on/off', '1/0' (any case): the original scripts passed `--profile False`."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """`--name`, `--no-name`, and for compatibility `--name True|False|1|0`."""
    dest = name.lstrip("-").replace("-", "_")
    parser.add_argument(name, dest=dest, nargs="?", const=True, default=default, type=parse_bool, help=help)
    parser.add_argument("--no-" + name.lstrip("-"), dest=dest, action="store_false", help=argparse.SUPPRESS)


def add_source_args(parser: argparse.ArgumentParser, checkpoint_optional_with: str | None = None) -> None:
    """The flags every export script takes: which model, which weights, which input, which check."""
    parser.add_argument(
        "--model",
        default=None,
        choices=sorted(VARIANTS),
        help="variant to export (default: the checkpoint's, from config.json beside it, its metadata or its weights; "
        "nextvit_small for --random-weights)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="input size: one int for a square input, or two (height width), e.g. --image-size 800 1344 "
        "(default: the run's, from config.json beside --checkpoint or the checkpoint's training args, else 224)",
    )
    required = "required unless --random-weights" + (
        f" or {checkpoint_optional_with}" if checkpoint_optional_with else ""
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"weights to export ({required}): ByteDance .pth, timm .safetensors/.pth, or this package's files",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="export randomly initialised weights on purpose: only good for latency measurements",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the head (default: the checkpoint's; 1000 with --random-weights; 0 for pooled features)",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="export the backbone for detection/segmentation: the 4 stage outputs (strides 4, 8, 16, 32)",
    )
    parser.add_argument("--no-fold", action="store_true", help="keep the BatchNorms instead of folding them")
    parser.add_argument(
        "--kv-pool", choices=("1d", "2d"), default=None, help="E-MHSA pooling (default: the checkpoint's, else 1d)"
    )
    add_preprocessing_args(parser)
    parser.add_argument("--output", type=Path, default=None, help="output file (default: named after the model)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance of the check against PyTorch")
    parser.add_argument(
        "--rtol", type=float, default=None, help="tolerance relative to the largest reference output value"
    )


def add_preprocessing_args(parser: argparse.ArgumentParser) -> None:
    """Flags over the recorded eval preprocessing and class names (config.json or a sidecar)."""
    group = parser.add_argument_group(
        "preprocessing and class names (default: config.json beside the checkpoint, or the model's sidecar)"
    )
    group.add_argument("--crop-pct", type=float, default=None, help=f"center crop fraction (else {CROP_PCT})")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter (else bicubic)")
    group.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="else ImageNet's")
    group.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="else ImageNet's")
    group.add_argument(
        "--class-names", type=Path, default=None, metavar="FILE", help="a text file with one class name per line"
    )


def add_image_reading_args(parser: argparse.ArgumentParser) -> None:
    """--skip-corrupt and --max-image-pixels: what becomes of an image that cannot be used
    (`nextvit.images.ImageReader`), for every script that reads image files."""
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable images (counted) instead of stopping"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help="refuse (or with --skip-corrupt skip) images with more pixels than this, before decoding them "
        "(default: PIL's own limit, %(default)s)",
    )


def check_image_reading_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_image_pixels < 1:
        parser.error(f"--max-image-pixels must be at least 1, got {args.max_image_pixels}")


def preprocessing_overrides(args: argparse.Namespace) -> dict:
    """The preprocessing settings given on the command line (for `Preprocessing.override`)."""
    return {k: getattr(args, k) for k in ("crop_pct", "interpolation", "mean", "std") if getattr(args, k) is not None}


def read_class_names(path: Path | None) -> list[str] | None:
    """Class names from the text file of --class-names (one per line), or None without the flag."""
    if path is None:
        return None
    try:
        return read_class_names_file(path)
    except ConfigError as err:
        raise ExportError(
            str(err).removeprefix(f"{path}: "), EXIT_USAGE, param="class_names", value=str(path)
        ) from None


def check_source_args(parser: argparse.ArgumentParser, args: argparse.Namespace, *, allow_no_weights: bool = False):
    """Refuse what cannot be right before any work is done (argparse's exit code 2). What the flags
    leave unset is decided when the checkpoint is loaded (`nextvit.loading`)."""
    if args.checkpoint is not None and args.random_weights:
        parser.error("--checkpoint and --random-weights exclude each other")
    if args.checkpoint is None and not args.random_weights and not allow_no_weights:
        parser.error(
            "--checkpoint is required: an export without trained weights is only good for latency; "
            "pass --random-weights to export random weights on purpose"
        )
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        parser.error(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
    if args.class_names is not None and not args.class_names.is_file():
        parser.error(f"--class-names {args.class_names}: no such file")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    check_image_size_flag(parser, args.image_size)
    if args.num_classes is not None and args.num_classes < 0:
        parser.error(f"--num-classes must be 0 or more, got {args.num_classes}")
    if args.features and args.num_classes:
        parser.error("--features exports the stage outputs: --num-classes does not apply")


def source_from_args(args: argparse.Namespace, input_name: str = "input") -> ExportSource:
    """`load_source` from the flags of `add_source_args` (what every deployment script does first)."""
    return load_source(
        args.model,
        args.checkpoint,
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_classes=args.num_classes,
        features=args.features,
        fold=not args.no_fold,
        input_name=input_name,
        kv_pool=args.kv_pool,
        preprocessing=preprocessing_overrides(args),
        class_names=read_class_names(args.class_names),
    )


def report_source(source: ExportSource) -> None:
    """Say on stderr what was loaded and where each setting came from, and the notes of the load."""
    if source.checkpoint is None:
        print("note: exporting random weights (--random-weights): for latency measurements only", file=sys.stderr)
    elif source.decided_from:
        h, w = source.image_size
        where = ", ".join(f"{what.replace('_', ' ')} from {origin}" for what, origin in source.decided_from.items())
        print(f"note: {source.name} at {h}x{w}, {source.num_classes} classes ({where})", file=sys.stderr)
    for note in source.notes:
        print(f"note: {note}", file=sys.stderr)


def check_summary(check: dict, exact: bool, min_cosine: float) -> str:
    """'passed: max abs diff ...' (a float32 artifact) or 'FAILED: logit cosine ...' (a low-precision one)."""
    verdict = "passed" if check["passed"] else "FAILED"
    if exact:
        return f"{verdict}: max abs diff {check['max_abs_diff']:.3g}"
    return f"{verdict}: logit cosine {check['cosine_min']:.5f} (min {min_cosine})"


def cli_main(main: Callable[[], int], flags: dict[str, str] | None = None) -> None:
    """Run a script's main: known failures become one line on stderr and an exit code, not a traceback.

    A library error about a parameter is reported under the script's flag for it (`FLAGS`, updated
    by `flags`).
    """
    from ..checkpoint import CheckpointError

    names = {**FLAGS, **(flags or {})}
    try:
        code = main()
    except ExportError as err:
        print(f"error: {err.describe(names)}", file=sys.stderr)
        code = err.exit_code
    except LoadError as err:
        print(f"error: {err.describe(names)}", file=sys.stderr)
        code = EXIT_USAGE
    except (CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
