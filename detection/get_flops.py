"""Parameters and FLOPs of a detector config, counted with mmengine's analysis tools.

    python get_flops.py configs/mask_rcnn_nextvit_small_1x.py --shape 800 1280

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP) and, as in the paper's
backbone figures, include the attention matrix products. The detector runs in its `tensor` mode
on one zero image of the given shape (backbone, FPN, RPN, and the box and mask heads on the RPN's
proposals), as mmdetection's own get_flops tool does. The counting is `nextvit.mm.flops`.
"""

from __future__ import annotations

from nextvit.mm.flops import count_detector as count
from nextvit.mm.flops import flops_main

__all__ = ["count", "main"]


def describe_params(r: dict) -> str:
    return (
        f"{r['params'] / 1e6:.2f} M ({r['trainable_params'] / 1e6:.2f} M trainable; backbone "
        f"{r['backbone_params'] / 1e6:.2f} M)"
    )


def main(argv: list[str] | None = None) -> int:
    return flops_main(argv, __doc__.split("\n")[0], count, (800, 1280), describe_params)


if __name__ == "__main__":
    raise SystemExit(main())
