"""Train a detector from a config with mmengine's Runner (launched by dist_train.sh or slurm_train.sh)."""

from __future__ import annotations

from nextvit.mm.runner import train, train_arg_parser


def main(argv=None) -> None:
    train(train_arg_parser("Train a Next-ViT detector (mmdetection 3.x)").parse_args(argv))


if __name__ == "__main__":
    main()
