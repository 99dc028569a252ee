"""Next-ViT: the blocks, the model, the variant table and the factories.

Paper: "Next-ViT: Next Generation Vision Transformer for Efficient Deployment in Realistic
Industrial Scenarios", Li et al., 2022 (https://arxiv.org/abs/2207.05501).

This is the one definition of the backbone in this repository; classification, detection,
segmentation and deployment all import it from here. State-dict keys follow the layout of timm's
port (`stem.*`, `stages.S.blocks.B.*`, `norm.*`, `head.fc.*`), so checkpoints move between the two
without renaming; `nextvit.checkpoint` maps the original ByteDance layout onto it by name.
"""

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import _symbolic_trace
from torch.utils.checkpoint import checkpoint

from .pretrained import model_cfg

__all__ = [
    "NextViT",
    "NextConvBlock",
    "NextTransformerBlock",
    "EfficientAttention",
    "ConvAttention",
    "FusesResidualConv",
    "NextViTFeatures",
    "VARIANTS",
    "build_nextvit",
    "export_dynamic_shapes",
]

# FX symbolic tracing (torch >= 2.5 tells it apart from torch.export, which is_fx_tracing also covers)
is_fx_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)

NORM_EPS = 1e-5
HEAD_DIM = 32
KvPool = Literal["1d", "2d"]


def _make_divisible(value: float, divisor: int) -> int:
    """Round to the nearest multiple of `divisor`, never dropping more than 10% (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=NORM_EPS)


def is_symbolic() -> bool:
    """True while shapes are symbolic: jit or FX tracing, torch.compile / torch.export.

    Input checks and data-dependent branches step aside there (a Proxy or SymInt cannot be tested
    in Python); in TorchScript the checks are compiled out instead (see `NextViT.forward_features`).
    """
    if torch.jit.is_scripting():
        return False
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or is_fx_tracing()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class ChannelAffine(nn.Module):
    """Per-channel `x * weight + bias` on NCHW maps: what a standalone BatchNorm folds into."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class FusesResidualConv(nn.Conv2d):
    """A conv that adds the block's residual itself: `forward(x, residual)` is `residual + conv(x)`
    (after any activation of its own), in one kernel where it can (`nextvit.deploy_layers`).

    NCB and NTB hand their residual sums in eval mode to the last conv of MHCA and of the MLP when
    it is one. They test for the class constant `fuses_residual` with `hasattr`, not for the class
    with `isinstance`: TorchScript cannot test a submodule's class, but decides `hasattr` on a
    submodule when it compiles and leaves the other branch out (a plain `nn.Conv2d` takes no
    residual argument).
    """

    __constants__ = [*nn.Conv2d.__constants__, "fuses_residual"]
    fuses_residual = True

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, self.bias)
        return out if residual is None else residual + out


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """3x3 conv (no bias), BatchNorm, ReLU: the unit of the stem."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.norm = _batch_norm(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchEmbed(nn.Module):
    """Changes resolution and/or width at the start of a block.

    stride 2: 2x2 average pool (ceil mode, so odd sides keep their last row), 1x1 conv, BN;
    a width change alone: 1x1 conv, BN; otherwise nothing.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"PatchEmbed stride must be 1 or 2, got {stride}")
        if stride == 2:
            self.pool: nn.Module = nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.Identity()
        if stride == 2 or in_chs != out_chs:
            self.conv: nn.Module = nn.Conv2d(in_chs, out_chs, 1, bias=False)
            self.norm: nn.Module = _batch_norm(out_chs)
        else:
            self.conv = nn.Identity()
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.pool(x)))


