"""`create_model` and `list_models`: build a variant by name, optionally with weights.

These names are this package's own: nothing is registered in timm's global registry, so
`timm.create_model("nextvit_small")` keeps building timm's model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch

from .checkpoint import LoadReport, checkpoint_is_folded, load_checkpoint, read_checkpoint
from .folding import fold_batchnorm
from .model import VARIANTS, NextViT, NextViTFeatures, build_nextvit
from .pretrained import PRETRAINED, download_pretrained, get_pretrained_cfg, model_cfg

__all__ = ["create_model", "list_models", "model_from_state"]

log = logging.getLogger(__name__)


def list_models(pretrained: bool = False) -> list[str]:
    """Variant names, or with `pretrained=True` the released weights as 'arch.tag'."""
    return sorted(PRETRAINED) if pretrained else sorted(VARIANTS)


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    num_classes: int = 1000,
    features_only: bool = False,
    out_indices: Sequence[int] = (0, 1, 2, 3),
    **kwargs,
) -> NextViT | NextViTFeatures:
    """Build a Next-ViT by name ('nextvit_small', or 'nextvit_small.bd_in1k_384' for a release).

    Args:
        pretrained: download the release's weights (timm's Hub mirror); 'arch' alone means its
            ImageNet-1K 224 weights.
        checkpoint_path: load this file instead (ByteDance, timm or nextvit layout). A folded
            checkpoint gives a folded model. The classifier is dropped, and left freshly
            initialised, when `num_classes` differs from the checkpoint's.
        num_classes: classes of the head; 0 for a headless backbone.
        features_only: return a `NextViTFeatures` that outputs the stage maps of `out_indices`
            (weights are loaded before the model is cut).
        **kwargs: architecture overrides (`drop_path_rate`, `kv_pool`, `global_pool`, ...). A
            checkpoint written by this package also sets `kv_pool` (the pooling it was trained
            with) unless it is given here; a conflicting value is an error.
    """
    arch = name.split(".", 1)[0]
    release = None
    if pretrained or "." in name:
        release = get_pretrained_cfg(name)  # validates the tag even when no weights are loaded
    if pretrained and checkpoint_path is None:
        checkpoint_path = download_pretrained(release)
    if checkpoint_path is not None:
        state, meta = read_checkpoint(checkpoint_path)
        model, _ = model_from_state(arch, state, meta, where=str(checkpoint_path), num_classes=num_classes, **kwargs)
    else:
        model = build_nextvit(arch, num_classes=num_classes, **kwargs)
    model.pretrained_cfg = model.default_cfg = model_cfg(release, num_classes, model.in_chans)
    if features_only:
        return NextViTFeatures(model, out_indices)
    return model


def model_from_state(
    arch: str,
    state: Mapping[str, torch.Tensor],
    meta: Mapping[str, str],
    *,
    where: str,
    num_classes: int = 1000,
    drop_head: bool | None = None,
    **kwargs,
) -> tuple[NextViT, LoadReport]:
    """Build `arch` and load a checkpoint already read by `read_checkpoint` (the one loading path
    of `create_model` and of the exporters, so both apply the same rules).

    The pooling the checkpoint was trained with (`kv_pool` in its metadata) is used unless
    `kv_pool` is given; a conflicting value is a ValueError. A folded checkpoint gives a folded
    model. `drop_head` as in `load_checkpoint`. Returns the model and what was loaded.
    """
    saved_pool = meta.get("kv_pool")
    if saved_pool in ("1d", "2d") and kwargs.setdefault("kv_pool", saved_pool) != saved_pool:
        raise ValueError(
            f"{where} was trained with kv_pool={saved_pool!r}, but kv_pool={kwargs['kv_pool']!r} "
            "was asked for; drop the argument to use the checkpoint's"
        )
    model = build_nextvit(arch, num_classes=num_classes, **kwargs)
    if checkpoint_is_folded(state, meta):
        fold_batchnorm(model, inplace=True)
    report = load_checkpoint(model, state, strict=True, drop_head=drop_head, meta=meta, where=where)
    log.info(report.summary())
    return model, report
