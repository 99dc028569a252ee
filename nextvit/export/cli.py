"""The command-line layer of the deployment scripts: shared flags, and library errors as flags and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..model import VARIANTS
from ..preprocess import CROP_PCT, INTERPOLATIONS, ConfigError, training_config
from .errors import EXIT_USAGE, ExportError
from .source import ExportSource, load_source

__all__ = [
    "FLAGS",
    "parse_bool",
    "add_bool_flag",
    "add_source_args",
    "add_preprocessing_args",
    "preprocessing_overrides",
    "read_class_names",
    "check_source_args",
    "source_from_args",
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
        help="variant to export (default: the `arch` of config.json beside --checkpoint, else nextvit_small)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="input size: one int for a square input, or two (height width), e.g. --image-size 800 1344 "
        "(default: the input_size of config.json beside --checkpoint, else 224)",
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


def preprocessing_overrides(args: argparse.Namespace) -> dict:
    """The preprocessing settings given on the command line (for `Preprocessing.override`)."""
    return {k: getattr(args, k) for k in ("crop_pct", "interpolation", "mean", "std") if getattr(args, k) is not None}


def read_class_names(path: Path | None) -> list[str] | None:
    """Class names from a text file, one per line (blank lines ignored)."""
    if path is None:
        return None
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeError) as err:
        raise ExportError(f"cannot read it ({err})", EXIT_USAGE, param="class_names", value=str(path)) from None
    if not names:
        raise ExportError("holds no class names (one per line)", EXIT_USAGE, param="class_names", value=str(path))
    return names


def check_source_args(parser: argparse.ArgumentParser, args: argparse.Namespace, *, allow_no_weights: bool = False):
    """Refuse what cannot be right before any work is done (argparse's exit code 2), and fill in
    `--model` and `--image-size` from the config.json beside the checkpoint when they are unset."""
    if args.checkpoint is not None and args.random_weights:
        parser.error("--checkpoint and --random-weights exclude each other")
    if args.checkpoint is None and not args.random_weights and not allow_no_weights:
        parser.error(
            "--checkpoint is required: an export without trained weights is only good for latency; "
            "pass --random-weights to export random weights on purpose"
        )
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    try:
        config = training_config(args.checkpoint)
    except ConfigError as err:
        parser.error(f"--checkpoint {args.checkpoint}: {err}")
    if args.model is None:
        args.model = config["arch"] if config.get("arch") in VARIANTS else "nextvit_small"
    if args.image_size is None:
        size = config.get("input_size", 224)
        args.image_size = list(size) if isinstance(size, (list, tuple)) else [int(size)]
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        parser.error(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
    if args.class_names is not None and not args.class_names.is_file():
        parser.error(f"--class-names {args.class_names}: no such file")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if len(args.image_size) not in (1, 2):
        parser.error(f"--image-size takes one size (square) or two (height width), got {args.image_size}")
    if min(args.image_size) < 32:
        parser.error(f"--image-size {' '.join(map(str, args.image_size))}: both sides must be at least 32 pixels")
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
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
