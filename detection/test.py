"""Evaluate a detector checkpoint with mmengine's Runner (launched by dist_test.sh)."""

from __future__ import annotations

from mmengine.runner import Runner

from nextvit.mm import convert_mm_checkpoint
from nextvit.mm_runner import adapt_to_machine, load_config, test_arg_parser

COCO_METRICS = ("bbox", "segm", "proposal")


def main(argv=None) -> None:
    parser = test_arg_parser("Test a Next-ViT detector (mmdetection 3.x)")
    parser.add_argument(
        "--eval",
        nargs="+",
        choices=COCO_METRICS,
        default=None,
        help="COCO metrics to compute (the original's flag; default: the config's)",
    )
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = convert_mm_checkpoint(args.checkpoint, cfg.model.backbone.arch, cfg.work_dir)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone: no pretrained file needed
    if args.eval:
        cfg.test_evaluator.metric = list(args.eval)
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator, dict(type="DumpDetResults", out_file_path=args.out)]
    adapt_to_machine(cfg)
    Runner.from_cfg(cfg).test()


if __name__ == "__main__":
    main()
