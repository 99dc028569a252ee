"""The layers of a folded model: `DeployConv2d` and `DeployLinear`, fast in eager mode on CPU.

`nextvit.fold_batchnorm` puts them in place of the model's convs and E-MHSA's linear layers. They
keep the parameters and state-dict keys of `nn.Conv2d` and `nn.Linear`. On CPU, without autograd,
they run oneDNN with their weights packed once (cached until the weights change) and, for convs,
channels-last activations with the following ReLU and the block's residual sum fused in: work that
eager PyTorch otherwise repeats on every call. Anywhere else (GPU, training, tracing, export,
torch.compile, TorchScript) they compute the same thing with the plain PyTorch ops.

The oneDNN entry points are private ops of PyTorch (`torch.ops.mkldnn.*`); whether this build and
this CPU have them is probed on first use, not on import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .model import FusesResidualConv, is_symbolic

__all__ = ["DeployConv2d", "DeployLinear", "mkldnn_usable", "mkldnn_bf16_supported"]

_MKLDNN_OPS = (
    "_convolution_pointwise",
    "_reorder_convolution_weight",
    "_linear_pointwise",
    "_reorder_linear_weight",
)


@functools.cache
def mkldnn_usable() -> bool:
    """Whether this PyTorch build has oneDNN and the private ops the deploy layers call."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(hasattr(ops, name) for name in _MKLDNN_OPS)


@functools.cache
def mkldnn_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); elsewhere bf16 convs
    are emulated and slower than float32."""
    try:
        return mkldnn_usable() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _PackedWeightCache:
    """Shared by the deploy layers: when to take the oneDNN path, and the packed weights it uses."""

    @torch.jit.unused
    def _fast_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype to run oneDNN in (float32, or bfloat16 for bf16 inputs or under CPU autocast
        to bf16 where the CPU has bf16 units), or None for the plain PyTorch path."""
        if is_symbolic() or torch.onnx.is_in_onnx_export():  # first: `x` may be a Proxy
            return None
        if x.device.type != "cpu" or torch.is_grad_enabled() or not torch.backends.mkldnn.enabled:
            return None
        if not mkldnn_usable():
            return None
        dtype = x.dtype
        if dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        if dtype == torch.float32 and self.weight.dtype == torch.float32:
            return dtype
        if dtype == torch.bfloat16 and self.weight.dtype in (torch.float32, torch.bfloat16) and mkldnn_bf16_supported():
            return dtype
        return None

    def _adopt_inference_weight(self) -> None:
        """Swap a weight made under `torch.inference_mode()` for a normal copy, once.

        An inference tensor has no version counter, so the cache could not see it change (an
        in-place `load_state_dict` under inference mode would leave stale packed weights). A model
        built, folded or deep-copied inside `inference_mode` has only such weights: its first call
        swaps each for a copy made outside inference mode, whose changes are tracked as usual.
        """
        weight = self.weight
        with torch.inference_mode(False), torch.no_grad():
            self.weight = nn.Parameter(weight.clone(), requires_grad=weight.requires_grad)

    def _cached(self, key: tuple, pack: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        if self.weight.is_inference():
            self._adopt_inference_weight()
        version = (self.weight._version, self.weight.data_ptr())
        key = (*key, dtype)
        hit = self._packed.get(key)
        if hit is None or hit[0] != version:
            if len(self._packed) >= 16:
                self._packed.clear()
            hit = self._packed[key] = (version, pack(self.weight.detach().to(dtype)))
        return hit[1]

    def __getstate__(self) -> dict:  # copies and pickles drop the packed weights: they are only a cache
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state


class DeployConv2d(_PackedWeightCache, FusesResidualConv):
    """An inference conv with an optional fused ReLU, fast in eager mode on CPU.

    On the CPU path (float32 or bfloat16, no autograd, not tracing, exporting or compiling) oneDNN
    runs with the weight reordered once into its blocked layout and with channels-last
    activations. Elsewhere it is `relu(conv2d(x))`. Parameters and state-dict keys are those of
    `nn.Conv2d`.
    """

    def __init__(self, *args, fused_relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused_relu = fused_relu
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
        """A DeployLinear sharing `linear`'s parameters."""
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
