"""Next-ViT, defined once: the backbone, BatchNorm folding, checkpoint loading and FLOPs.

>>> import nextvit
>>> model = nextvit.create_model("nextvit_small", checkpoint_path="nextvit_small_in1k_224.pth")
>>> deployable = nextvit.fold_batchnorm(model)
"""

from .checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint,
    read_checkpoint,
    save_bytedance_checkpoint,
    save_checkpoint,
)
from .factory import create_model, list_models
from .folding import fold_batchnorm
from .model import VARIANTS, NextViT, NextViTFeatures, build_nextvit, export_dynamic_shapes
from .pretrained import PRETRAINED, get_pretrained_cfg

__version__ = "0.1.0"

__all__ = [
    "NextViT",
    "NextViTFeatures",
    "export_dynamic_shapes",
    "VARIANTS",
    "PRETRAINED",
    "CheckpointError",
    "LoadReport",
    "build_nextvit",
    "create_model",
    "list_models",
    "fold_batchnorm",
    "get_pretrained_cfg",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "save_bytedance_checkpoint",
]
