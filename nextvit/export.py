"""What the deployment scripts share: the model to export, ONNX export and its check, provenance.

The scripts in `deployment/` (ONNX, CoreML, TensorRT) all follow the same steps, defined here once:

1. `load_source` builds the variant, loads the checkpoint through `nextvit.load_checkpoint` (any
   layout the package reads, matched by name and shape) and keeps that eval-mode model as the
   reference; the model to export is a folded copy (`nextvit.fold_batchnorm`) and, for dense
   tasks, a wrapper returning the four stage outputs (`BackboneFeatures`).
2. The exporter writes its file atomically (temporary file, then rename): a crash never leaves a
   half-written model, and an existing file at the output path is replaced, never reused.
3. The result is checked against the reference on the same input (`compare`): the largest absolute
   difference, and that difference relative to the largest reference value. Above `atol + rtol *
   max|reference|` the script exits with `EXIT_CHECK_FAILED`.
4. A JSON sidecar `<output>.json` records what was exported and how (`sidecar_path`).

Exit codes shared by the scripts: 0 success, 1 the exported model does not match PyTorch,
2 a usage error (flags, checkpoint), 3 the toolchain is missing here (TensorRT, a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import _atomic_write, checkpoint_is_folded, detect_layout, load_checkpoint, read_checkpoint
from .folding import fold_batchnorm
from .model import VARIANTS, NextViT, build_nextvit
from .pretrained import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "EXIT_OK",
    "EXIT_CHECK_FAILED",
    "EXIT_USAGE",
    "EXIT_UNAVAILABLE",
    "ExportError",
    "ExportSource",
    "BackboneFeatures",
    "add_source_args",
    "check_source_args",
    "load_source",
    "source_from_args",
    "source_from_model",
    "image_hw",
    "default_stem",
    "source_record",
    "export_onnx",
    "export_and_check_onnx",
    "run_onnxruntime",
    "compare",
    "preprocessing",
    "provenance",
    "sha256_file",
    "sidecar_path",
    "write_sidecar",
    "atomic_write_bytes",
    "replace_path",
    "check_opset",
    "parse_bool",
    "add_bool_flag",
    "cli_main",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

CROP_PCT = 0.875  # the original evaluation's center crop, at 224 and at 384
MIN_OPSET = 14  # scaled_dot_product_attention has an ONNX symbolic from opset 14
MIN_DYNAMO_OPSET = 18  # the dynamo exporter's lowest opset (ReduceMean with axes as an input)
DEFAULT_OPSET = 17
FEATURE_NAMES = ("stage0", "stage1", "stage2", "stage3")


class ExportError(RuntimeError):
    """An export could not be done or did not check out; `exit_code` says which (see module doc)."""

    def __init__(self, message: str, exit_code: int = EXIT_CHECK_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# The model to export
# --------------------------------------------------------------------------------------------


class BackboneFeatures(nn.Module):
    """The backbone for detection and segmentation: the raw output of each of the four stages
    (strides 4, 8, 16, 32), as a tuple so that exporters see four named outputs."""

    def __init__(self, model: NextViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, intermediates_only=True))


@dataclass
class ExportSource:
    """A model ready to export: the reference it must match, the module to export, its I/O."""

    name: str
    reference: nn.Module  # eval-mode model as loaded (unfolded unless the checkpoint was folded)
    deploy: nn.Module  # what the exporter sees: folded (unless --no-fold), features wrapper
    input_shape: tuple[int, int, int, int]
    input_name: str
    output_names: list[str]
    features: bool
    folded: bool
    num_classes: int
    kv_pool: str
    checkpoint: dict | None  # path, sha256, layout, tensors loaded; None for random weights
    notes: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.input_shape[2], self.input_shape[3]

    def example_input(self, batch: int | None = None, seed: int = 0) -> torch.Tensor:
        """ImageNet-normalised uniform random pixels: the value range the model sees in use."""
        b = self.input_shape[0] if batch is None else batch
        gen = torch.Generator().manual_seed(seed)
        pixels = torch.rand(b, *self.input_shape[1:], generator=gen)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @torch.no_grad()
    def reference_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.features:
            return list(self.reference.forward_intermediates(x, intermediates_only=True))
        return [self.reference(x)]

    def outputs_info(self) -> list[dict]:
        """Name, shape (at the export batch size) and stride of each output."""
        h, w = self.image_size
        if self.features:
            info = self.reference.feature_info
            return [
                dict(
                    name=n,
                    shape=[
                        self.input_shape[0],
                        f["num_chs"],
                        math.ceil(h / f["reduction"]),
                        math.ceil(w / f["reduction"]),
                    ],
                    stride=f["reduction"],
                )
                for n, f in zip(self.output_names, info)
            ]
        width = self.num_classes if self.num_classes > 0 else self.reference.num_features
        return [dict(name=self.output_names[0], shape=[self.input_shape[0], width])]


def _head_classes(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("head.fc.weight", "proj_head.0.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_source(
    model: str,
    checkpoint: str | os.PathLike | None,
    *,
    batch_size: int = 1,
    image_size: Sequence[int] = (224,),
    num_classes: int | None = None,
    features: bool = False,
    fold: bool = True,
    input_name: str = "input",
) -> ExportSource:
    """Build `model`, load `checkpoint` (None: random weights, for latency only) and prepare the export.

    The number of classes is read from the checkpoint's head unless `num_classes` is given; a
    different `num_classes` is refused rather than exporting a randomly initialised classifier.
    For `features` the head is irrelevant and is not loaded.
    """
    if model not in VARIANTS:
        raise ExportError(f"--model {model!r} is not a Next-ViT variant; choose one of {sorted(VARIANTS)}", EXIT_USAGE)
    hw = image_hw(image_size)
    notes: list[str] = []
    state, meta, info = None, {}, None
    if checkpoint is not None:
        state, meta = read_checkpoint(checkpoint)
        detect_layout(state, meta)  # a clear error for a file that is not Next-ViT at all
        info = dict(path=str(checkpoint), sha256=sha256_file(checkpoint))
    kv_pool = meta["kv_pool"] if meta.get("kv_pool") in ("1d", "2d") else "1d"

    ckpt_classes = _head_classes(state) if state is not None else None
    if features:
        classes = 0
    elif num_classes is not None:
        if ckpt_classes is not None and ckpt_classes != num_classes:
            raise ExportError(
                f"--num-classes {num_classes} does not match the checkpoint's classifier ({ckpt_classes} classes):"
                " exporting would give a randomly initialised head; drop --num-classes, or export --features",
                EXIT_USAGE,
            )
        if state is not None and ckpt_classes is None and num_classes > 0:
            raise ExportError(
                f"{checkpoint} has no classifier head; pass --num-classes 0 (pooled features) or --features",
                EXIT_USAGE,
            )
        classes = num_classes
    elif state is not None:
        if ckpt_classes is None:
            raise ExportError(
                f"{checkpoint} has no classifier head; pass --num-classes 0 (pooled features) or --features",
                EXIT_USAGE,
            )
        classes = ckpt_classes
    else:
        classes = 1000

    if checkpoint is None:
        torch.manual_seed(0)  # reproducible random weights
    net = build_nextvit(model, num_classes=classes, kv_pool=kv_pool)
    net.variant = model
    ckpt_folded = state is not None and checkpoint_is_folded(state, meta)
    if ckpt_folded:
        fold_batchnorm(net, inplace=True)
        if not fold:
            notes.append("the checkpoint is already folded: --no-fold has no effect")
    if checkpoint is not None:
        report = load_checkpoint(net, checkpoint, strict=True, drop_head=True if features else None)
        info.update(layout=report.layout, tensors_loaded=report.loaded)
        if report.dropped_head:
            info["head_not_loaded"] = report.dropped_head
    return source_from_model(
        net,
        batch_size=batch_size,
        image_size=hw,
        features=features,
        fold=fold,
        input_name=input_name,
        checkpoint=info,
        notes=notes,
    )


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
    )


def source_from_model(
    model: NextViT,
    *,
    batch_size: int = 1,
    image_size: Sequence[int] | int = 224,
    features: bool = False,
    fold: bool = True,
    input_name: str = "input",
    checkpoint: dict | None = None,
    notes: Sequence[str] = (),
) -> ExportSource:
    """Prepare an in-memory model for export. It is put in eval mode and otherwise left as it is:
    folding works on a copy. `checkpoint` describes its weights for the sidecar (None: random)."""
    model.eval()
    already_folded = bool(getattr(model, "is_folded", False))
    deploy: nn.Module = model if already_folded or not fold else fold_batchnorm(model)
    if features:
        deploy = BackboneFeatures(deploy).eval()
        output_names = list(FEATURE_NAMES)
    else:
        output_names = ["logits" if model.num_classes > 0 else "pooled_features"]
    return ExportSource(
        name=str(getattr(model, "variant", "") or "nextvit"),
        reference=model,
        deploy=deploy,
        input_shape=(batch_size, 3, *image_hw(image_size)),
        input_name=input_name,
        output_names=output_names,
        features=features,
        folded=already_folded or fold,
        num_classes=0 if features else model.num_classes,
        kv_pool=str(getattr(model, "kv_pool", "1d")),
        checkpoint=checkpoint,
        notes=list(notes),
    )


def image_hw(image_size: Sequence[int] | int) -> tuple[int, int]:
    """(height, width) from `--image-size`: one int for a square, or two."""
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    if len(sizes) not in (1, 2):
        raise ExportError(f"--image-size takes one size (square) or two (height width), got {sizes}", EXIT_USAGE)
    h, w = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    if h < 32 or w < 32:
        raise ExportError(f"--image-size {h} {w}: both sides must be at least 32 pixels", EXIT_USAGE)
    return int(h), int(w)


def default_stem(model: str, image_size: Sequence[int], features: bool) -> str:
    """`nextvit_small_224x224`, `nextvit_small_features_800x1344`: the original scripts' naming."""
    h, w = image_hw(image_size)
    return f"{model}{'_features' if features else ''}_{h}x{w}"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


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
    parser.add_argument("--model", default="nextvit_small", choices=sorted(VARIANTS), help="variant to export")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[224],
        metavar="SIZE",
        help="input size: one int for a square input, or two (height width), e.g. --image-size 800 1344",
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
    parser.add_argument("--output", type=Path, default=None, help="output file (default: named after the model)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance of the check against PyTorch")
    parser.add_argument(
        "--rtol", type=float, default=None, help="tolerance relative to the largest reference output value"
    )


