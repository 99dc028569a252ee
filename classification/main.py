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
    g.add_argument("--num-workers", default=10, type=int)
    g.add_argument("--pin-mem", action="store_true", default=True)
    g.add_argument("--no-pin-mem", action="store_false", dest="pin_mem")

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


def setup(args: argparse.Namespace) -> Run:
    """Processes and device, seeds (offset by rank), precision, the output folder."""
    init_distributed(args)
    warn_ignored_flags(args)
    device = torch.device(args.device)
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


def resolve_resume(args: argparse.Namespace) -> str:
    if args.resume != "auto":
        return args.resume
    latest = Path(args.output_dir) / "checkpoint.pth" if args.output_dir else None
    return str(latest) if latest is not None and latest.is_file() else ""


def load_weights(model: torch.nn.Module, path: str, args: argparse.Namespace, finetune: bool) -> None:
    """Model weights from any format nextvit reads (training checkpoint, ByteDance, timm, ours)."""
    if is_nextvit(model):
        report = nextvit.load_checkpoint(model, path, strict=True, drop_head=None if finetune else False)
        log(args, report.summary())
    else:
        state, _ = nextvit.read_checkpoint(path)
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
    rate = measure_throughput(model, args, run.device)
    log(
        args,
        f"{args.model}: {rate:.1f} images/s (batch {args.batch_size}, {args.input_size}x{args.input_size}, "
        f"{run.device})",
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
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and run.device.type == "cuda",
        drop_last=False,
    )
    return Evaluator(loader, run, dist_eval, count_first, args.print_freq)


def evaluate_checkpoint(
    args: argparse.Namespace, run: Run, model: torch.nn.Module, evaluator: Evaluator, resume: str
) -> int:
    """--eval: the --resume checkpoint on val, BatchNorm folded unless --no-fold; eval.json in the output."""
    if not resume:
        raise SystemExit("--eval needs --resume CHECKPOINT (a file, or 'auto' with a checkpoint in --output-dir)")
    load_weights(model, resume, args, finetune=False)
    folded = is_nextvit(model) and not args.no_fold
    stats = evaluator(nextvit.fold_batchnorm(model) if folded else model, is_main(args))
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
        dataset_train,
        sampler=sampler,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and run.device.type == "cuda",
        drop_last=True,
        persistent_workers=args.num_workers > 0,
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


@dataclass
class Training:
    """The model, loss, optimizer and schedule: what the epoch loop runs and a checkpoint holds."""

    model: torch.nn.Module  # wrapped in DistributedDataParallel when distributed
    model_without_ddp: torch.nn.Module
    criterion: torch.nn.Module
    mixup_fn: Mixup | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    scaler: torch.amp.GradScaler | None
    model_ema: ModelEmaV3 | None
    start_epoch: int
    best_acc1: float = 0.0

    def checkpoint(self, args: argparse.Namespace, epoch: int) -> dict:
        return dict(
            model=self.model_without_ddp.state_dict(),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_scheduler.state_dict(),
            epoch=epoch,
            best_acc1=self.best_acc1,
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            model_ema=self.model_ema.module.state_dict() if self.model_ema is not None else None,
            args={
                k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)
                for k, v in vars(args).items()
            },
        )


def build_training(args: argparse.Namespace, run: Run, model: torch.nn.Module, num_classes: int) -> Training:
    """DDP, the loss, AdamW (lr scaled by global batch / 512), the per-epoch schedule, grad scaler, EMA."""
    criterion, mixup_fn = build_loss(args, num_classes)
    model_without_ddp = model
    if args.distributed:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    args.scaled_lr = args.lr * args.batch_size * args.world_size / 512.0
    adam_kwargs = (
        dict(eps=args.opt_eps, betas=tuple(args.opt_betas or (0.9, 0.999))) if "adam" in args.opt.lower() else {}
    )
    optimizer = create_optimizer_v2(  # biases and norm parameters get no weight decay
        model_without_ddp, opt=args.opt, lr=args.scaled_lr, weight_decay=args.weight_decay, momentum=args.momentum,
        **adam_kwargs,
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
    return Training(
        model, model_without_ddp, criterion, mixup_fn, optimizer, lr_scheduler, scaler, model_ema, args.start_epoch
    )


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
    if training.scaler is not None and state.get("scaler"):
        training.scaler.load_state_dict(state["scaler"])
    if training.model_ema is not None and state.get("model_ema"):
        training.model_ema.module.load_state_dict(state["model_ema"])
    training.start_epoch = state["epoch"] + 1
    training.best_acc1 = state.get("best_acc1", 0.0)
    log(args, f"resumed from {path}: epoch {state['epoch']} done, best Acc@1 {training.best_acc1:.2f}")


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


def plot_curves(log_file: Path, png: Path) -> None:
    """loss and accuracy per epoch from log.txt, as a PNG."""
    import matplotlib

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
    """Rank 0: checkpoint.pth (and checkpoint_best.pth), a log.txt line, curves.png, TensorBoard."""
    if not (run.output_dir and is_main(args)):
        return
    state = training.checkpoint(args, row["epoch"])
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
    """Rank 0: weights-only model.safetensors with the config.json that deployment/ reads."""
    if not (run.output_dir and is_main(args) and is_nextvit(model)):
        return
    nextvit.save_checkpoint(model, run.output_dir / "model.safetensors")
    config = dict(
        arch=args.model,
        num_classes=num_classes,
        input_size=args.input_size,
        crop_pct=args.crop_pct,
        interpolation="bicubic",
        mean=list(nextvit.pretrained.IMAGENET_MEAN),
        std=list(nextvit.pretrained.IMAGENET_STD),
        kv_pool=args.kv_pool,
        class_names=classes,
    )
    (run.output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# the epoch loop
# --------------------------------------------------------------------------------------------


def train_loop(
    args: argparse.Namespace, run: Run, training: Training, loader, sampler, evaluator: Evaluator, writer
) -> None:
    """Epochs from `training.start_epoch` to --epochs: train, evaluate, log and save each one."""
    for epoch in range(training.start_epoch, args.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        training.lr_scheduler.step(epoch)
        try:
            train_stats = train_one_epoch(
                training.model,
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
            )
        except NonFiniteLossError as err:
            last = run.output_dir / "checkpoint.pth" if run.output_dir else None
            kept = f"; the last good checkpoint is {last}" if last and last.is_file() else ""
            raise SystemExit(f"{err}{kept}") from None
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
    model = build_model(args, num_classes).to(run.device)
    log(
        args,
        f"model {args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"drop path {args.drop_path}, {num_classes} classes, device {run.device}, {args.world_size} process(es)",
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
