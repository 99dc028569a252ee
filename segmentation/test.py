"""Evaluate a segmentor checkpoint with mmengine's Runner (launched by dist_test.sh).

python test.py CONFIG CHECKPOINT --eval mIoU              # single scale, whole image
python test.py CONFIG CHECKPOINT --eval mIoU --aug-test   # multi-scale (0.5-1.75) + flip
"""

from __future__ import annotations

from mmengine.runner import Runner

from nextvit.mm import convert_mm_checkpoint
from nextvit.mm_runner import adapt_to_machine, load_config, test_arg_parser

IOU_METRICS = ("mIoU", "mDice", "mFscore")


def main(argv=None) -> None:
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
        help="multi-scale + flip testing: the config's tta_pipeline (the README's 'ms' column)",
    )
    parser.add_argument("--out", help="also write the predicted label maps as PNGs into this folder")
    parser.add_argument("--show-dir", help="draw predictions over the images into this folder")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = convert_mm_checkpoint(args.checkpoint, cfg.model.backbone.arch, cfg.work_dir)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone: no pretrained file needed
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
    adapt_to_machine(cfg)
    Runner.from_cfg(cfg).test()


if __name__ == "__main__":
    main()
