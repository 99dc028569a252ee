"""Parameters and FLOPs of a detector config, counted with mmengine's analysis tools.

    python get_flops.py configs/mask_rcnn_nextvit_small_1x.py --shape 800 1280

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP) and, as in the paper's
backbone figures, include the attention matrix products. The detector runs in its `tensor` mode
on one zero image of the given shape (backbone, FPN, RPN, and the box and mask heads on the RPN's
proposals), as mmdetection's own get_flops tool does.
"""

from __future__ import annotations

from functools import partial

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config

from nextvit.mm_runner import flops_main


def count(config: str, shape: tuple[int, int], cfg_options: dict | None = None, attention: bool = True) -> dict:
    """Parameters and FLOPs; `attention=False` leaves out the attention matrix products (as mmcv did)."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    from nextvit.flops import _sdpa_flop

    register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # counting needs no weights
    model = MODELS.build(cfg.model).eval()
    h, w = shape
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                         ori_shape=(h, w), scale_factor=(1.0, 1.0)))  # fmt: skip
    model.forward = partial(model._forward, batch_data_samples=[sample])
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, torch.zeros(1, 3, h, w))
        analyzer.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop if attention else None)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
        backbone = analyzer.by_module()["backbone"]
    params = parameter_count(model)[""]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(params=params, trainable_params=trainable, flops=flops, backbone_flops=backbone,
                backbone_params=sum(p.numel() for p in model.backbone.parameters()))  # fmt: skip


def describe_params(r: dict) -> str:
    return (
        f"{r['params'] / 1e6:.2f} M ({r['trainable_params'] / 1e6:.2f} M trainable; backbone "
        f"{r['backbone_params'] / 1e6:.2f} M)"
    )


def main(argv=None) -> int:
    return flops_main(argv, __doc__.split("\n")[0], count, (800, 1280), describe_params)


if __name__ == "__main__":
    raise SystemExit(main())
