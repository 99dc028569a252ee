"""Next-ViT ImageNet training, fine-tuning and evaluation (the original recipe, on timm's utilities).

Launch through `train.sh` (torchrun), as the original README does:

    bash train.sh 8 --model nextvit_small --batch-size 256 --lr 5e-4 --warmup-epochs 20 \
        --weight-decay 0.1 --data-path /path/to/imagenet

It also runs as a single process: `python main.py --data-path ... [--eval --resume CKPT]`.
Without a GPU every process runs on the CPU and they talk over gloo.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import sys
import time
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

DEFAULT_DROP_PATH = {"nextvit_small": 0.1, "nextvit_base": 0.2, "nextvit_large": 0.2, "nextvit_tiny": 0.0}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Next-ViT training and evaluation", add_help=True)
    p.add_argument("--batch-size", default=64, type=int, help="per process")
    p.add_argument("--epochs", default=300, type=int)

    g = p.add_argument_group("model")
    g.add_argument("--model", default="nextvit_small", help="a nextvit_* variant, or any timm model name")
    g.add_argument("--input-size", default=224, type=int)
    g.add_argument("--drop", type=float, default=0.0, help="dropout before the classifier and in MLPs")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth (default: S 0.1, B/L 0.2)")
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
    g.add_argument("--cooldown-epochs", type=int, default=10, help="accepted for compatibility; not run")
    g.add_argument("--patience-epochs", type=int, default=10, help="accepted for compatibility")
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
    g.add_argument("--dist-url", default="env://", help="accepted for compatibility (torchrun sets it)")
    return p


# --------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------


def init_distributed(args) -> None:
    args.world_size = int(os.environ.get("WORLD_SIZE", 1))
    args.rank = int(os.environ.get("RANK", 0))
    args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    args.distributed = args.world_size > 1
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but no CUDA device is available")
    args.device = f"cuda:{args.local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(args.local_rank)
    if args.distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning, as the original trainer had: input sizes are fixed, so the search pays off."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def is_main(args) -> bool:
    return args.rank == 0


def log(args, *values) -> None:
    if is_main(args):
        print(*values, flush=True)


def amp_dtype(args, device: torch.device) -> torch.dtype | None:
    mode = args.amp
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "fp16" and device.type != "cuda":
        raise SystemExit("--amp fp16 needs CUDA; on CPU use --amp bf16 or --amp off")
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]


def build_model(args, num_classes: int) -> torch.nn.Module:
    if args.model in nextvit.list_models():
        drop_path = DEFAULT_DROP_PATH.get(args.model, 0.1) if args.drop_path is None else args.drop_path
        args.drop_path = drop_path
        return nextvit.create_model(
            args.model, num_classes=num_classes, drop_path_rate=drop_path, drop_rate=args.drop, kv_pool=args.kv_pool
        )
    import timm  # baselines from timm

    kwargs = {} if args.drop_path is None else {"drop_path_rate": args.drop_path}
    return timm.create_model(args.model, num_classes=num_classes, drop_rate=args.drop, **kwargs)


def resolve_resume(args) -> str:
    if args.resume != "auto":
        return args.resume
    latest = Path(args.output_dir) / "checkpoint.pth" if args.output_dir else None
    return str(latest) if latest is not None and latest.is_file() else ""


def load_weights(model, path: str, args, finetune: bool) -> None:
    """Model weights from any format nextvit reads (training checkpoint, ByteDance, timm, ours)."""
    if hasattr(model, "depths"):
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


def max_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


@torch.no_grad()
def measure_throughput(model, args, device, batches: int = 30) -> float:
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(args) -> int:
    init_distributed(args)
    device = torch.device(args.device)
    configure_backends(device)
    seed = args.seed + args.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    dtype = amp_dtype(args, device)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir and is_main(args):
        output_dir.mkdir(parents=True, exist_ok=True)

    if args.throughput:
        model = build_model(args, 1000).to(device)
        if hasattr(model, "depths"):
            model = nextvit.fold_batchnorm(model)
        log(
            args,
            f"{args.model}: {measure_throughput(model, args, device):.1f} images/s "
            f"(batch {args.batch_size}, {args.input_size}x{args.input_size}, {device})",
        )
        return 0

    try:
        classes = check_image_folder(args.data_path)
        dataset_val, num_classes = build_dataset(False, args, log=lambda *a: log(args, *a))
        dataset_train = None if args.eval else build_dataset(True, args, log=lambda *a: log(args, *a))[0]
    except DataError as err:
        raise SystemExit(f"data error: {err}") from None

    dist_eval = args.distributed and args.dist_eval
    if dist_eval:
        # the sampler pads the val set to a multiple of the world size; the padding is not counted
        sampler_val = torch.utils.data.DistributedSampler(dataset_val, shuffle=False)
        count_first = distributed_eval_share(len(dataset_val), args.world_size, args.rank)
    else:
        sampler_val = torch.utils.data.SequentialSampler(dataset_val)
        count_first = None
    loader_val = torch.utils.data.DataLoader(
        dataset_val,
        sampler=sampler_val,
        batch_size=int(1.5 * args.batch_size),
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        drop_last=False,
    )

    model = build_model(args, num_classes).to(device)
    log(
        args,
        f"model {args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"drop path {args.drop_path}, {num_classes} classes, device {device}, {args.world_size} process(es)",
    )
    resume = resolve_resume(args)
    finetune_path = args.finetune if isinstance(args.finetune, str) else (resume if args.finetune else None)

    if args.eval:
        if not resume:
            raise SystemExit("--eval needs --resume CHECKPOINT (a file, or 'auto' with a checkpoint in --output-dir)")
        load_weights(model, resume, args, finetune=False)
        stats = {}
        folded = model if args.no_fold or not hasattr(model, "depths") else nextvit.fold_batchnorm(model)
        stats = evaluate(
            loader_val,
            folded,
            device,
            dtype,
            args.print_freq,
            is_main(args),
            distributed=dist_eval,
            count_first=count_first,
        )
        log(
            args,
            f"* Acc@1 {stats['acc1']:.3f} Acc@5 {stats['acc5']:.3f} loss {stats['loss']:.3f}"
            f" ({'unfolded' if args.no_fold else 'BatchNorm folded'})",
        )
        log(args, f"Accuracy of the network on the {stats['images']} test images: {stats['acc1']:.1f}%")
        if output_dir and is_main(args):
            (output_dir / "eval.json").write_text(json.dumps(dict(stats, checkpoint=resume, folded=not args.no_fold)))
        return 0

    if args.repeated_aug:
        sampler_train = RepeatAugSampler(dataset_train, num_replicas=args.world_size, rank=args.rank, shuffle=True)
    elif args.distributed:
        sampler_train = torch.utils.data.DistributedSampler(dataset_train, shuffle=True, seed=args.seed)
    else:
        sampler_train = torch.utils.data.RandomSampler(dataset_train)
    if len(dataset_train) < args.batch_size * args.world_size:
        raise SystemExit(
            f"--batch-size {args.batch_size} x {args.world_size} process(es) is larger than the "
            f"{len(dataset_train)} training images in {args.data_path}"
        )
    loader_train = torch.utils.data.DataLoader(
        dataset_train,
        sampler=sampler_train,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        drop_last=True,
        persistent_workers=args.num_workers > 0,
    )

    mixup_fn = None
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
        criterion = SoftTargetCrossEntropy()
    elif args.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()

    if finetune_path:
        load_weights(model, finetune_path, args, finetune=True)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.local_rank] if device.type == "cuda" else None
        )

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
        cooldown_epochs=0,
    )
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    model_ema = ModelEmaV3(model_without_ddp, decay=args.model_ema_decay) if args.model_ema else None

    best_acc1, start_epoch = 0.0, args.start_epoch
    if resume and not args.finetune:
        state = read_training_state(resume)
        load_weights(model_without_ddp, resume, args, finetune=False)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            # timm's schedulers are functions of the epoch: their state is their settings. Settings
            # given now (say a longer --epochs) win over the checkpoint's, and the change is logged.
            fresh = lr_scheduler.state_dict()
            changed = {k: (v, fresh[k]) for k, v in state["lr_scheduler"].items() if k in fresh and fresh[k] != v}
            if changed:
                log(
                    args,
                    "lr schedule differs from the checkpoint's, using the new one: "
                    + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()),
                )
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if model_ema is not None and state.get("model_ema"):
                model_ema.module.load_state_dict(state["model_ema"])
            start_epoch = state["epoch"] + 1
            best_acc1 = state.get("best_acc1", 0.0)
            log(args, f"resumed from {resume}: epoch {state['epoch']} done, best Acc@1 {best_acc1:.2f}")

    writer = None
    if args.tensorboard and output_dir and is_main(args):
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:
            log(args, "--tensorboard: tensorboard is not installed; logging to log.txt only")

    if output_dir and is_main(args):
        with open(output_dir / "args.yaml", "w") as f:
            yaml.safe_dump(
                {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, f, sort_keys=False
            )

    if start_epoch >= args.epochs:
        log(
            args, f"nothing to train: the checkpoint has finished epoch {start_epoch - 1} and --epochs is {args.epochs}"
        )
    log(
        args,
        f"training for {max(0, args.epochs - start_epoch)} epoch(s) from epoch {start_epoch}: lr {args.scaled_lr:.3g} "
        f"(global batch {args.batch_size * args.world_size}), {len(loader_train)} steps/epoch",
    )
    total_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        if hasattr(sampler_train, "set_epoch"):
            sampler_train.set_epoch(epoch)
        lr_scheduler.step(epoch)
        try:
            train_stats = train_one_epoch(
                model,
                criterion,
                loader_train,
                optimizer,
                device,
                epoch,
                scaler,
                dtype,
                args.clip_grad or None,
                mixup_fn,
                model_ema,
                args.print_freq,
                is_main(args),
            )
        except NonFiniteLossError as err:
            last = output_dir / "checkpoint.pth" if output_dir else None
            kept = f"; the last good checkpoint is {last}" if last and last.is_file() else ""
            raise SystemExit(f"{err}{kept}") from None
        test_stats = evaluate(
            loader_val,
            model,
            device,
            dtype,
            args.print_freq,
            is_main(args),
            distributed=dist_eval,
            count_first=count_first,
        )
        is_best = test_stats["acc1"] > best_acc1
        best_acc1 = max(best_acc1, test_stats["acc1"])
        log(args, f"* Acc@1 {test_stats['acc1']:.3f} Acc@5 {test_stats['acc5']:.3f} loss {test_stats['loss']:.3f}")
        log(args, f"Accuracy of the network on the {test_stats['images']} test images: {test_stats['acc1']:.1f}%")
        log(args, f"Max accuracy: {best_acc1:.2f}%")
        row = dict(
            epoch=epoch,
            lr=train_stats["lr"],
            train_loss=train_stats["loss"],
            test_loss=test_stats["loss"],
            test_acc1=test_stats["acc1"],
            test_acc5=test_stats["acc5"],
            epoch_time=round(train_stats["time"], 2),
            images_per_s=round(train_stats["images_per_s"], 2),
            max_memory_mb=round(max_memory_mb(device), 1),
        )
        if model_ema is not None:
            row["test_acc1_ema"] = evaluate(
                loader_val,
                model_ema.module,
                device,
                dtype,
                args.print_freq,
                False,
                distributed=dist_eval,
                count_first=count_first,
            )["acc1"]
        if output_dir and is_main(args):
            state = dict(
                model=model_without_ddp.state_dict(),
                optimizer=optimizer.state_dict(),
                lr_scheduler=lr_scheduler.state_dict(),
                epoch=epoch,
                best_acc1=best_acc1,
                scaler=scaler.state_dict() if scaler is not None else None,
                model_ema=model_ema.module.state_dict() if model_ema is not None else None,
                args={
                    k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)
                    for k, v in vars(args).items()
                },
            )
            atomic_torch_save(state, output_dir / "checkpoint.pth")
            if is_best:
                atomic_torch_save(state, output_dir / "checkpoint_best.pth")
            with open(output_dir / "log.txt", "a") as f:
                f.write(json.dumps(row) + "\n")
            plot_curves(output_dir / "log.txt", output_dir / "curves.png")
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch)
        if args.distributed:
            dist.barrier()

    log(args, f"training time {datetime.timedelta(seconds=int(time.time() - total_start))}, best Acc@1 {best_acc1:.2f}")
    if output_dir and is_main(args) and hasattr(model_without_ddp, "depths"):
        nextvit.save_checkpoint(model_without_ddp, output_dir / "model.safetensors")
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
        (output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    try:
        code = main(arguments)
    except DataError as error:  # e.g. an unreadable image met while training
        raise SystemExit(f"data error: {error}") from None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)
