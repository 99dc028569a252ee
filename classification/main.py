"""Next-ViT ImageNet training, fine-tuning and evaluation (the original recipe, on timm's utilities).

Launch through `train.sh` (torchrun), as the original README does:

    bash train.sh 8 --model nextvit_small --batch-size 256 --lr 5e-4 --warmup-epochs 20 \
        --weight-decay 0.1 --data-path /path/to/imagenet

on a SLURM cluster through `slurm_train.sh PARTITION JOB_NAME NGPUS [args]` (srun), or as a single
process: `python main.py --data-path ... [--eval --resume CKPT]`. The launcher is read from the
environment (nextvit.launch). Without a GPU every process runs on the CPU and they talk over gloo.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from engine import NonFiniteLossError, distributed_eval_share, evaluate, train_one_epoch
from imagefolder import DataError, build_dataset, check_image_folder
from timm.data import Mixup
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

import nextvit
from nextvit.files import atomic_torch_save, atomic_write
from nextvit.launch import detect_launch, export_rendezvous

# Flags of the original trainer that parse and do nothing: (default, why). A value other than the
# default is warned about once, at the start.
IGNORED_FLAGS = {
    "--cooldown-epochs": (
        10,
        "training runs exactly --epochs epochs and the lr schedule ends with them (timm's cooldown "
        "would add epochs at the minimum lr after --epochs)",
    ),
    "--patience-epochs": (10, "it belongs to timm's plateau schedule, and --sched offers cosine and step"),
    "--dist-url": (
        "env://",
        "processes meet at MASTER_ADDR:MASTER_PORT, set by torchrun or derived from SLURM's variables",
    ),
}

# torch.compile's modes (--compile-mode); reduce-overhead and max-autotune add CUDA graphs on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# --channels-last when not given, by device type, from measured training steps (classification/README.md):
# CUDA: Next-ViT-S 1.6x NCHW on one H200 (fp16 AMP, batch 128, 224); CPU: 1.09x (S, 224, batch 16) and
# 1.25x (tiny, 64, batch 32) on a 2-core AMD EPYC (Zen 4, AVX-512), fp32
CHANNELS_LAST_DEFAULT = {"cuda": True, "cpu": True}
# a data wait above this fraction of the epoch is warned about (once)
DATA_WAIT_WARNING = 0.2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Next-ViT training and evaluation", add_help=True)
    p.add_argument("--batch-size", default=64, type=int, help="per process")
    p.add_argument("--epochs", default=300, type=int)

    g = p.add_argument_group("model")
    g.add_argument("--model", default="nextvit_small", help="a nextvit_* variant, or any timm model name")
    g.add_argument("--input-size", default=224, type=int)
    g.add_argument("--drop", type=float, default=0.0, help="dropout before the classifier and in MLPs")
    g.add_argument(
        "--drop-path", type=float, default=None, help="stochastic depth (default: the variant's, S 0.1, B/L 0.2)"
    )
    g.add_argument("--kv-pool", choices=["1d", "2d"], default="1d", help="E-MHSA key/value pooling")
    g.add_argument("--model-ema", action="store_true", help="keep an exponential moving average of the weights")
    g.add_argument("--model-ema-decay", type=float, default=0.99996)

    g = p.add_argument_group("optimizer")
    g.add_argument("--opt", default="adamw")
    g.add_argument("--opt-eps", default=1e-8, type=float)
    g.add_argument("--opt-betas", default=None, type=float, nargs="+", help="default (0.9, 0.999)")
    g.add_argument("--clip-grad", type=float, default=5.0, help="max gradient norm (0: off)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=0.05)

    g = p.add_argument_group("learning rate (scaled by global batch / 512)")
    g.add_argument("--sched", default="cosine", choices=["cosine", "step"])
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--warmup-lr", type=float, default=1e-6)
    g.add_argument("--min-lr", type=float, default=1e-5)
    g.add_argument("--decay-epochs", type=float, default=30)
    g.add_argument("--warmup-epochs", type=int, default=5)
    g.add_argument("--cooldown-epochs", type=int, default=10, help="accepted for compatibility; no effect")
    g.add_argument("--patience-epochs", type=int, default=10, help="accepted for compatibility; no effect")
    g.add_argument("--decay-rate", "--dr", type=float, default=0.1)

    g = p.add_argument_group("augmentation")
    g.add_argument("--color-jitter", type=float, default=0.4)
    g.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="RandAugment policy ('none' to disable)")
    g.add_argument("--smoothing", type=float, default=0.1)
    g.add_argument("--train-interpolation", default="bicubic")
    g.add_argument("--repeated-aug", action="store_true", help="repeated augmentation (off, as in the recipe)")
    g.add_argument("--no-repeated-aug", action="store_false", dest="repeated_aug")
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--mixup", type=float, default=0.8)
    g.add_argument("--cutmix", type=float, default=1.0)
    g.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    g.add_argument("--mixup-prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", type=float, default=0.5)
    g.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])

    g = p.add_argument_group("data")
    g.add_argument("--data-path", default="/datasets/imagenet", help="folder with train/ and val/ ImageFolder trees")
    g.add_argument("--data-set", default="IMNET", choices=["IMNET", "image_folder"])
    g.add_argument("--crop-pct", type=float, default=0.875, help="eval: resize to size/crop_pct, center crop")
    g.add_argument("--skip-corrupt", action="store_true", help="drop unreadable images (counted) instead of failing")
    g.add_argument(
        "--num-workers", "--workers", dest="num_workers", default=10, type=int,
        help="data loader processes per training process; they live across epochs (--workers: the same flag)",
    )  # fmt: skip
    g.add_argument(
        "--pin-mem", action="store_true", default=True,
        help="on CUDA, batches in pinned host memory, copied to the GPU asynchronously (default)",
    )  # fmt: skip
    g.add_argument("--no-pin-mem", action="store_false", dest="pin_mem")
    g.add_argument("--prefetch-factor", default=2, type=int, help="batches each loader process prepares ahead")

    g = p.add_argument_group("speed")
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="channels_last (NHWC) memory format for the model and every input batch; checkpoints are the "
        "same either way. Default: on. CUDA: a training step of Next-ViT-S (batch 128, 224, fp16 AMP) ran 1.6x "
        "faster than NCHW on one H200; CPU: 1.09x (S, batch 16, 224) and 1.25x (nextvit_tiny, batch 32, 64) on "
        "a 2-core AMD EPYC, fp32 (classification/README.md). --no-channels-last: NCHW",
    )  # fmt: skip
    g.add_argument(
        "--compile", action="store_true",
        help="torch.compile the training step (forward and backward; evaluation runs the same weights eagerly). "
        "The first step compiles (minutes on a CPU); checkpoints stay loadable without --compile",
    )  # fmt: skip
    g.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile's mode")

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="", help="where checkpoints and logs go (empty: nowhere)")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    g.add_argument("--seed", default=0, type=int)
    g.add_argument("--resume", default="", help="checkpoint to resume from, or 'auto' for the output dir's latest")
    g.add_argument(
        "--finetune",
        nargs="?",
        const=True,
        default=None,
        help="load weights only (PATH, or with no value the --resume file); head dropped if classes differ",
    )
    g.add_argument("--start-epoch", default=0, type=int)
    g.add_argument("--eval", action="store_true", help="evaluate --resume on val (BatchNorm folded) and exit")
    g.add_argument("--no-fold", action="store_true", help="with --eval: evaluate the unfolded model")
    g.add_argument("--throughput", "--throughout", action="store_true", help="measure images/s and exit")
    g.add_argument("--dist-eval", action="store_true", help="split evaluation over processes")
    g.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "off", "fp16", "bf16"],
        help="auto: fp16 with a grad scaler on CUDA, off on CPU",
    )
    g.add_argument("--print-freq", default=10, type=int)
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if installed)")
    g.add_argument("--dist-url", default="env://", help="accepted for compatibility; no effect (see MASTER_ADDR)")
    return p


# --------------------------------------------------------------------------------------------
# setup: processes, device, precision, seeds
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Where this process runs: its device, autocast dtype and the output folder (rank 0 writes it)."""

    device: torch.device
    dtype: torch.dtype | None
    output_dir: Path | None


