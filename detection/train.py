"""Train a detector from a config with mmengine's Runner (launched by dist_train.sh)."""

from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from nextvit.mm import allow_mmengine_checkpoints


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a Next-ViT detector (mmdetection 3.x)")
    parser.add_argument("config", help="config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default ./work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from a checkpoint; with no value, from the latest in the work dir",
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision (the configs already use it on CUDA)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help="accepted for compatibility")
    return parser.parse_args(argv)


def adapt_to_machine(cfg: Config) -> None:
    """On a machine without CUDA: gloo instead of NCCL, and fp32 instead of fp16 (AMP needs CUDA)."""
    if torch.cuda.is_available():
        return
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    if cfg.launcher == "pytorch" and not torch.distributed.is_initialized():
        # mmengine's own init_dist selects a CUDA device first; join the gloo group here instead
        torch.distributed.init_process_group(backend="gloo")
    if cfg.launcher == "pytorch":  # DDP over CPU modules takes no device ids
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
    if cfg.get("optim_wrapper", {}).get("type") == "AmpOptimWrapper":
        cfg.optim_wrapper.type = "OptimWrapper"
        cfg.optim_wrapper.pop("loss_scale", None)
        print("no CUDA device: training in float32 (the config's fp16 AmpOptimWrapper needs CUDA)")


def load_config(args: argparse.Namespace) -> Config:
    """The config with --cfg-options merged, the launcher and the work dir set."""
    allow_mmengine_checkpoints()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    default_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or default_dir
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp and torch.cuda.is_available():
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    adapt_to_machine(cfg)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    os.makedirs(cfg.work_dir, exist_ok=True)
    Runner.from_cfg(cfg).train()


if __name__ == "__main__":
    main()
