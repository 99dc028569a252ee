"""Parameters and FLOPs of a detector or segmentor config (get_flops.py of detection/ and segmentation/).

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP) and, as in the paper's
backbone figures, include the attention matrix products; `attention=False` leaves them out, as
mmcv's counter did for the original release's figures. The model runs in its `tensor` mode on one
zero image of the given shape, as mmdetection's and mmsegmentation's own get_flops tools do.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config, DictAction
from torch import nn

from ..flops import _sdpa_flop
from .runner import sync_bn_to_bn

__all__ = ["count_detector", "count_model", "count_segmentor", "flops_main"]


def _build(config: str, cfg_options: dict | None, registry) -> nn.Module:
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # counting needs no weights
    sync_bn_to_bn(cfg.model)  # the same arithmetic, without a process group
    return registry.build(cfg.model).eval()


def count_model(model: nn.Module, shape: tuple[int, int], attention: bool = True) -> dict:
    """Parameters (all, trainable, backbone) and FLOPs (all, backbone) of a built mm model."""
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, torch.zeros(1, 3, *shape))
        analyzer.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop if attention else None)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
        backbone = analyzer.by_module()["backbone"]
    return dict(
        params=parameter_count(model)[""],
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        backbone_params=sum(p.numel() for p in model.backbone.parameters()),
        flops=flops,
        backbone_flops=backbone,
    )


def count_detector(
    config: str, shape: tuple[int, int], cfg_options: dict | None = None, attention: bool = True
) -> dict:
    """An mmdet config: backbone, FPN, RPN, and the box and mask heads on the RPN's proposals."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    register_all_modules()
    model = _build(config, cfg_options, MODELS)
    h, w = shape
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                         ori_shape=(h, w), scale_factor=(1.0, 1.0)))  # fmt: skip
    model.forward = partial(model._forward, batch_data_samples=[sample])
    return count_model(model, shape, attention)


def count_segmentor(
    config: str, shape: tuple[int, int], cfg_options: dict | None = None, attention: bool = True
) -> dict:
    """An mmseg config: backbone, neck and decode head run; the auxiliary head (training only) is counted in
    the parameters and reported as `auxiliary_params`."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    model = _build(config, cfg_options, MODELS)
    result = count_model(model, shape, attention)
    aux = model.auxiliary_head.parameters() if model.with_auxiliary_head else ()
    result["auxiliary_params"] = sum(p.numel() for p in aux)
    return result


def flops_main(
    argv: list[str] | None,
    description: str,
    count: Callable[..., dict],
    default_shape: tuple[int, int],
    describe_params: Callable[[dict], str],
) -> int:
    """The command line of get_flops.py: parameters, and FLOPs with and without the attention matrix products."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config")
    parser.add_argument("--shape", type=int, nargs="+", default=list(default_shape), help="input height and width")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error("--shape takes one side or a height and a width")
    shape = (args.shape[0], args.shape[-1])
    r = count(args.config, shape, args.cfg_options)
    without = count(args.config, shape, args.cfg_options, attention=False)
    print(f"config       {args.config}")
    print(f"input        1x3x{shape[0]}x{shape[1]}")
    print(f"parameters   {describe_params(r)}")
    print(f"FLOPs        {r['flops'] / 1e9:.1f} G (backbone {r['backbone_flops'] / 1e9:.1f} G)")
    print(f"             {without['flops'] / 1e9:.1f} G without the attention matrix products (as mmcv counted)")
    return 0