def init_distributed(args: argparse.Namespace) -> None:
    """Rank, world size and device from the launcher (torchrun, srun or none); join the process group.

    NCCL on GPUs, gloo on the CPU. The rendezvous is written as torchrun's variables, so the
    group is joined the same way whichever launcher started the process.
    """
    try:
        launch = detect_launch()
    except ValueError as err:
        raise SystemExit(f"cannot read the launcher's variables: {err}") from None
    args.rank, args.world_size, args.local_rank = launch.rank, launch.world_size, launch.local_rank
    args.distributed = args.world_size > 1
    log(args, launch.describe())
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but no CUDA device is available")
    if use_cuda:
        visible = torch.cuda.device_count()
        index = 0 if visible == 1 else args.local_rank  # one GPU per task when srun binds GPUs
        if index >= visible:
            raise SystemExit(
                f"local rank {args.local_rank} has no GPU of its own ({visible} visible): start at most "
                f"{visible} processes per node"
            )
        torch.cuda.set_device(index)
        args.device = f"cuda:{index}"
    else:
        args.device = "cpu"
    if args.distributed:
        export_rendezvous(launch)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning, as the original trainer had: input sizes are fixed, so the search pays off."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def is_main(args: argparse.Namespace) -> bool:
    return args.rank == 0


