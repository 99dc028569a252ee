"""Train a segmentor from a config with mmengine's Runner (launched by dist_train.sh or slurm_train.sh)."""

from __future__ import annotations

from nextvit.mm.runner import train, train_arg_parser


def main(argv=None) -> None:
    train(train_arg_parser("Train a Next-ViT segmentor (mmsegmentation 1.x)").parse_args(argv))


if __name__ == "__main__":
    main()
