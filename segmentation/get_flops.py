"""Parameters and FLOPs of a segmentor config, counted with mmengine's analysis tools.

    python get_flops.py configs/fpn_512_nextvit_small_80k.py --shape 512 2048

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP) and, as in the paper's
backbone figures, include the attention matrix products. The segmentor runs in its `tensor` mode
on one zero image of the given shape (backbone, neck, decode head; the auxiliary head is a
training-only branch and is not run), as mmsegmentation's own get_flops tool does. Parameters
count every module, the auxiliary head included. The counting is `nextvit.mm.flops`.
"""

from __future__ import annotations

from nextvit.mm.flops import count_segmentor as count
from nextvit.mm.flops import flops_main

__all__ = ["count", "main"]


def describe_params(r: dict) -> str:
    return (
        f"{r['params'] / 1e6:.2f} M (backbone {r['backbone_params'] / 1e6:.2f} M, "
        f"auxiliary head {r['auxiliary_params'] / 1e6:.2f} M)"
    )


def main(argv: list[str] | None = None) -> int:
    return flops_main(argv, __doc__.split("\n")[0], count, (512, 2048), describe_params)


if __name__ == "__main__":
    raise SystemExit(main())