def log(args: argparse.Namespace, *values, file=None) -> None:
    if is_main(args):
        print(*values, file=file, flush=True)


def warn_ignored_flags(args: argparse.Namespace) -> None:
    """Say once (rank 0) that an original flag given a value of its own changes nothing, and why."""
    for flag, (default, why) in IGNORED_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value != default:
            log(args, f"warning: {flag} {value} has no effect: {why}", file=sys.stderr)


def amp_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    mode = args.amp
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "fp16" and device.type != "cuda":
        raise SystemExit("--amp fp16 needs CUDA; on CPU use --amp bf16 or --amp off")
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]


def check_speed_flags(args: argparse.Namespace) -> None:
    """One-line errors for loader and compile settings that cannot work, before any process starts."""
    if args.num_workers < 0:
        raise SystemExit(f"--num-workers must be 0 or more (got {args.num_workers})")
    if args.prefetch_factor < 1:
        raise SystemExit(f"--prefetch-factor must be at least 1 (got {args.prefetch_factor})")
    if args.compile and not hasattr(torch, "compile"):
        raise SystemExit(f"--compile needs torch.compile (torch 2.0 or later; this is torch {torch.__version__})")


def resolve_channels_last(requested: bool | None, device: torch.device) -> bool:
    """--channels-last as given, else the layout measured faster for training on this kind of device."""
    return CHANNELS_LAST_DEFAULT.get(device.type, False) if requested is None else requested


def setup(args: argparse.Namespace) -> Run:
    """Processes and device, seeds (offset by rank), precision, memory format, the output folder."""
    check_speed_flags(args)
    init_distributed(args)
    warn_ignored_flags(args)
    device = torch.device(args.device)
    args.channels_last = resolve_channels_last(args.channels_last, device)
    configure_backends(device)
    seed = args.seed + args.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir and is_main(args):
        output_dir.mkdir(parents=True, exist_ok=True)
    return Run(device, amp_dtype(args, device), output_dir)


# --------------------------------------------------------------------------------------------
# model and weights
# --------------------------------------------------------------------------------------------


def is_nextvit(model: torch.nn.Module) -> bool:
    """A model of this package (foldable, read by nextvit.load_checkpoint), not a timm baseline."""
    return isinstance(model, nextvit.NextViT)


def build_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    """A nextvit_* variant (drop path from --drop-path, else the variant's), or any timm model."""
    if args.model in nextvit.list_models():
        if args.drop_path is None:
            args.drop_path = nextvit.VARIANTS[args.model]["drop_path_rate"]
        return nextvit.create_model(
            args.model,
            num_classes=num_classes,
            drop_path_rate=args.drop_path,
            drop_rate=args.drop,
            kv_pool=args.kv_pool,
        )
    import timm  # baselines from timm

    kwargs = {} if args.drop_path is None else {"drop_path_rate": args.drop_path}
    return timm.create_model(args.model, num_classes=num_classes, drop_rate=args.drop, **kwargs)


def to_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The model's 4-d weights in channels_last (NHWC) when asked; its state dict's values are unchanged."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def resolve_resume(args: argparse.Namespace) -> str:
    if args.resume != "auto":
        return args.resume
    latest = Path(args.output_dir) / "checkpoint.pth" if args.output_dir else None
    return str(latest) if latest is not None and latest.is_file() else ""


def strip_compiled_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the wrappers of a torch.compile'd model (`_orig_mod.`, and a DDP `module.` around or
    inside it), so that a state dict saved by other code from a compiled model loads like a plain one.
    This trainer itself saves the plain module's keys."""

    def clean(key: str) -> str:
        parts = key.split(".")
        lead = 0
        while lead < len(parts) - 1 and parts[lead] in ("_orig_mod", "module"):
            lead += 1
        return ".".join(parts[lead:]) if "_orig_mod" in parts[:lead] else key

    return {clean(key): value for key, value in state.items()}


