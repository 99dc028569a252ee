"""Next-ViT on the OpenMMLab stack (mmengine, mmdet 3.x, mmseg 1.x): needs `pip install nextvit[mm]`.

Importing this package registers `NextViTBackbone`, which is what the detection and segmentation
configs ask for:

    custom_imports = dict(imports=["nextvit.mm"], allow_failed_imports=False)

One concern a module:

* `backbone`: the registered `NextViTBackbone` adapter;
* `convert`: checkpoints of the original release's detectors and segmentors, and mmengine's own;
* `runner`: the train/test command lines and config handling that detection/ and segmentation/ share;
* `flops`: parameters and FLOPs of a detector or segmentor config (get_flops.py of both folders).

`runner` and `flops` are imported on demand (`from nextvit.mm.runner import ...`).
"""

from .backbone import NextViTBackbone
from .convert import allow_mmengine_checkpoints, convert_mm_checkpoint

__all__ = ["NextViTBackbone", "allow_mmengine_checkpoints", "convert_mm_checkpoint"]
