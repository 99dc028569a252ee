"""BatchNorm folding for deployment.

`fold_batchnorm` removes every BatchNorm from a Next-ViT model without changing what it computes
(in eval mode):

* a BN that follows a conv (stem, patch embeddings, MHCA's grouped conv, the NTB projection) is
  folded into that conv, which gains a bias;
* a BN that precedes a linear or 1x1 conv (NCB `norm`, NTB `norm1` and `norm2`, and E-MHSA's BN on
  the pooled keys/values) is folded into that layer, as the original `merge_bn` did; average
  pooling commutes with a per-channel affine map, so `norm1` and the pooled BN fold into k and v;
* E-MHSA's k and v projections (q, k and v where nothing is pooled) become one matrix product;
* a BN left on its own (the final norm, the extra norms of dense-task adapters) becomes a
  per-channel affine map, so an exported graph holds no BatchNorm at all;
* every conv becomes a `DeployConv2d` and E-MHSA's linear layers `DeployLinear`s (same
  parameters, same state-dict keys), with the ReLU that follows a conv fused in; on CPU they run
  oneDNN kernels, elsewhere the plain PyTorch ops (see `nextvit.deploy_layers`).

Unlike the original, folding changes the modules (and so the state-dict keys) instead of setting
flags, so a folded model saved and loaded elsewhere cannot silently apply its BNs twice.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .deploy_layers import DeployConv2d, DeployLinear, mkldnn_bf16_supported
from .model import (
    ChannelAffine,
    ConvAttention,
    ConvMlp,
    ConvNormAct,
    EfficientAttention,
    NextConvBlock,
    NextTransformerBlock,
    PatchEmbed,
)

# the deploy layers lived here before nextvit.deploy_layers: still importable from this module
__all__ = ["fold_batchnorm", "DeployConv2d", "DeployLinear", "mkldnn_bf16_supported"]

_BatchNorm = nn.modules.batchnorm._BatchNorm


def _bn_affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BN as y = scale * x + shift, in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it keeps no running statistics (track_running_stats=False)")
    mean = bn.running_mean.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _fold_after(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """conv -> BN becomes one conv with a bias."""
    scale, shift = _bn_affine(bn)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight.data = weight.to(conv.weight.dtype)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


def _fold_before(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """affine -> linear (or 1x1 conv) becomes one layer: W' = W diag(scale), b' = b + W shift."""
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1):
        raise ValueError(f"a preceding BN folds only into an ungrouped 1x1 conv, not {layer}")
    weight = layer.weight.double()
    matrix = weight.reshape(weight.shape[0], weight.shape[1])
    bias = matrix @ shift
    if layer.bias is not None:
        bias = bias + layer.bias.double()
    layer.weight.data = (weight * scale.view(1, -1, *([1] * (weight.ndim - 2)))).to(layer.weight.dtype)
    layer.bias = nn.Parameter(bias.to(layer.weight.dtype))


def _fold_conv_norm(module: nn.Module, conv_name: str) -> None:
    norm = module.norm
    if isinstance(norm, _BatchNorm):
        _fold_after(getattr(module, conv_name), norm)
        module.norm = nn.Identity()


def _fold_ntb(block: NextTransformerBlock) -> None:
    attn: EfficientAttention = block.e_mhsa
    if isinstance(block.norm1, _BatchNorm):
        scale, shift = _bn_affine(block.norm1)
        if attn.q is not None:
            _fold_before(attn.q, scale, shift)
        kv_scale, kv_shift = scale, shift
        if isinstance(attn.norm, _BatchNorm):  # pooled BN after norm1: compose the two
            pool_scale, pool_shift = _bn_affine(attn.norm)
            kv_scale, kv_shift = scale * pool_scale, shift * pool_scale + pool_shift
            attn.norm = None
        for layer in (attn.k, attn.v):
            if layer is not None:
                _fold_before(layer, kv_scale, kv_shift)
        block.norm1 = nn.Identity()
    if isinstance(attn.norm, _BatchNorm):  # norm1 already gone: fold the pooled BN alone
        scale, shift = _bn_affine(attn.norm)
        for layer in (attn.k, attn.v):
            _fold_before(layer, scale, shift)
        attn.norm = None
    attn.fuse()
    if isinstance(block.norm2, _BatchNorm):
        _fold_before(block.mlp.fc1, *_bn_affine(block.norm2))
        block.norm2 = nn.Identity()


def _replace_standalone_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            affine = ChannelAffine(child.num_features).to(child.running_mean.device)
            scale, shift = _bn_affine(child)
            affine.weight.data = scale.to(child.running_mean.dtype)
            affine.bias.data = shift.to(child.running_mean.dtype)
            setattr(module, name, affine)
        elif isinstance(child, _BatchNorm):
            raise ValueError(f"cannot fold the standalone {type(child).__name__} at {name!r}")
        else:
            _replace_standalone_norms(child)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm of a Next-ViT model (or of any module holding its blocks).

    Returns a folded copy in eval mode (the model itself when `inplace=True`). Folding uses the
    running statistics, so it is for inference; folding a folded model changes nothing.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvNormAct):
            _fold_conv_norm(module, "conv")
        elif isinstance(module, PatchEmbed) and isinstance(module.conv, nn.Conv2d):
            _fold_conv_norm(module, "conv")
        elif isinstance(module, ConvAttention):
            _fold_conv_norm(module, "group_conv3x3")
    for module in model.modules():
        if isinstance(module, NextConvBlock) and isinstance(module.norm, _BatchNorm):
            _fold_before(module.mlp.fc1, *_bn_affine(module.norm))
            module.norm = nn.Identity()
        elif isinstance(module, NextTransformerBlock):
            _fold_ntb(module)
    _replace_standalone_norms(model)
    _use_deploy_convs(model)
    return model


def _use_deploy_convs(model: nn.Module) -> None:
    """Swap each conv for a `DeployConv2d`, fusing the ReLU that directly follows it."""
    for module in model.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.norm, nn.Identity):
            if not isinstance(module.conv, DeployConv2d):
                module.conv = DeployConv2d.from_conv(module.conv, fused_relu=True)
                module.act = nn.Identity()
        elif isinstance(module, ConvAttention) and isinstance(module.norm, nn.Identity):
            if not isinstance(module.group_conv3x3, DeployConv2d):
                module.group_conv3x3 = DeployConv2d.from_conv(module.group_conv3x3, fused_relu=True)
                module.act = nn.Identity()
        elif isinstance(module, ConvMlp) and not isinstance(module.fc1, DeployConv2d):
            if isinstance(module.act, nn.ReLU):  # fc1 -> ReLU -> dropout -> fc2
                module.fc1 = DeployConv2d.from_conv(module.fc1, fused_relu=True)
                module.act = nn.Identity()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Conv2d:
                setattr(module, name, DeployConv2d.from_conv(child))
            elif type(child) is nn.Linear and isinstance(module, EfficientAttention):
                setattr(module, name, DeployLinear.from_linear(child))