def load_weights(model: torch.nn.Module, path: str, args: argparse.Namespace, finetune: bool) -> None:
    """Model weights from any format nextvit reads (training checkpoint, ByteDance, timm, ours), also when
    they were saved from a torch.compile'd model (`_orig_mod.` keys)."""
    state, meta = nextvit.read_checkpoint(path)
    state = strip_compiled_prefix(state)
    if is_nextvit(model):
        drop_head = None if finetune else False
        report = nextvit.load_checkpoint(model, state, strict=True, drop_head=drop_head, meta=meta, where=path)
        log(args, report.summary())
    else:
        missing, unexpected = model.load_state_dict(state, strict=not finetune)
        log(args, f"loaded {path}: missing {missing}, unexpected {unexpected}")


def read_training_state(path: str) -> dict | None:
    """The optimizer/scheduler/epoch state of one of our training checkpoints, or None."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj if isinstance(obj, dict) and "optimizer" in obj and "epoch" in obj else None


# --------------------------------------------------------------------------------------------
# measuring and evaluating
# --------------------------------------------------------------------------------------------


def max_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def measure_throughput(
    model: torch.nn.Module, args: argparse.Namespace, device: torch.device, batches: int = 30
) -> float:
    """Images per second of the forward pass on random input (after 5 warm-up batches)."""
    model.eval()
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(5):
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * args.batch_size / (time.perf_counter() - start)


def run_throughput(args: argparse.Namespace, run: Run) -> int:
    """--throughput: images/s of the (folded) model at --batch-size and --input-size; no data needed."""
    model = build_model(args, 1000).to(run.device)
    if is_nextvit(model):
        model = nextvit.fold_batchnorm(model)
    rate = measure_throughput(to_memory_format(model, args.channels_last), args, run.device)
    log(
        args,
        f"{args.model}: {rate:.1f} images/s (batch {args.batch_size}, {args.input_size}x{args.input_size}, "
        f"{run.device}, {'channels_last' if args.channels_last else 'NCHW'})",
    )
    return 0


@dataclass
class Evaluator:
    """The validation pass as this file runs it: one loader, split over the processes with --dist-eval."""

    loader: torch.utils.data.DataLoader
    run: Run
    distributed: bool
    count_first: int | None  # with --dist-eval: the real (not padded) samples of this rank
    print_freq: int
    channels_last: bool = False  # batches converted on the device, for a channels_last model

    def __call__(self, model: torch.nn.Module, log_enabled: bool) -> dict:
        return evaluate(
            self.loader,
            model,
            self.run.device,
            self.run.dtype,
            self.print_freq,
            log_enabled,
            distributed=self.distributed,
            count_first=self.count_first,
            channels_last=self.channels_last,
        )


def build_evaluator(args: argparse.Namespace, dataset_val, run: Run) -> Evaluator:
    dist_eval = args.distributed and args.dist_eval
    if dist_eval:
        # the sampler pads the val set to a multiple of the world size; the padding is not counted
        sampler = torch.utils.data.DistributedSampler(dataset_val, shuffle=False)
        count_first = distributed_eval_share(len(dataset_val), args.world_size, args.rank)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset_val)
        count_first = None
    loader = torch.utils.data.DataLoader(
        dataset_val,
        sampler=sampler,
        batch_size=int(1.5 * args.batch_size),
        drop_last=False,
        **loader_options(args, run),
    )
    return Evaluator(loader, run, dist_eval, count_first, args.print_freq, args.channels_last)


def evaluate_checkpoint(
    args: argparse.Namespace, run: Run, model: torch.nn.Module, evaluator: Evaluator, resume: str
) -> int:
    """--eval: the --resume checkpoint on val, BatchNorm folded unless --no-fold; eval.json in the output."""
    if not resume:
        raise SystemExit("--eval needs --resume CHECKPOINT (a file, or 'auto' with a checkpoint in --output-dir)")
    load_weights(model, resume, args, finetune=False)
    folded = is_nextvit(model) and not args.no_fold
    stats = evaluator(to_memory_format(nextvit.fold_batchnorm(model) if folded else model, args.channels_last),
                      is_main(args))  # fmt: skip
    log(
        args,
        f"* Acc@1 {stats['acc1']:.3f} Acc@5 {stats['acc5']:.3f} loss {stats['loss']:.3f}"
        f" ({'BatchNorm folded' if folded else 'unfolded'})",
    )
    log(args, f"Accuracy of the network on the {stats['images']} test images: {stats['acc1']:.1f}%")
    if run.output_dir and is_main(args):
        (run.output_dir / "eval.json").write_text(json.dumps(dict(stats, checkpoint=resume, folded=folded)))
    return 0


# --------------------------------------------------------------------------------------------
# training: loader, loss, optimizer, resume
# --------------------------------------------------------------------------------------------


def loader_options(args: argparse.Namespace, run: Run) -> dict:
    """DataLoader settings that keep a GPU fed: --num-workers processes that live across epochs, each
    preparing --prefetch-factor batches ahead, into pinned memory on CUDA (for asynchronous copies)."""
    options = dict(num_workers=args.num_workers, pin_memory=args.pin_mem and run.device.type == "cuda")
    if args.num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=args.prefetch_factor)
    return options


def build_train_loader(args: argparse.Namespace, dataset_train, run: Run):
    """The training loader and its sampler (the sampler's epoch is set before each epoch)."""
    if args.repeated_aug:
        sampler = RepeatAugSampler(dataset_train, num_replicas=args.world_size, rank=args.rank, shuffle=True)
    elif args.distributed:
        sampler = torch.utils.data.DistributedSampler(dataset_train, shuffle=True, seed=args.seed)
    else:
        sampler = torch.utils.data.RandomSampler(dataset_train)
    if len(dataset_train) < args.batch_size * args.world_size:
        raise SystemExit(
            f"--batch-size {args.batch_size} x {args.world_size} process(es) is larger than the "
            f"{len(dataset_train)} training images in {args.data_path}"
        )
    loader = torch.utils.data.DataLoader(
        dataset_train, sampler=sampler, batch_size=args.batch_size, drop_last=True, **loader_options(args, run)
    )
    return loader, sampler


def build_loss(args: argparse.Namespace, num_classes: int):
    """The criterion, and mixup/cutmix (which then carries the label smoothing) when enabled."""
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        mixup_fn = Mixup(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob,
            mode=args.mixup_mode,
            label_smoothing=args.smoothing,
            num_classes=num_classes,
        )
        return SoftTargetCrossEntropy(), mixup_fn
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing), None
    return torch.nn.CrossEntropyLoss(), None