def check_source_args(parser: argparse.ArgumentParser, args: argparse.Namespace, *, allow_no_weights: bool = False):
    """Refuse what cannot be right before any work is done (argparse's exit code 2)."""
    if args.checkpoint is not None and args.random_weights:
        parser.error("--checkpoint and --random-weights exclude each other")
    if args.checkpoint is None and not args.random_weights and not allow_no_weights:
        parser.error(
            "--checkpoint is required: an export without trained weights is only good for latency; "
            "pass --random-weights to export random weights on purpose"
        )
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
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


def cli_main(main: Callable[[], int]) -> None:
    """Run a script's main: known failures become one line on stderr and an exit code, not a traceback."""
    from .checkpoint import CheckpointError

    try:
        code = main()
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` through a temporary file and a rename: a crash never leaves a partial file."""
    path = Path(path)
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def replace_path(new: Path, target: Path) -> None:
    """Move a finished file or folder (an .mlpackage) onto `target`, replacing what is there.

    A file replaces a file atomically; where a folder is involved the two are swapped with two
    renames, so `target` is always either the old or the new one, never a mixture.
    """
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or not (new.is_dir() or target.is_dir()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()


def sidecar_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".json")


def write_sidecar(output: str | os.PathLike, record: dict) -> Path:
    """Write the record as `<output>.json`, atomically."""
    path = sidecar_path(output)
    text = json.dumps(record, indent=2, default=str) + "\n"
    return atomic_write_bytes(path, text.encode())


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python and of the libraries that shape an export (those installed)."""
    import importlib.metadata

    from . import __version__

    versions = {"python": platform.python_version(), "nextvit": __version__, "torch": torch.__version__}
    for name in ("numpy", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnxslim", *extra):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def provenance(extra_libraries: Sequence[str] = ()) -> dict:
    """When, where and with what an export was made."""
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        platform=platform.platform(),
        machine=platform.machine(),
        versions=library_versions(extra_libraries),
        git_commit=commit or None,
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
    )


def preprocessing(image_size: Sequence[int], features: bool) -> dict:
    """How an image becomes the exported model's input (before anything baked into the model)."""
    h, w = image_hw(image_size)
    prep = dict(
        color="RGB",
        layout="NCHW",
        scale="pixels / 255, then (x - mean) / std per channel",
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
    )
    if features:
        prep["resize"] = f"the dense-task pipeline's own (resize, then pad) to {h}x{w}; no crop"
    else:
        prep.update(
            resize_shorter_side=math.floor(min(h, w) / CROP_PCT),
            interpolation="bicubic",
            center_crop=[h, w],
            crop_pct=CROP_PCT,
        )
    return prep


def source_record(source: ExportSource) -> dict:
    """The sidecar fields describing the model, its weights and its input and outputs."""
    return dict(
        model=source.name,
        task="features" if source.features else "classification",
        num_classes=source.num_classes,
        kv_pool=source.kv_pool,
        checkpoint=source.checkpoint,
        random_weights=source.checkpoint is None,
        folded=source.folded,
        input=dict(name=source.input_name, shape=list(source.input_shape), dtype="float32"),
        outputs=source.outputs_info(),
        preprocessing=preprocessing(source.image_size, source.features),
        notes=list(source.notes),
    )


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


def compare(outputs: Sequence, references: Sequence[torch.Tensor], atol: float | None, rtol: float | None) -> dict:
    """Largest absolute difference, and relative to the largest reference value, over all outputs.

    It passes when every output's max |difference| <= atol + rtol * max |reference| (a tolerance
    None is not enforced). Shapes must match exactly.
    """
    import numpy as np

    if len(outputs) != len(references):
        raise ExportError(f"the exported model has {len(outputs)} outputs, PyTorch {len(references)}")
    per_output, passed = [], True
    for out, ref in zip(outputs, references):
        out = np.asarray(out, dtype=np.float64)
        ref = ref.detach().double().cpu().numpy()
        if out.shape != ref.shape:
            raise ExportError(f"output shape {list(out.shape)} differs from PyTorch's {list(ref.shape)}")
        max_abs = float(np.abs(out - ref).max()) if out.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        limit = None if atol is None and rtol is None else (atol or 0.0) + (rtol or 0.0) * scale
        ok = limit is None or max_abs <= limit
        passed &= ok
        per_output.append(dict(max_abs_diff=max_abs, max_rel_diff=max_abs / max(scale, 1e-12), ref_max_abs=scale))
    return dict(
        max_abs_diff=max(p["max_abs_diff"] for p in per_output),
        max_rel_diff=max(p["max_rel_diff"] for p in per_output),
        atol=atol,
        rtol=rtol,
        passed=bool(passed),
        per_output=per_output,
    )


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def check_opset(opset: int, exporter: str) -> None:
    if opset < MIN_OPSET:
        raise ExportError(
            f"--opset-version {opset}: Next-ViT's attention (scaled_dot_product_attention) exports from opset "
            f"{MIN_OPSET} on",
            EXIT_USAGE,
        )
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise ExportError(
            f"--opset-version {opset}: the dynamo exporter starts at opset {MIN_DYNAMO_OPSET}; "
            f"use --exporter torchscript for opsets {MIN_OPSET}-{MIN_DYNAMO_OPSET - 1}",
            EXIT_USAGE,
        )


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    dynamic_batch: bool = False,
    input_name: str = "input",
    output_names: Sequence[str] = ("logits",),
):
    """Export to an in-memory `onnx.ModelProto` with either of torch's exporters.

    `torchscript` is `torch.onnx.export(..., dynamo=False)` (tracing; opsets 14+); `dynamo` is the
    torch.export-based exporter (opsets 18+). Both keep the weights inside the model (no external
    data file, which would not survive the rename of an atomic write).
    """
    import onnx

    check_opset(opset, exporter)
    module = module.eval()
    output_names = list(output_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch-internal pytree notices (dynamo)
        if exporter == "torchscript":
            buffer = io.BytesIO()
            dynamic_axes = None
            if dynamic_batch:
                dynamic_axes = {name: {0: "batch"} for name in [input_name, *output_names]}
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
            proto = onnx.load_from_string(buffer.getvalue())
        elif exporter == "dynamo":
            dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
            proto = program.model_proto
        else:
            raise ExportError(f"--exporter must be 'torchscript' or 'dynamo', got {exporter!r}", EXIT_USAGE)
    return proto


def onnx_opset(proto) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def simplify_onnx(proto) -> tuple[object, dict]:
    """Simplify with onnxsim or onnxslim when one is installed (neither is required)."""
    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None:
        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified, dict(tool="onnxsim", version=getattr(onnxsim, "__version__", None))
        return proto, dict(tool=None, note="onnxsim could not validate its result: the unsimplified model is kept")
    try:
        import onnxslim
    except ImportError:
        return proto, dict(tool=None, note="not simplified: neither onnxsim nor onnxslim is installed")
    return onnxslim.slim(proto), dict(tool="onnxslim", version=getattr(onnxslim, "__version__", None))


def run_onnxruntime(path: str | os.PathLike, x: torch.Tensor, input_name: str = "input") -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x.numpy()})


def _add_metadata(proto, source: ExportSource) -> None:
    meta = {
        "nextvit.model": source.name,
        "nextvit.task": "features" if source.features else "classification",
        "nextvit.mean": json.dumps(list(IMAGENET_MEAN)),
        "nextvit.std": json.dumps(list(IMAGENET_STD)),
        "nextvit.folded": str(source.folded).lower(),
        "nextvit.checkpoint_sha256": (source.checkpoint or {}).get("sha256", "random weights"),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"Next-ViT {source.name} ({meta['nextvit.task']}), exported by nextvit.export"


def export_and_check_onnx(
    source: ExportSource,
    output: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    dynamic_batch: bool = False,
    simplify: bool = True,
    atol: float | None = 1e-4,
    rtol: float | None = 1e-4,
    log: Callable[[str], None] = print,
) -> dict:
    """Export `source` to `output` (atomically, always re-exporting), check it with ONNX Runtime
    against the PyTorch reference, and write the sidecar. Returns the sidecar record; its
    `check.passed` is False when the difference is above tolerance (the file is still written, so
    it can be inspected; the sidecar says it failed)."""
    import onnx

    output = Path(output)
    check_opset(opset, exporter)
    example = source.example_input()
    what = "features" if source.features else "classifier"
    batch_note = ", dynamic batch" if dynamic_batch else ""
    shape = list(source.input_shape)
    log(f"exporting {source.name} {what} {shape} with the {exporter} exporter, opset {opset}{batch_note}")
    proto = export_onnx(
        source.deploy,
        example,
        opset=opset,
        exporter=exporter,
        dynamic_batch=dynamic_batch,
        input_name=source.input_name,
        output_names=source.output_names,
    )
    actual_opset = onnx_opset(proto)
    if actual_opset != opset:
        raise ExportError(f"the {exporter} exporter produced opset {actual_opset}, not the requested {opset}")
    simplified = dict(tool=None, note="disabled (--no-simplify)")
    if simplify:
        proto, simplified = simplify_onnx(proto)
    onnx.checker.check_model(proto)
    ops = sorted({node.op_type for node in proto.graph.node})
    if source.folded and "BatchNormalization" in ops:
        raise ExportError("the folded model still exports BatchNormalization nodes")
    _add_metadata(proto, source)
    atomic_write_bytes(output, proto.SerializeToString())

    batches = [source.input_shape[0]]
    if dynamic_batch:
        batches.append(source.input_shape[0] + 2)
    checks = []
    for batch in batches:
        x = source.example_input(batch)
        outputs = run_onnxruntime(output, x, source.input_name)
        checks.append(dict(batch=batch, **compare(outputs, source.reference_outputs(x), atol, rtol)))
    check = dict(
        runtime="onnxruntime (CPUExecutionProvider)",
        reference="the PyTorch eval-mode model as loaded, float32, CPU",
        input="ImageNet-normalised uniform random pixels, seed 0",
        batches=batches,
        max_abs_diff=max(c["max_abs_diff"] for c in checks),
        max_rel_diff=max(c["max_rel_diff"] for c in checks),
        atol=atol,
        rtol=rtol,
        passed=all(c["passed"] for c in checks),
        per_batch=checks,
    )
    record = dict(
        format="onnx",
        output=output.name,
        output_sha256=sha256_file(output),
        **source_record(source),
        exporter=f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        opset=actual_opset,
        dynamic_batch=dynamic_batch,
        simplifier=simplified,
        onnx_ops=ops,
        check=check,
        **provenance(),
    )
    write_sidecar(output, record)
    verdict = "passed" if check["passed"] else "FAILED"
    log(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB) and {sidecar_path(output).name}")
    log(
        f"check with ONNX Runtime {verdict}: max abs diff {check['max_abs_diff']:.3g}, "
        f"max rel diff {check['max_rel_diff']:.3g} (atol {atol}, rtol {rtol}, batches {batches})"
    )
    return record
