"""Evaluate a segmentor checkpoint with mmengine's Runner (launched by dist_test.sh or slurm_test.sh).

python test.py CONFIG CHECKPOINT --eval mIoU              # single scale, whole image
python test.py CONFIG CHECKPOINT --eval mIoU --aug-test   # multi-scale (0.5-1.75) + flip
"""

from __future__ import annotations

import argparse

from mmengine.config import Config

from nextvit.mm.runner import test, test_arg_parser

IOU_METRICS = ("mIoU", "mDice", "mFscore")


def apply_flags(cfg: Config, args: argparse.Namespace) -> None:
    """The segmentation flags: metrics, label-map and drawn outputs, and multi-scale + flip testing."""
    if args.eval:
        cfg.test_evaluator.iou_metrics = list(args.eval)
    if args.out:
        cfg.test_evaluator.update(output_dir=args.out, keep_results=True)
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, interval=1)
        cfg.visualizer.save_dir = args.show_dir
    if args.aug_test:
        if "tta_pipeline" not in cfg or "tta_model" not in cfg:
            raise SystemExit(f"--aug-test: {args.config} defines no tta_pipeline/tta_model")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model


def main(argv: list[str] | None = None) -> None:
    parser = test_arg_parser("Test a Next-ViT segmentor (mmsegmentation 1.x)")
    parser.add_argument(
        "--eval",
        nargs="+",
        choices=IOU_METRICS,
        default=None,
        help="metrics to compute besides aAcc (the original's flag; default: the config's, mIoU)",
    )
    parser.add_argument(
        "--aug-test",
        "--tta",
        action="store_true",
        help="multi-scale + flip testing: the config's tta_pipeline (the 'ms' column in segmentation/README.md)",
    )
    parser.add_argument("--out", help="also write the predicted label maps as PNGs into this folder")
    parser.add_argument("--show-dir", help="draw predictions over the images into this folder")
    test(parser.parse_args(argv), apply_flags)


if __name__ == "__main__":
    main()