def contiguous_tensors(obj):
    """`obj` (nested dicts, lists, tuples) with every tensor in the default (NCHW) layout: a checkpoint
    written from a channels_last model is the same file as one written from an NCHW model."""
    if isinstance(obj, torch.Tensor):
        return obj.contiguous()
    if isinstance(obj, dict):
        return {key: contiguous_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(contiguous_tensors(value) for value in obj)
    return obj


def match_optimizer_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor its parameter's memory layout (after loading an NCHW checkpoint into a
    channels_last model): foreach and fused optimizers run fastest, and fused ones only correctly, that way."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def rng_state() -> dict:
    """This process's random generators (torch, CUDA, numpy, Python), as a weights-only load reads them back."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   gauss=float(gauss)),
        python=dict(version=int(version), state=torch.tensor(internal, dtype=torch.int64), gauss=gauss_next),
    )  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved (the CUDA generator only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss"]))


def gather_rng_states(args: argparse.Namespace) -> list[dict]:
    """Every process's random state, in rank order (all processes call this; rank 0 saves the list)."""
    mine = rng_state()
    if not args.distributed:
        return [mine]
    states: list = [None] * args.world_size
    dist.all_gather_object(states, mine)
    return states


@dataclass
class Training:
    """The model, loss, optimizer and schedule: what the epoch loop runs and a checkpoint holds."""

    model: torch.nn.Module  # wrapped in DistributedDataParallel when distributed; evaluated eagerly
    model_without_ddp: torch.nn.Module  # the plain module: checkpoints, EMA, final weights
    criterion: torch.nn.Module
    mixup_fn: Mixup | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    scaler: torch.amp.GradScaler | None
    model_ema: ModelEmaV3 | None
    start_epoch: int
    best_acc1: float = 0.0
    train_model: torch.nn.Module | None = None  # what the training step calls: `model`, torch.compile'd with --compile

    def __post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model

    def checkpoint(self, args: argparse.Namespace, epoch: int, rng: list[dict] | None = None) -> dict:
        """The plain module's keys (never torch.compile's `_orig_mod.`), all tensors in NCHW layout."""
        return contiguous_tensors(
            dict(
                model=self.model_without_ddp.state_dict(),
                optimizer=self.optimizer.state_dict(),
                lr_scheduler=self.lr_scheduler.state_dict(),
                epoch=epoch,
                best_acc1=self.best_acc1,
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                model_ema=self.model_ema.module.state_dict() if self.model_ema is not None else None,
                rng=rng,
                args={
                    k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)
                    for k, v in vars(args).items()
                },
            )
        )


