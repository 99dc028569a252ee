"""Checkpoints of the mm stack: torch's weights-only loader and the original release's detector/segmentor files.

Kept apart from the backbone because the runner and the tests use them without building a model.
"""

from __future__ import annotations

import torch
from mmengine.logging import print_log

from ..checkpoint import read_checkpoint
from ..model import VARIANTS
from .backbone import ARCHS

__all__ = ["allow_mmengine_checkpoints", "convert_mm_checkpoint"]


def allow_mmengine_checkpoints() -> None:
    """Let torch's weights-only loader read mmengine's own checkpoints.

    Since torch 2.6 `torch.load` refuses unknown globals, and mmengine 0.10 stores its message hub
    (HistoryBuffer objects with numpy arrays, and their statistics methods looked up with
    `getattr`) in every checkpoint. This allows exactly those names. The loader still refuses to
    call anything that is not allowed, so a crafted file cannot run code through them.
    """
    import _codecs
    import collections

    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    core = np._core if hasattr(np, "_core") else np.core
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool")]
    torch.serialization.add_safe_globals(
        [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar,
         _codecs.encode, collections.Counter, getattr, *dtypes]
    )  # fmt: skip


def convert_mm_checkpoint(path: str, arch: str | dict, work_dir: str) -> str:
    """Make a detector or segmentor checkpoint of the original release loadable; return the path to load.

    The original mm checkpoints (Mask R-CNN, Semantic FPN, UperNet) keep the backbone in ByteDance's
    layout (`backbone.features.N.*`, segmentors also `backbone.extra_norm_list.i.*`); this
    package's models expect `backbone.model.stages.S.blocks.B.*` and `backbone.extra_norms.i.*`. mmengine loads
    non-strictly, so without renaming the backbone would silently stay random. Files already in
    this package's layout are returned unchanged; converted weights go to `work_dir`.
    """
    import os

    from ..checkpoint import _BD_BLOCK, bytedance_to_timm
    from ..files import atomic_torch_save

    state, _ = read_checkpoint(path)
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if not any(_BD_BLOCK.match(k) for k in backbone):
        return path
    name = ARCHS.get(arch, arch) if isinstance(arch, str) else None
    depths = tuple(VARIANTS[name]["depths"]) if name in VARIANTS else tuple(arch["depths"])
    # segmentors: the per-stage output norms were `extra_norm_list.i`; the last one was never used
    # (the last stage went through the classifier's `norm`, which keeps its name)
    renamed, unused = {}, []
    last = len(depths) - 1
    for key in [k for k in backbone if k.startswith(("proj_head.", "head."))]:  # the classifier's head
        backbone.pop(key)
        unused.append(key)
    for key in [k for k in backbone if k.startswith("extra_norm_list.")]:
        index, rest = key[len("extra_norm_list.") :].split(".", 1)
        value = backbone.pop(key)
        if int(index) == last:
            unused.append(key)
        else:
            renamed[f"backbone.extra_norms.{index}.{rest}"] = value
    renamed |= {f"backbone.model.{k}": v for k, v in bytedance_to_timm(backbone, depths).items()}
    state = {k: v for k, v in state.items() if not k.startswith("backbone.")} | renamed
    out = os.path.join(work_dir, "converted_" + os.path.basename(path))
    atomic_torch_save({"state_dict": state}, out)
    dropped = f" (dropped, unused by a dense model: {', '.join(unused)})" if unused else ""
    print_log(f"{path}: backbone renamed from the original layout by name{dropped}; loading {out}", logger="current")
    return out
