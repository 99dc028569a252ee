"""Parameters and FLOPs of a Next-ViT variant, counted the way the paper counted them.

    python -m nextvit.flops --model nextvit_small --input-size 224

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP; convs, linears, matmuls,
BatchNorm and adaptive pooling are counted; elementwise ops, softmax and average pooling are not).
fvcore has no rule for `scaled_dot_product_attention`, which this package uses for E-MHSA, so a
rule is added that counts its two matrix products (q k^T and attn v), as the paper's figures do.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_flops", "main"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sdpa_flop(inputs, outputs) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    *batch, n, d = q
    m = k[-2]
    v_dim = get_shape(inputs[2])[-1]
    return math.prod(batch) * n * m * (d + v_dim)


def count_flops(model: nn.Module, input_size: Sequence[int] | int = 224, batch_size: int = 1) -> int:
    """fvcore FLOPs of one forward pass at `input_size` (an int, or (H, W))."""
    from fvcore.nn import FlopCountAnalysis

    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    in_chans = getattr(model, "in_chans", 3)
    x = torch.zeros(batch_size, in_chans, h, w)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with torch.no_grad():
            return int(analysis.total())
    finally:
        model.train(was_training)


def main(argv: Sequence[str] | None = None) -> int:
    from .factory import create_model, list_models

    parser = argparse.ArgumentParser(prog="python -m nextvit.flops", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=list_models(), help="variant name")
    parser.add_argument(
        "--input-size", type=int, nargs="+", default=[224], metavar="S", help="side, or height and width (default 224)"
    )
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--folded", action="store_true", help="count the BatchNorm-folded model")
    args = parser.parse_args(argv)
    if len(args.input_size) not in (1, 2):
        parser.error("--input-size takes one side or a height and a width")
    size = args.input_size[0] if len(args.input_size) == 1 else tuple(args.input_size)

    model = create_model(args.model, num_classes=args.num_classes)
    if args.folded:
        from .folding import fold_batchnorm

        model = fold_batchnorm(model)
    params, flops = count_params(model), count_flops(model, size)
    shape = f"{size}x{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"
    print(f"model       {args.model}{' (folded)' if args.folded else ''}")
    print(f"input       {shape}")
    print(f"parameters  {params:,} ({params / 1e6:.2f} M)")
    print(f"FLOPs       {flops:,} ({flops / 1e9:.2f} G, fvcore, one MAC = one FLOP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
