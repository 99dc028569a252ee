"""Evaluate a detector checkpoint with mmengine's Runner (launched by dist_test.sh)."""

from __future__ import annotations

import argparse

from mmengine.config import DictAction
from mmengine.runner import Runner
from train import adapt_to_machine, load_config

from nextvit.mm import convert_detector_checkpoint

COCO_METRICS = ("bbox", "segm", "proposal")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a Next-ViT detector (mmdetection 3.x)")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="where the evaluation log goes")
    parser.add_argument(
        "--eval",
        nargs="+",
        choices=COCO_METRICS,
        default=None,
        help="COCO metrics to compute (the original's flag; default: the config's)",
    )
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help="accepted for compatibility")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = convert_detector_checkpoint(args.checkpoint, cfg.model.backbone.arch, cfg.work_dir)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone: no pretrained file needed
    if args.eval:
        cfg.test_evaluator.metric = list(args.eval)
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator, dict(type="DumpDetResults", out_file_path=args.out)]
    adapt_to_machine(cfg)
    Runner.from_cfg(cfg).test()


if __name__ == "__main__":
    main()
