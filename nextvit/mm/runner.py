"""What detection/ and segmentation/ train.py and test.py share: arguments, config loading, CPU adaptation.

Both tasks run mmengine's Runner on an OpenMMLab 3.x config and differ only in the metrics their
test.py names, so the rest lives here once:

* `train_arg_parser` / `test_arg_parser`: the flags of the original tools (`--work-dir`,
  `--resume`, `--cfg-options` (also `--options`), `--launcher`, `--local_rank`); `--launcher slurm`
  takes the ranks from srun's variables (slurm_train.sh, slurm_test.sh);
* `load_config`: the config with overrides merged, the launcher and work dir set;
* `adapt_to_machine`: the same config runs on a machine without CUDA (gloo, DDP without device
  ids, fp32 instead of fp16 AMP, BatchNorm instead of SyncBatchNorm) and under either launcher;
* `train` / `test`: the whole of train.py, and test.py around each task's own metric flags.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
from collections.abc import Callable

import torch
from mmengine.config import Config, ConfigDict, DictAction

from ..launch import export_rendezvous, slurm_launch
from .convert import allow_mmengine_checkpoints, convert_mm_checkpoint

__all__ = [
    "adapt_to_machine",
    "join_slurm_job",
    "load_config",
    "sync_bn_to_bn",
    "test",
    "test_arg_parser",
    "train",
    "train_arg_parser",
]


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cfg-options", "--options", nargs="+", action=DictAction, help="override config settings, key=value"
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm"],
        default="none",
        help="none: one process; pytorch: started by torchrun (dist_*.sh); slurm: started by srun (slurm_*.sh)",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help="accepted for compatibility")


def train_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default ./work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from a checkpoint; with no value, from the latest in the work dir",
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision (fp16 AMP; needs CUDA)")
    _common_args(parser)
    return parser


def test_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="where the evaluation log goes")
    _common_args(parser)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The config with --cfg-options merged, the launcher and the work dir set."""
    allow_mmengine_checkpoints()
    if not osp.isfile(args.config):
        raise SystemExit(f"config file not found: {args.config}")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    default_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or default_dir
    return cfg


def sync_bn_to_bn(node: object) -> int:
    """Replace every `type="SyncBN"` norm config by `type="BN"`; return how many were replaced.

    SyncBatchNorm needs a process group on GPUs; the same arithmetic without one is BatchNorm."""
    replaced = 0
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
            replaced += 1
        for value in node.values():
            replaced += sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced += sync_bn_to_bn(value)
    return replaced


def join_slurm_job() -> None:
    """Under `--launcher slurm`: write the rendezvous of srun's tasks as torchrun's variables.

    mmengine's slurm launcher asks `scontrol` for the first host (absent in many containers) and
    uses port 29500 for every job; with `MASTER_ADDR` and `MASTER_PORT` set it uses those, here
    the first host of the node list and a port derived from the job id (`nextvit.launch`).
    """
    try:
        launch = slurm_launch()
    except ValueError as err:
        raise SystemExit(f"--launcher slurm: {err}") from None
    if launch is None:
        raise SystemExit(
            "--launcher slurm: SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID are not all set; start the "
            "processes with srun (slurm_train.sh, slurm_test.sh), or use --launcher pytorch under torchrun"
        )
    export_rendezvous(launch)
    if launch.rank == 0:
        print(launch.describe(), flush=True)


def adapt_to_machine(cfg: Config) -> None:
    """Make a GPU config run where it is launched.

    SyncBatchNorm only synchronises CUDA tensors across processes, so it becomes BatchNorm unless
    the run is distributed on GPUs. Without CUDA: gloo instead of NCCL, DDP without device ids,
    and fp32 instead of fp16 (AMP needs CUDA). Under `--launcher slurm`, see `join_slurm_job`.
    """
    if cfg.launcher == "slurm":
        join_slurm_job()
    cuda = torch.cuda.is_available()
    if not (cuda and cfg.launcher != "none") and sync_bn_to_bn(cfg.model):
        print("SyncBN -> BN: this run is not distributed over GPUs")
    if cuda:
        return
    cfg.setdefault("env_cfg", ConfigDict()).setdefault("dist_cfg", ConfigDict())["backend"] = "gloo"
    if cfg.launcher != "none" and not torch.distributed.is_initialized():
        # mmengine's own init_dist selects a CUDA device first; join the gloo group here instead
        # (from torchrun's variables, which join_slurm_job has written under srun)
        torch.distributed.init_process_group(backend="gloo")
    if cfg.launcher != "none":  # DDP over CPU modules takes no device ids
        wrapper = dict(cfg.get("model_wrapper_cfg") or {})
        wrapper.update(type=wrapper.get("type", "MMDistributedDataParallel"), device_ids=None, broadcast_buffers=False)
        cfg.model_wrapper_cfg = wrapper
    if cfg.get("optim_wrapper", {}).get("type") == "AmpOptimWrapper":
        cfg.optim_wrapper.type = "OptimWrapper"
        cfg.optim_wrapper.pop("loss_scale", None)
        print("no CUDA device: training in float32 (the config's fp16 AmpOptimWrapper needs CUDA)")


def train(args: argparse.Namespace) -> None:
    """Build mmengine's Runner from the config and train (train.py of both task folders)."""
    from mmengine.runner import Runner

    cfg = load_config(args)
    if args.amp and torch.cuda.is_available():
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    elif args.amp:
        print("--amp ignored: mixed precision needs a CUDA device")
    adapt_to_machine(cfg)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.isfile(args.resume):
            raise SystemExit(f"--resume: checkpoint not found: {args.resume}")
        cfg.resume, cfg.load_from = True, args.resume
    elif cfg.get("load_from"):  # fine-tuning from a detector/segmentor of the original release
        os.makedirs(cfg.work_dir, exist_ok=True)
        cfg.load_from = convert_mm_checkpoint(cfg.load_from, cfg.model.backbone.arch, cfg.work_dir)
    os.makedirs(cfg.work_dir, exist_ok=True)
    Runner.from_cfg(cfg).train()


def test(args: argparse.Namespace, configure: Callable[[Config, argparse.Namespace], None] | None = None) -> None:
    """Evaluate `args.checkpoint` with mmengine's Runner (test.py of both task folders).

    Checkpoints of the original release are converted first; `configure` applies the task's own
    flags (metrics, outputs) to the config before it is adapted to the machine.
    """
    from mmengine.runner import Runner

    cfg = load_config(args)
    cfg.load_from = convert_mm_checkpoint(args.checkpoint, cfg.model.backbone.arch, cfg.work_dir)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone: no pretrained file needed
    if configure is not None:
        configure(cfg, args)
    adapt_to_machine(cfg)
    Runner.from_cfg(cfg).test()
