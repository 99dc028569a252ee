"""Parameters and FLOPs of a segmentor config, counted with mmengine's analysis tools.

    python get_flops.py configs/fpn_512_nextvit_small_80k.py --shape 512 2048

FLOPs follow fvcore's convention (one multiply-accumulate is one FLOP) and, as in the paper's
backbone figures, include the attention matrix products. The segmentor runs in its `tensor` mode
on one zero image of the given shape (backbone, neck, decode head; the auxiliary head is a
training-only branch and is not run), as mmsegmentation's own get_flops tool does. Parameters
count every module, the auxiliary head included.
"""

from __future__ import annotations

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config

from nextvit.mm_runner import flops_main


def count(config: str, shape: tuple[int, int], cfg_options: dict | None = None, attention: bool = True) -> dict:
    """Parameters and FLOPs; `attention=False` leaves out the attention matrix products (as mmcv did)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from nextvit.flops import _sdpa_flop
    from nextvit.mm_runner import _sync_bn_to_bn

    register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # counting needs no weights
    _sync_bn_to_bn(cfg.model)  # the same arithmetic, without a process group
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, torch.zeros(1, 3, *shape))
        analyzer.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop if attention else None)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
        backbone = analyzer.by_module()["backbone"]
    params = parameter_count(model)[""]
    aux = sum(p.numel() for p in model.auxiliary_head.parameters()) if model.with_auxiliary_head else 0
    return dict(params=params, flops=flops, backbone_flops=backbone, auxiliary_params=aux,
                backbone_params=sum(p.numel() for p in model.backbone.parameters()))  # fmt: skip


def describe_params(r: dict) -> str:
    return (
        f"{r['params'] / 1e6:.2f} M (backbone {r['backbone_params'] / 1e6:.2f} M, "
        f"auxiliary head {r['auxiliary_params'] / 1e6:.2f} M)"
    )


def main(argv=None) -> int:
    return flops_main(argv, __doc__.split("\n")[0], count, (512, 2048), describe_params)


if __name__ == "__main__":
    raise SystemExit(main())
