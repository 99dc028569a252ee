"""Semantic segmentation with Next-ViT on your images: drawn predictions and their JSON.

    python segmentation/image_demo.py photos/ segmentation/configs/fpn_512_nextvit_small_80k.py \
        work_dirs/iter_80000.pth --out-dir outputs/

Runs mmseg's MMSegInferencer on the config and checkpoint; writes OUT/vis/<image> and
OUT/preds/<image stem>.json (see nextvit/mm/demo.py).
"""

import sys

from nextvit.mm.demo import run_image_demo

if __name__ == "__main__":
    sys.exit(run_image_demo("segmentation"))