def build_training(args: argparse.Namespace, run: Run, model: torch.nn.Module, num_classes: int) -> Training:
    """DDP, the loss, AdamW (lr scaled by global batch / 512), the per-epoch schedule, grad scaler, EMA."""
    criterion, mixup_fn = build_loss(args, num_classes)
    model_without_ddp = model
    if args.distributed:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    args.scaled_lr = args.lr * args.batch_size * args.world_size / 512.0
    optimizer = create_optimizer_v2(  # biases and norm parameters get no weight decay
        model_without_ddp, opt=args.opt, lr=args.scaled_lr, weight_decay=args.weight_decay, momentum=args.momentum,
        **optimizer_options(args, run.device),
    )  # fmt: skip
    lr_scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        num_epochs=args.epochs,
        decay_epochs=args.decay_epochs,
        decay_rate=args.decay_rate,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=args.warmup_epochs,
        cooldown_epochs=0,  # --cooldown-epochs has no effect (IGNORED_FLAGS)
    )
    scaler = torch.amp.GradScaler("cuda") if run.dtype == torch.float16 else None
    model_ema = ModelEmaV3(model_without_ddp, decay=args.model_ema_decay) if args.model_ema else None
    train_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    return Training(
        model, model_without_ddp, criterion, mixup_fn, optimizer, lr_scheduler, scaler, model_ema, args.start_epoch,
        train_model=train_model,
    )  # fmt: skip


def optimizer_options(args: argparse.Namespace, device: torch.device) -> dict:
    """Adam's eps and betas; on CUDA, AdamW's fused kernel (one launch for all parameters, not one per tensor)."""
    if "adam" not in args.opt.lower():
        return {}
    options = dict(eps=args.opt_eps, betas=tuple(args.opt_betas or (0.9, 0.999)))
    if device.type == "cuda" and args.opt.lower() in ("adam", "adamw"):
        options["fused"] = True
    return options


def resume_training(args: argparse.Namespace, training: Training, path: str) -> None:
    """Weights, and for our own training checkpoints optimizer, scaler, EMA and the epoch to start from."""
    state = read_training_state(path)
    load_weights(training.model_without_ddp, path, args, finetune=False)
    if state is None:
        return
    training.optimizer.load_state_dict(state["optimizer"])
    # timm's schedulers are functions of the epoch: their state is their settings. Settings
    # given now (say a longer --epochs) win over the checkpoint's, and the change is logged.
    fresh = training.lr_scheduler.state_dict()
    changed = {k: (v, fresh[k]) for k, v in state["lr_scheduler"].items() if k in fresh and fresh[k] != v}
    if changed:
        log(
            args,
            "lr schedule differs from the checkpoint's, using the new one: "
            + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()),
        )
    match_optimizer_layout(training.optimizer)
    if training.scaler is not None and state.get("scaler"):
        training.scaler.load_state_dict(state["scaler"])
    if training.model_ema is not None and state.get("model_ema"):
        training.model_ema.module.load_state_dict(strip_compiled_prefix(state["model_ema"]))
    training.start_epoch = state["epoch"] + 1
    training.best_acc1 = state.get("best_acc1", 0.0)
    log(args, f"resumed from {path}: epoch {state['epoch']} done, best Acc@1 {training.best_acc1:.2f}")
    restore_rng(args, state.get("rng"))


def restore_rng(args: argparse.Namespace, states: list[dict] | None) -> None:
    """Continue each process's random streams where the checkpoint left them: with --num-workers 0 a resumed
    run then draws what an uninterrupted one would (loader processes start new streams)."""
    if not states:
        return
    if len(states) != args.world_size:
        log(args, f"random state not restored: saved by {len(states)} process(es), resumed with {args.world_size}")
        return
    set_rng_state(states[args.rank])


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


def plot_curves(log_file: Path, png: Path) -> None:
    """loss and accuracy per epoch from log.txt, as a PNG (none where matplotlib is not installed)."""
    try:
        import matplotlib
    except ImportError:
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    ax1.plot(epochs, [r["test_loss"] for r in rows], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [r["test_acc1"] for r in rows], label="val Acc@1")
    ax2.plot(epochs, [r["test_acc5"] for r in rows], label="val Acc@5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.legend()
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def open_outputs(args: argparse.Namespace, run: Run):
    """args.yaml, and a TensorBoard writer with --tensorboard (None without it or on other ranks)."""
    if not (run.output_dir and is_main(args)):
        return None
    with open(run.output_dir / "args.yaml", "w") as f:
        yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, f, sort_keys=False)
    if not args.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log(args, "--tensorboard: tensorboard is not installed; logging to log.txt only")
        return None
    return SummaryWriter(str(run.output_dir / "tensorboard"))


