"""Mask R-CNN with Next-ViT on your images: drawn predictions and their JSON.

    python detection/image_demo.py photos/ detection/configs/mask_rcnn_nextvit_small_1x.py \
        work_dirs/epoch_12.pth --out-dir outputs/

Runs mmdet's DetInferencer on the config and checkpoint; writes OUT/vis/<image> and
OUT/preds/<image stem>.json (see nextvit/mm/demo.py).
"""

import sys

from nextvit.mm.demo import run_image_demo

if __name__ == "__main__":
    sys.exit(run_image_demo("detection"))
