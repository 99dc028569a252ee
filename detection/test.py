"""Evaluate a detector checkpoint with mmengine's Runner (launched by dist_test.sh or slurm_test.sh)."""

from __future__ import annotations

import argparse

from mmengine.config import Config

from nextvit.mm.runner import test, test_arg_parser

COCO_METRICS = ("bbox", "segm", "proposal")


def apply_flags(cfg: Config, args: argparse.Namespace) -> None:
    """The detection flags: which COCO metrics, and a dump of the raw predictions."""
    if args.eval:
        cfg.test_evaluator.metric = list(args.eval)
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator, dict(type="DumpDetResults", out_file_path=args.out)]


def main(argv: list[str] | None = None) -> None:
    parser = test_arg_parser("Test a Next-ViT detector (mmdetection 3.x)")
    parser.add_argument(
        "--eval",
        nargs="+",
        choices=COCO_METRICS,
        default=None,
        help="COCO metrics to compute (the original's flag; default: the config's)",
    )
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    test(parser.parse_args(argv), apply_flags)


if __name__ == "__main__":
    main()