class ConvAttention(nn.Module):
    """MHCA, multi-head convolutional attention: a grouped 3x3 conv with one group per head
    (head dim 32), BN, ReLU, then a 1x1 projection that mixes the heads."""

    def __init__(self, chs: int, head_dim: int = HEAD_DIM) -> None:
        super().__init__()
        if chs % head_dim:
            raise ValueError(f"MHCA width {chs} is not a multiple of the head dim {head_dim}")
        self.group_conv3x3 = nn.Conv2d(chs, chs, 3, padding=1, groups=chs // head_dim, bias=False)
        self.norm: nn.Module = _batch_norm(chs)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(chs, chs, 1, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = self.act(self.norm(self.group_conv3x3(x)))
        if residual is None:
            return self.projection(x)
        if hasattr(self.projection, "fuses_residual"):  # a FusesResidualConv (folded models') adds it itself
            return self.projection(x, residual)
        return residual + self.projection(x)


class ConvMlp(nn.Module):
    """1x1 conv, ReLU, 1x1 conv (both with bias), on NCHW maps."""

    def __init__(self, chs: int, mlp_ratio: float, drop: float = 0.0) -> None:
        super().__init__()
        hidden = _make_divisible(chs * mlp_ratio, 32)
        self.fc1 = nn.Conv2d(chs, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, chs, 1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.drop(self.act(self.fc1(x)))
        if residual is not None and not self.training and hasattr(self.fc2, "fuses_residual"):
            return self.fc2(hidden, residual)  # dropout is the identity: the FusesResidualConv adds the sum
        out = self.drop(self.fc2(hidden))
        return out if residual is None else residual + out


class NextConvBlock(nn.Module):
    """NCB: x = embed(x); x += MHCA(x); x += MLP(BN(x)), with MLP ratio 3."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        drop_path: float = 0.0,
        drop: float = 0.0,
        head_dim: int = HEAD_DIM,
        mlp_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chs, out_chs, stride)
        self.mhca = ConvAttention(out_chs, head_dim)
        self.attn_drop_path = DropPath(drop_path)
        self.norm: nn.Module = _batch_norm(out_chs)
        self.mlp = ConvMlp(out_chs, mlp_ratio, drop)
        self.mlp_drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.training:
            x = x + self.attn_drop_path(self.mhca(x))
            return x + self.mlp_drop_path(self.mlp(self.norm(x)))
        # eval: drop paths are identities, so the residual sums can be fused into the last convs
        x = self.mhca(x, residual=x)
        return self.mlp(self.norm(x), residual=x)


class EfficientAttention(nn.Module):
    """E-MHSA: multi-head self-attention whose keys and values come from average-pooled tokens.

    Queries use all N tokens; keys and values use tokens pooled by the stage's reduction ratio sr
    and normalised by a BatchNorm. Two poolings are offered:

    * ``"1d"`` (default, what the released weights were trained with): the tokens, in raster order,
      are averaged in consecutive runs of sr*sr, and a trailing remainder is dropped. A run can
      cross a row border, so this is not a spatial sr x sr box (bytedance/Next-ViT#2).
    * ``"2d"``: a true sr x sr spatial average (ceil mode, partial windows averaged over what they
      cover). Released weights were not trained with it; use it for training from scratch.

    After `fuse()` (called by `nextvit.fold_batchnorm`) the BNs before and after pooling live in
    the projections and k/v (or q/k/v when sr == 1) become one matrix product.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = HEAD_DIM,
        sr_ratio: int = 1,
        kv_pool: KvPool = "1d",
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"E-MHSA width {dim} is not a multiple of the head dim {head_dim}")
        if kv_pool not in ("1d", "2d"):
            raise ValueError(f"kv_pool must be '1d' or '2d', got {kv_pool!r}")
        self.dim = dim
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.sr_ratio = int(sr_ratio)
        self.kv_pool = kv_pool
        self.q: nn.Linear | None = nn.Linear(dim, dim)
        self.k: nn.Linear | None = nn.Linear(dim, dim)
        self.v: nn.Linear | None = nn.Linear(dim, dim)
        self.kv: nn.Linear | None = None
        self.qkv: nn.Linear | None = None
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.norm: nn.Module | None = nn.BatchNorm1d(dim, eps=NORM_EPS) if self.sr_ratio > 1 else None

    def pool_tokens(self, tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, N, C) tokens -> (B, M, C) pooled tokens for the keys and values."""
        s = self.sr_ratio
        b, n, c = tokens.shape[0], tokens.shape[1], tokens.shape[2]
        if self.kv_pool == "1d":
            m = n // (s * s)
            if not is_symbolic() and m == 0:
                raise ValueError(
                    f"E-MHSA 1-D pooling needs at least {s * s} tokens, got {n} (feature map {hw[0]}x{hw[1]});"
                    " use a larger input"
                )
            return tokens[:, : m * s * s].reshape(b, m, s * s, c).mean(2)
        grid = tokens.transpose(1, 2).reshape(b, c, hw[0], hw[1])
        grid = F.avg_pool2d(grid, s, s, ceil_mode=True, count_include_pad=False)
        return grid.flatten(2).transpose(1, 2)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = tokens.shape[0], tokens.shape[1], tokens.shape[2]
        if self.qkv is not None:  # fused, sr == 1
            qkv = self.qkv(tokens).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q = self._split_heads(self.q(tokens))
            kv_tokens = tokens
            if self.sr_ratio > 1:
                kv_tokens = self.pool_tokens(tokens, hw)
                if self.norm is not None:
                    m = kv_tokens.shape[1]
                    kv_tokens = self.norm(kv_tokens.reshape(b * m, c)).view(b, m, c)
            if self.kv is not None:  # fused
                m = kv_tokens.shape[1]
                kv = self.kv(kv_tokens).view(b, m, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
                k, v = kv[0], kv[1]
            else:
                k, v = self._split_heads(self.k(kv_tokens)), self._split_heads(self.v(kv_tokens))
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Concatenate the k and v (and q, when nothing is pooled) projections into one."""
        if self.k is None:  # already fused
            return
        if self.norm is not None:
            raise RuntimeError("fold the key/value BatchNorm into k and v before fusing")
        if self.sr_ratio > 1:
            self.kv = _concat_linears([self.k, self.v])
        else:
            self.qkv = _concat_linears([self.q, self.k, self.v])
            self.q = None
        self.k = None
        self.v = None


def _concat_linears(layers: Sequence[nn.Linear]) -> nn.Linear:
    first = layers[0]
    fused = nn.Linear(first.in_features, sum(layer.out_features for layer in layers))
    fused = fused.to(device=first.weight.device, dtype=first.weight.dtype)
    fused.weight.copy_(torch.cat([layer.weight for layer in layers]))
    fused.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return fused


class NextTransformerBlock(nn.Module):
    """NTB: E-MHSA on a 75% slice of the width, MHCA on the remaining 25%, concatenated, then an MLP.

    x = embed(x) to the E-MHSA width; x += E-MHSA(BN(x)); o = proj(x) to the MHCA width;
    o += MHCA(o); x = cat(x, o); x += MLP(BN(x)) with MLP ratio 2.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        drop_path: float = 0.0,
        sr_ratio: int = 1,
        kv_pool: KvPool = "1d",
        head_dim: int = HEAD_DIM,
        mlp_ratio: float = 2.0,
        mix_block_ratio: float = 0.75,
        attn_drop: float = 0.0,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.mhsa_out_chs = _make_divisible(int(out_chs * mix_block_ratio), 32)
        self.mhca_out_chs = out_chs - self.mhsa_out_chs
        if self.mhca_out_chs <= 0:
            raise ValueError(f"NTB width {out_chs} leaves no channels for MHCA")
        self.patch_embed = PatchEmbed(in_chs, self.mhsa_out_chs, stride)
        self.norm1: nn.Module = _batch_norm(self.mhsa_out_chs)
        self.e_mhsa = EfficientAttention(self.mhsa_out_chs, head_dim, sr_ratio, kv_pool, attn_drop, drop)
        self.mhsa_drop_path = DropPath(drop_path * mix_block_ratio)
        self.projection = PatchEmbed(self.mhsa_out_chs, self.mhca_out_chs, stride=1)
        self.mhca = ConvAttention(self.mhca_out_chs, head_dim)
        self.mhca_drop_path = DropPath(drop_path * (1 - mix_block_ratio))
        self.norm2: nn.Module = _batch_norm(out_chs)
        self.mlp = ConvMlp(out_chs, mlp_ratio, drop)
        self.mlp_drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        channels_last = not is_symbolic() and x.is_contiguous(memory_format=torch.channels_last)
        normed = self.norm1(x)
        if channels_last:  # (B, C, H, W) stored as (B, H, W, C): tokens are a free view
            tokens = normed.permute(0, 2, 3, 1).reshape(b, h * w, c)
            attn = self.e_mhsa(tokens, (h, w)).view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            tokens = normed.flatten(2).transpose(1, 2)
            attn = self.e_mhsa(tokens, (h, w)).transpose(1, 2).reshape(b, c, h, w)
        x = x + self.mhsa_drop_path(attn)
        out = self.projection(x)
        if self.training:
            out = out + self.mhca_drop_path(self.mhca(out))
            x = torch.cat([x, out], dim=1)
            return x + self.mlp_drop_path(self.mlp(self.norm2(x)))
        out = self.mhca(out, residual=out)
        x = torch.cat([x, out], dim=1)
        return self.mlp(self.norm2(x), residual=x)


class NextStage(nn.Module):
    """The blocks of one stage, with optional gradient checkpointing per block."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if self.grad_checkpointing and torch.is_grad_enabled():
                for block in self.blocks:
                    x = checkpoint(block, x, use_reentrant=False)
                return x
        return self.blocks(x)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

# Widths per stage: the NCB width, then the NTB width (stage 0 has no NTB).
DEFAULT_WIDTHS: tuple[tuple[int, ...], ...] = ((96,), (192, 256), (384, 512), (768, 1024))


def stage_plan(depths: Sequence[int], widths: Sequence[Sequence[int]]) -> list[list[tuple[str, int]]]:
    """The Next Hybrid Strategy as a list of (block type, output width) per stage.

    stage 0: NCB x d; stage 1: NCB x (d-1), NTB; stage 2: [NCB x 4, NTB] x (d/5); stage 3: NCB x (d-1), NTB.
    """
    if len(depths) != 4 or len(widths) != 4:
        raise ValueError(f"Next-ViT has 4 stages: got depths {tuple(depths)} and {len(widths)} widths")
    if any(d < 1 for d in depths):
        raise ValueError(f"every stage needs at least one block, got depths {tuple(depths)}")
    if depths[2] % 5:
        raise ValueError(f"stage 2 repeats [NCB x 4, NTB]: its depth must be a multiple of 5, got {depths[2]}")
    if len(widths[0]) < 1 or any(len(w) < 2 for w in widths[1:]):
        raise ValueError(f"widths need (ncb,) for stage 0 and (ncb, ntb) for stages 1-3, got {widths}")
    ncb, ntb = "ncb", "ntb"
    return [
        [(ncb, widths[0][0])] * depths[0],
        [(ncb, widths[1][0])] * (depths[1] - 1) + [(ntb, widths[1][1])],
        ([(ncb, widths[2][0])] * 4 + [(ntb, widths[2][1])]) * (depths[2] // 5),
        [(ncb, widths[3][0])] * (depths[3] - 1) + [(ntb, widths[3][1])],
    ]


class NextViT(nn.Module):
    """Next-ViT: a 4-conv stem, four stages of NCBs and NTBs, final BN, average pool, linear head.

    Follows timm's backbone contract: `forward_features`, `forward_head`, `reset_classifier`,
    `get_classifier`, `set_grad_checkpointing`, `forward_intermediates` and `feature_info`.

    Args:
        depths: blocks per stage (S (3, 4, 10, 3), B (3, 4, 20, 3), L (3, 4, 30, 3)).
        widths: per stage, the NCB width and then the NTB width.
        stem_chs: widths of the first three stem convs (the fourth keeps the third's).
        strides: stride of the first block of each stage.
        sr_ratios: E-MHSA key/value reduction per stage.
        kv_pool: "1d" (original, default) or "2d" token pooling in E-MHSA, see `EfficientAttention`.
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        num_classes: classes of the linear head; 0 for no head.
        global_pool: pooling before the head, timm's names: "avg" (the paper's), "max", "avgmax",
            "catavgmax" (avg and max concatenated, twice the head's input width), or "" for none
            (only without a head: `forward_head` then returns the final maps).
        variant: the name in `VARIANTS` this configuration comes from ("" for a custom one), set
            by `build_nextvit`; checkpoints record it and loading errors name it.
    """

    __jit_unused_properties__ = ["is_folded"]  # TorchScript compiles properties unless told not to

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 10, 3),
        widths: Sequence[Sequence[int]] = DEFAULT_WIDTHS,
        stem_chs: Sequence[int] = (64, 32, 64),
        strides: Sequence[int] = (1, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        kv_pool: KvPool = "1d",
        head_dim: int = HEAD_DIM,
        mix_block_ratio: float = 0.75,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        variant: str = "",
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if kv_pool not in ("1d", "2d"):
            raise ValueError(f"kv_pool must be '1d' or '2d', got {kv_pool!r}")
        plan = stage_plan(depths, widths)
        self.depths = tuple(int(d) for d in depths)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.kv_pool = kv_pool
        self.variant = variant
        self.grad_checkpointing = False

        self.stem = nn.Sequential(
            ConvNormAct(in_chans, stem_chs[0], stride=2),
            ConvNormAct(stem_chs[0], stem_chs[1]),
            ConvNormAct(stem_chs[1], stem_chs[2]),
            ConvNormAct(stem_chs[2], stem_chs[2], stride=2),
        )
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        in_chs, block_idx = stem_chs[2], 0
        stages, self.feature_info = [], []
        for stage_idx, stage in enumerate(plan):
            blocks: list[nn.Module] = []
            for i, (kind, out_chs) in enumerate(stage):
                stride = strides[stage_idx] if i == 0 else 1
                rate = rates[block_idx]
                if kind == "ncb":
                    blocks.append(NextConvBlock(in_chs, out_chs, stride, rate, drop_rate, head_dim))
                else:
                    blocks.append(
                        NextTransformerBlock(
                            in_chs,
                            out_chs,
                            stride,
                            rate,
                            sr_ratios[stage_idx],
                            kv_pool,
                            head_dim,
                            mix_block_ratio=mix_block_ratio,
                            attn_drop=attn_drop_rate,
                            drop=drop_rate,
                        )
                    )
                in_chs, block_idx = out_chs, block_idx + 1
            stages.append(NextStage(blocks))
            reduction = 4 * math.prod(strides[: stage_idx + 1])
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"stages.{stage_idx}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_chs
        self.norm: nn.Module = _batch_norm(in_chs)
        self.head = ClassifierHead(in_chs, num_classes, drop_rate, global_pool)
        self.global_pool = global_pool
        # timm's data config (input size, crop, interpolation, mean/std, first conv, classifier);
        # `create_model` replaces it by the chosen release's.
        self.pretrained_cfg: dict = model_cfg(None, num_classes, in_chans)
        self.default_cfg = self.pretrained_cfg
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- the timm contract ------------------------------------------------------------------

    @property
    def is_folded(self) -> bool:
        """True once `nextvit.fold_batchnorm` has removed the BatchNorms (an inference-only model)."""
        return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by depth (for layer-wise learning-rate decay), in timm's format."""
        blocks = r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for `num_classes` (0: no head, pooled features out;
        with `global_pool=''`, unpooled maps)."""
        self.head.reset(num_classes, global_pool)
        self.num_classes = num_classes
        self.global_pool = self.head.pool_type

    @torch.jit.unused
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the problem when `x` is not a batch this model can take.

        Skipped while shapes are symbolic (tracing, FX, export); exporters check them on their own.
        """
        if is_symbolic():
            return
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D batch (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[2] < 32 or x.shape[3] < 32:
            raise ValueError(f"expected both sides to be at least 32 pixels, got {x.shape[2]}x{x.shape[3]}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and final norm: (B, C, H, W) image -> (B, num_features, H/32, W/32) map."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Multi-scale outputs for dense tasks: the raw output of each stage in `indices`.

        Args:
            indices: stage indices (negative counts from the end), or an int n for the last n
                stages; None for all four (strides 4/8/16/32).
            norm: apply the final norm to the last stage's output when it is returned.
            stop_early: skip the stages after the last one asked for (with `intermediates_only`).
            intermediates_only: return only the list of maps, not (final features, maps).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = self._stage_indices(indices)
        self.check_input(x)
        x = self.stem(x)
        last = max(take) if (stop_early or intermediates_only) else len(self.stages) - 1
        maps = []
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                maps.append(self.norm(x) if norm and i == len(self.stages) - 1 else x)
        if intermediates_only:
            return maps
        return self.norm(x), maps

    def _stage_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        n = len(self.stages)
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices}: ask for between 1 and {n} stages")
            return list(range(n - indices, n))
        out = []
        for i in indices:
            if not -n <= i < n:
                raise ValueError(f"stage index {i} out of range for {n} stages")
            out.append(i % n)
        return sorted(set(out))


def export_dynamic_shapes(batch: bool = True, max_side: int = 4096, max_batch: int = 1024) -> tuple[dict, ...]:
    """`dynamic_shapes` for `torch.export.export(model, (images,), dynamic_shapes=...)` with a
    dynamic height and width (and batch).

    The sides are multiples of 32, what mmdet and mmseg pad their inputs to: the stride-2 average
    pools use ceil mode, whose output size guards on the remainder of each side, so a side that
    is any integer cannot be expressed. The example input must have such sides too, and a batch of
    at least 2 when the batch is dynamic (torch.export specialises a size of 1).
    """
    from torch.export import Dim

    steps = max_side // 32
    dims: dict = {2: 32 * Dim("h32", min=1, max=steps), 3: 32 * Dim("w32", min=1, max=steps)}
    if batch:
        dims[0] = Dim("batch", min=1, max=max_batch)
    return (dims,)


class FeatureInfo(list):
    """The `feature_info` of a features-only model: one dict per returned map, with timm's accessors."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class NextViTFeatures(nn.Module):
    """A Next-ViT cut to its stem and stages that returns the maps of `out_indices` (a list, strides
    4/8/16/32 for indices 0-3); stages after the last one asked for are dropped.

    What `create_model(..., features_only=True)` returns, as timm does; the stage modules keep their
    names (`stem.*`, `stages.S.*`), so a classification checkpoint loads into it with the head and
    final norm reported as unexpected keys.
    """

    def __init__(self, model: NextViT, out_indices: Sequence[int] = (0, 1, 2, 3)) -> None:
        super().__init__()
        take = model._stage_indices(list(out_indices))
        self.out_indices: list[int] = take
        self.in_chans = model.in_chans
        self.variant = model.variant
        self.stem = model.stem
        self.stages = model.stages[: max(take) + 1]
        self.feature_info = FeatureInfo(model.feature_info[i] for i in take)
        self.pretrained_cfg = model.pretrained_cfg
        self.default_cfg = self.pretrained_cfg
        self._model_check = model.check_input

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not torch.jit.is_scripting():
            self._model_check(x)
        x = self.stem(x)
        maps: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                maps.append(x)
        return maps


GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax", "")


class ClassifierHead(nn.Module):
    """Global pool (average by default), dropout, linear (`head.fc`)."""

    __jit_unused_properties__ = ["pooled_chs"]

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        self.in_chs = in_chs
        self.pool_type = "avg"
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()
        self._build(num_classes, global_pool)  # the model's init draws the weights

    @property
    def pooled_chs(self) -> int:
        return 2 * self.in_chs if self.pool_type == "catavgmax" else self.in_chs

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier (truncated normal, std 0.02, as the model's init) and/or another pooling."""
        self._build(num_classes, global_pool)
        if isinstance(self.fc, nn.Linear):
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)

    def _build(self, num_classes: int, global_pool: str | None) -> None:
        pool = self.pool_type if global_pool is None else global_pool
        if pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {pool!r}")
        if pool == "" and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0: a linear head needs pooled features")
        self.pool_type = pool
        self.fc = nn.Linear(self.pooled_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean((2, 3))
        elif self.pool_type == "max":
            x = x.amax((2, 3))
        elif self.pool_type == "avgmax":
            x = 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        elif self.pool_type == "catavgmax":
            x = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


# --------------------------------------------------------------------------------------------
# Variants and factories
# --------------------------------------------------------------------------------------------

# Architecture of each model name. "tiny" is this project's small test variant (not in the paper).
VARIANTS: dict[str, dict] = {
    "nextvit_small": dict(depths=(3, 4, 10, 3), drop_path_rate=0.1),
    "nextvit_base": dict(depths=(3, 4, 20, 3), drop_path_rate=0.2),
    "nextvit_large": dict(depths=(3, 4, 30, 3), drop_path_rate=0.2),
    "nextvit_tiny": dict(
        depths=(1, 1, 5, 1),
        widths=((32,), (64, 128), (96, 160), (128, 256)),
        stem_chs=(16, 16, 32),
        drop_path_rate=0.0,
    ),
}


def build_nextvit(name: str, **kwargs) -> NextViT:
    """Build a variant by name with random weights; keyword arguments override its settings."""
    if name not in VARIANTS:
        raise ValueError(f"unknown Next-ViT variant {name!r}; choose one of {sorted(VARIANTS)}")
    return NextViT(**{**VARIANTS[name], **kwargs, "variant": name})