def save_epoch(args: argparse.Namespace, run: Run, training: Training, row: dict, is_best: bool, writer) -> None:
    """Rank 0: checkpoint.pth (and checkpoint_best.pth), a log.txt line, curves.png, TensorBoard.

    Every process calls it: the checkpoint holds each one's random state."""
    if not run.output_dir:
        return
    rng = gather_rng_states(args)
    if not is_main(args):
        return
    state = training.checkpoint(args, row["epoch"], rng)
    atomic_torch_save(state, run.output_dir / "checkpoint.pth")
    if is_best:
        atomic_torch_save(state, run.output_dir / "checkpoint_best.pth")
    with open(run.output_dir / "log.txt", "a") as f:
        f.write(json.dumps(row) + "\n")
    plot_curves(run.output_dir / "log.txt", run.output_dir / "curves.png")
    if writer is not None:
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key, value, row["epoch"])


def save_final(args: argparse.Namespace, run: Run, model: torch.nn.Module, num_classes: int, classes: list) -> None:
    """Rank 0: weights-only model.safetensors with its run record config.json (nextvit.records), which
    deployment/ reads; both written atomically."""
    from nextvit.records import RUN_RECORD_NAME, RunRecord, write_run_record

    if not (run.output_dir and is_main(args) and is_nextvit(model)):
        return
    nextvit.save_checkpoint(model, run.output_dir / "model.safetensors")
    record = RunRecord(
        arch=args.model,
        num_classes=num_classes,
        input_size=args.input_size,
        crop_pct=args.crop_pct,
        kv_pool=args.kv_pool,
        class_names=classes,
    )
    write_run_record(run.output_dir / RUN_RECORD_NAME, record)


# --------------------------------------------------------------------------------------------
# the epoch loop
# --------------------------------------------------------------------------------------------


