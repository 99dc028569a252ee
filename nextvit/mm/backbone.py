"""`NextViTBackbone`: Next-ViT as an OpenMMLab backbone, shared by mmdetection 3.x and mmsegmentation 1.x.

The class is registered in mmengine's root model registry, which mmdet's and mmseg's registries
fall back to, so both build it without a scope prefix. It wraps the package's one `NextViT` and
adds what dense tasks need: the stage outputs to return, frozen stages, BatchNorms kept in eval
mode, optional per-stage output norms, and pretrained loading from any checkpoint layout the
package reads (ByteDance, timm, its own, or an mmdet/mmseg checkpoint through `prefix`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

from ..checkpoint import CheckpointError, LoadReport, load_checkpoint, read_checkpoint
from ..model import NORM_EPS, VARIANTS, NextViT

__all__ = ["ARCHS", "NextViTBackbone"]


def _distributed_on_gpus() -> bool:
    dist = torch.distributed
    return torch.cuda.is_available() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# the names the configs use for the package's variants
ARCHS = {"small": "nextvit_small", "base": "nextvit_base", "large": "nextvit_large", "tiny": "nextvit_tiny"}


@MODELS.register_module()
class NextViTBackbone(BaseModule):
    """Next-ViT returning multi-scale feature maps (strides 4, 8, 16, 32).

    Args:
        arch: "small", "base", "large", "tiny" (also as "nextvit_small" ...), or a dict of
            `NextViT` arguments.
        out_indices: stages whose outputs are returned (channels 96/256/512/1024 for S/B/L).
        frozen_stages: -1 freezes nothing; 0 the stem; k > 0 the stem and stages 0..k-1
            (parameters without gradients, modules kept in eval mode).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        with_extra_norm: a BatchNorm on each returned stage output. The last stage's is the
            classifier's final norm, so it loads from a classification checkpoint (`norm.*`) as in
            the released segmentation runs; the others start fresh.
        drop_path_rate: stochastic depth; None keeps the variant's (S 0.1, B/L 0.2).
        kv_pool: E-MHSA key/value pooling, "1d" (released weights) or "2d".
        with_cp: gradient checkpointing per block, to save memory.
        norm_cfg: dict(type="SyncBN") converts the BatchNorms to SyncBatchNorm in runs distributed
            over several GPUs; otherwise, and for any other value, the model keeps BatchNorm.
        init_cfg: dict(type="Pretrained", checkpoint=PATH, prefix=None) loads a checkpoint by name
            and shape and logs what did not match.
    """

    def __init__(
        self,
        arch: str | dict = "small",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_extra_norm: bool = False,
        drop_path_rate: float | None = None,
        kv_pool: str = "1d",
        with_cp: bool = False,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            name = ARCHS.get(arch, arch)
            if name not in VARIANTS:
                raise ValueError(f"arch must be one of {sorted(ARCHS)} or a dict of NextViT arguments, got {arch!r}")
            settings = dict(VARIANTS[name])
        elif isinstance(arch, dict):
            settings = dict(arch)
        else:
            raise TypeError(f"arch must be a str or a dict, got {type(arch).__name__}")
        if drop_path_rate is not None:
            settings["drop_path_rate"] = drop_path_rate
        self.model = NextViT(**settings, kv_pool=kv_pool, num_classes=0)
        num_stages = len(self.model.stages)
        self.out_indices = tuple(sorted({i % num_stages for i in out_indices}))
        if not out_indices or any(not -num_stages <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices must pick stages in [0, {num_stages}), got {tuple(out_indices)}")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in [-1, {num_stages}], got {frozen_stages}")
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_extra_norm = with_extra_norm
        self.out_channels = [self.model.feature_info[i]["num_chs"] for i in self.out_indices]

        last = num_stages - 1
        if with_extra_norm:
            self.extra_norms = nn.ModuleDict(
                {str(i): nn.BatchNorm2d(self.model.feature_info[i]["num_chs"], eps=NORM_EPS)
                 for i in self.out_indices if i != last}
            )  # fmt: skip
        if not (with_extra_norm and last in self.out_indices):
            self.model.norm = nn.Identity()  # unused: keep it out of the parameters
        if with_cp:
            self.model.set_grad_checkpointing(True)
        if norm_cfg is not None and norm_cfg.get("type") == "SyncBN" and _distributed_on_gpus():
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.model.stem, *self.model.stages[: self.frozen_stages]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> NextViTBackbone:
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True, stop_early=True)
        if self.with_extra_norm:
            last = len(self.model.stages) - 1
            maps = [
                self.model.norm(m) if i == last else self.extra_norms[str(i)](m) for i, m in zip(self.out_indices, maps)
            ]
        return tuple(maps)

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            self.load_pretrained(cfg["checkpoint"], cfg.get("prefix"))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, path: str, prefix: str | None = None) -> LoadReport:
        """Load a classification (or det/seg) checkpoint into the backbone, by name and shape.

        The report (also logged, and kept as `self.load_report`) lists what did not match."""
        state, _ = read_checkpoint(path)
        if prefix:
            prefix = prefix if prefix.endswith(".") else prefix + "."
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointError(f"{path}: no key starts with the prefix {prefix!r}")
        if state and all(k.startswith("model.") for k in state):  # saved from this adapter
            state = {k[len("model.") :]: v for k, v in state.items()}
        report = load_checkpoint(self.model, state, strict=False, drop_head=True)
        report.path = str(path)
        if not report.loaded:
            raise CheckpointError(f"{path}: nothing matched the backbone\n{report.summary()}")
        print_log(f"NextViTBackbone: {report.summary()}", logger="current")
        self.load_report = report
        self._freeze()
        return report
