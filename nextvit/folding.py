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
* every conv becomes a `DeployConv2d` (same parameters, same state-dict keys) with the ReLU that
  follows it fused in. On CPU, without autograd, it runs oneDNN with its weights packed once and
  in channels-last layout: the work eager PyTorch otherwise repeats on every call. Anywhere else
  (GPU, training, tracing, export, torch.compile) it is a plain conv followed by a ReLU.

Unlike the original, folding changes the modules (and so the state-dict keys) instead of setting
flags, so a folded model saved and loaded elsewhere cannot silently apply its BNs twice.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .model import (
    ChannelAffine,
    ConvAttention,
    ConvMlp,
    ConvNormAct,
    EfficientAttention,
    NextConvBlock,
    NextTransformerBlock,
    PatchEmbed,
    is_symbolic,
)

__all__ = ["fold_batchnorm", "has_batchnorm", "DeployConv2d", "DeployLinear", "mkldnn_bf16_supported"]

_BatchNorm = nn.modules.batchnorm._BatchNorm


def _mkldnn_usable() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name)
        for name in (
            "_convolution_pointwise",
            "_reorder_convolution_weight",
            "_linear_pointwise",
            "_reorder_linear_weight",
        )
    )


_MKLDNN = _mkldnn_usable()


def mkldnn_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); elsewhere bf16 convs
    are emulated and slower than float32."""
    try:
        return _MKLDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_MKLDNN_BF16 = mkldnn_bf16_supported()


class _PackedWeightCache:
    """Shared by the deploy layers: when to take the oneDNN path, and the packed weights it uses."""

    @torch.jit.unused
    def _fast_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype to run oneDNN in (float32, or bfloat16 for bf16 inputs or under CPU autocast
        to bf16 where the CPU has bf16 units), or None for the plain PyTorch path."""
        if is_symbolic() or torch.onnx.is_in_onnx_export():  # first: `x` may be a Proxy
            return None
        if not (_MKLDNN and torch.backends.mkldnn.enabled and x.device.type == "cpu" and not torch.is_grad_enabled()):
            return None
        dtype = x.dtype
        if dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        if dtype == torch.float32 and self.weight.dtype == torch.float32:
            return dtype
        if dtype == torch.bfloat16 and _MKLDNN_BF16 and self.weight.dtype in (torch.float32, torch.bfloat16):
            return dtype
        return None

    def _cached(self, key: tuple, pack, dtype: torch.dtype) -> torch.Tensor:
        version = (self.weight._version, self.weight.data_ptr())
        key = (*key, dtype)
        hit = self._packed.get(key)
        if hit is None or hit[0] != version:
            if len(self._packed) >= 16:
                self._packed.clear()
            hit = self._packed[key] = (version, pack(self.weight.detach().to(dtype)))
        return hit[1]

    def __getstate__(self):  # copies and pickles drop the packed weights: they are only a cache
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state


class DeployConv2d(_PackedWeightCache, nn.Conv2d):
    """An inference conv with an optional fused ReLU, fast in eager mode on CPU.

    On the CPU path (float32, no autograd, not tracing, exporting or compiling) oneDNN runs with
    the weight reordered once into its blocked layout (cached until the weight changes) and with
    channels-last activations. Elsewhere it is `relu(conv2d(x))`. Parameters and state-dict keys
    are those of `nn.Conv2d`.
    """

    def __init__(self, *args, fused_relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused_relu = fused_relu
        self.fuses_residual = True  # blocks test for this attribute (statically, in TorchScript)
        self._packed: dict = {}

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, fused_relu: bool = False) -> DeployConv2d:
        """A DeployConv2d sharing `conv`'s parameters."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            fused_relu=fused_relu,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        new.weight, new.bias = conv.weight, conv.bias
        return new.train(conv.training)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """relu?(conv(x)), plus `residual` when given (added after the ReLU)."""
        if not torch.jit.is_scripting():
            dtype = self._fast_dtype(x)
            if dtype is not None and self.padding_mode == "zeros" and not isinstance(self.padding, str):
                return self._mkldnn_forward(x, residual, dtype)
        out = self._conv_forward(x, self.weight, self.bias)
        if self.fused_relu:
            out = F.relu(out, inplace=True)
        return out if residual is None else residual + out

    @torch.jit.unused
    def _mkldnn_forward(self, x: torch.Tensor, residual: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        bias = None if self.bias is None else self.bias.to(dtype)
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        packed = self._cached(
            tuple(x.shape[1:]),
            lambda w: torch.ops.mkldnn._reorder_convolution_weight(w, *geometry, list(x.shape)),
            dtype,
        )
        if residual is None or self.fused_relu:
            out = torch.ops.mkldnn._convolution_pointwise(
                x, packed, bias, *geometry, "relu" if self.fused_relu else "none", [], ""
            )
            return out if residual is None else residual + out
        residual = residual.to(dtype).contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, packed, bias, *geometry, "add", None, None, [], None
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", fused_relu=True" if self.fused_relu else "")


class DeployLinear(_PackedWeightCache, nn.Linear):
    """An inference linear layer: oneDNN with a packed weight on CPU, `F.linear` elsewhere."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: dict = {}

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> DeployLinear:
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        new.weight, new.bias = linear.weight, linear.bias
        return new.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            dtype = self._fast_dtype(x)
            if dtype is not None and self.bias is not None:
                return self._mkldnn_forward(x, dtype)
        return F.linear(x, self.weight, self.bias)

    @torch.jit.unused
    def _mkldnn_forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        packed = self._cached((rows,), lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows), dtype)
        x = x.to(dtype).contiguous()
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias.to(dtype), "none", [], "")


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


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