def uses_cudagraphs(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether torch.compile records CUDA graphs (its reduce-overhead and max-autotune modes, on a GPU)."""
    return args.compile and device.type == "cuda" and args.compile_mode in ("reduce-overhead", "max-autotune")


def slow_first_steps_notice(args: argparse.Namespace, device: torch.device) -> str | None:
    """Why the first steps take long where they do (cuDNN autotuning on CUDA, torch.compile), said before them."""
    work = []
    if device.type == "cuda":
        work.append("autotune cuDNN's convolutions (cudnn.benchmark)")
    if args.compile:
        work.append(f"compile the model (torch.compile, mode {args.compile_mode})")
    return f"the first training steps {' and '.join(work)}: expect tens of seconds or more" if work else None


class SpeedReport:
    """The speed lines of the log (rank 0): images/s, data wait and peak memory per epoch; the first step's
    time once (compilation, cuDNN autotuning); a warning, once, when the model waits for data too long."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args, self.run = args, run
        self.first_epoch_of_process = True
        self.warned = False

    def epoch_done(self, epoch: int, stats: dict) -> None:
        args = self.args
        memory = f", peak GPU memory {max_memory_mb(self.run.device):.0f} MB" if self.run.device.type == "cuda" else ""
        log(
            args,
            f"epoch {epoch} trained in {stats['time']:.1f} s: {stats['images_per_s_per_process']:.1f} images/s per "
            f"process, data wait {100 * stats['data_wait']:.1f}% of the epoch{memory}",
        )
        if self.first_epoch_of_process and (args.compile or self.run.device.type == "cuda"):
            later = (stats["time"] - stats["first_step_time"]) / max(1, stats["steps"] - 1)
            what = "compilation (torch.compile) included" if args.compile else "cuDNN autotuning included"
            log(args, f"first training step {stats['first_step_time']:.1f} s, {what}; later steps {later:.3f} s each")
        self.first_epoch_of_process = False
        if stats["data_wait"] > DATA_WAIT_WARNING and not self.warned:
            self.warned = True
            log(
                args,
                f"warning: the model waited for data {100 * stats['data_wait']:.0f}% of epoch {epoch}: more loader "
                f"processes (--num-workers, now {args.num_workers}) keep it busy, where CPU cores allow",
                file=sys.stderr,
            )


def train_loop(
    args: argparse.Namespace, run: Run, training: Training, loader, sampler, evaluator: Evaluator, writer
) -> None:
    """Epochs from `training.start_epoch` to --epochs: train, evaluate, log and save each one."""
    speed = SpeedReport(args, run)
    for epoch in range(training.start_epoch, args.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        training.lr_scheduler.step(epoch)
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        try:
            train_stats = train_one_epoch(
                training.train_model,
                training.criterion,
                loader,
                training.optimizer,
                run.device,
                epoch,
                training.scaler,
                run.dtype,
                args.clip_grad or None,
                training.mixup_fn,
                training.model_ema,
                args.print_freq,
                is_main(args),
                channels_last=args.channels_last,
                cudagraph_steps=uses_cudagraphs(args, run.device),
            )
        except NonFiniteLossError as err:
            last = run.output_dir / "checkpoint.pth" if run.output_dir else None
            kept = f"; the last good checkpoint is {last}" if last and last.is_file() else ""
            raise SystemExit(f"{err}{kept}") from None
        speed.epoch_done(epoch, train_stats)
        test_stats = evaluator(training.model, is_main(args))
        is_best = test_stats["acc1"] > training.best_acc1
        training.best_acc1 = max(training.best_acc1, test_stats["acc1"])
        log(args, f"* Acc@1 {test_stats['acc1']:.3f} Acc@5 {test_stats['acc5']:.3f} loss {test_stats['loss']:.3f}")
        log(args, f"Accuracy of the network on the {test_stats['images']} test images: {test_stats['acc1']:.1f}%")
        log(args, f"Max accuracy: {training.best_acc1:.2f}%")
        row = dict(
            epoch=epoch,
            lr=train_stats["lr"],
            train_loss=train_stats["loss"],
            test_loss=test_stats["loss"],
            test_acc1=test_stats["acc1"],
            test_acc5=test_stats["acc5"],
            epoch_time=round(train_stats["time"], 2),
            images_per_s=round(train_stats["images_per_s"], 2),
            images_per_s_per_process=round(train_stats["images_per_s_per_process"], 2),
            data_wait=round(train_stats["data_wait"], 4),
            max_memory_mb=round(max_memory_mb(run.device), 1),
        )
        if training.model_ema is not None:
            row["test_acc1_ema"] = evaluator(training.model_ema.module, False)["acc1"]
        save_epoch(args, run, training, row, is_best, writer)
        if args.distributed:
            dist.barrier()


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Setup, then one of: --throughput, --eval, or training (resumed or fine-tuned as asked)."""
    run = setup(args)
    if args.throughput:
        return run_throughput(args, run)

    try:
        classes = check_image_folder(args.data_path)
        dataset_val, num_classes = build_dataset(False, args, log=lambda *a: log(args, *a))
        dataset_train = None if args.eval else build_dataset(True, args, log=lambda *a: log(args, *a))[0]
    except DataError as err:
        raise SystemExit(f"data error: {err}") from None
    evaluator = build_evaluator(args, dataset_val, run)
    model = to_memory_format(build_model(args, num_classes).to(run.device), args.channels_last)
    log(
        args,
        f"model {args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"drop path {args.drop_path}, {num_classes} classes, device {run.device}, {args.world_size} process(es), "
        f"{'channels_last' if args.channels_last else 'NCHW'}{', compiled' if args.compile and not args.eval else ''}",
    )
    resume = resolve_resume(args)
    if args.eval:
        return evaluate_checkpoint(args, run, model, evaluator, resume)

    loader, sampler = build_train_loader(args, dataset_train, run)
    finetune_path = args.finetune if isinstance(args.finetune, str) else (resume if args.finetune else None)
    if finetune_path:
        load_weights(model, finetune_path, args, finetune=True)
    training = build_training(args, run, model, num_classes)
    if resume and not args.finetune:
        resume_training(args, training, resume)
    writer = open_outputs(args, run)

    if training.start_epoch >= args.epochs:
        log(
            args,
            f"nothing to train: the checkpoint has finished epoch {training.start_epoch - 1} and --epochs is "
            f"{args.epochs}",
        )
    log(
        args,
        f"training for {max(0, args.epochs - training.start_epoch)} epoch(s) from epoch {training.start_epoch}: "
        f"lr {args.scaled_lr:.3g} (global batch {args.batch_size * args.world_size}), {len(loader)} steps/epoch",
    )
    total_start = time.time()
    notice = slow_first_steps_notice(args, run.device)
    if notice and training.start_epoch < args.epochs:
        log(args, notice)
    train_loop(args, run, training, loader, sampler, evaluator, writer)
    log(
        args,
        f"training time {datetime.timedelta(seconds=int(time.time() - total_start))}, "
        f"best Acc@1 {training.best_acc1:.2f}",
    )
    save_final(args, run, training.model_without_ddp, num_classes, classes)
    if writer is not None:
        writer.close()
    return 0


def data_error_message(error: DataError) -> str:
    """The DataError's own sentence, also when a DataLoader worker raised it: torch then puts the
    worker's whole traceback into the message, and the sentence naming the file is its last line."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]  # "imagefolder.DataError: cannot read image ..."
    return last.partition(": ")[2] or last


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    try:
        code = main(arguments)
    except DataError as error:  # e.g. an unreadable image met while training
        raise SystemExit(f"data error: {data_error_message(error)}") from None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)
