"""Detection and segmentation on your images: what detection/image_demo.py and segmentation/image_demo.py share.

Each runs its library's own inferencer (mmdet's `DetInferencer`, mmseg's `MMSegInferencer`) on one
of our configs (the backbone registered through `custom_imports`) and a trained checkpoint, and
writes, for every image, the drawn predictions (`OUT/vis/<image>`) and the raw predictions as JSON
(`OUT/preds/<image stem>.json`: boxes, scores, labels and class names for detection; the class of
each pixel as a PNG plus the pixel count per class for segmentation).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from ..files import atomic_write
from ..images import ImageFileError, collect_images
from .convert import allow_mmengine_checkpoints
from .runner import sync_bn_to_bn

__all__ = ["image_demo_parser", "run_image_demo"]


def image_demo_parser(task: str) -> argparse.ArgumentParser:
    what = "boxes and masks (Mask R-CNN)" if task == "detection" else "per-pixel classes"
    parser = argparse.ArgumentParser(
        description=f"Draw {what} predicted by a Next-ViT model on your images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("config", help="the config the model was trained with (configs/*.py)")
    parser.add_argument("checkpoint", help="the trained checkpoint (mmengine's .pth)")
    parser.add_argument("--out-dir", default=f"outputs/{task}_demo", help="where vis/ and preds/ are written")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    if task == "detection":
        parser.add_argument("--score-thr", type=float, default=0.3, help="draw predictions above this score")
    else:
        parser.add_argument("--opacity", type=float, default=0.5, help="of the drawn class colours")
    return parser


def _config(path: str) -> Config:
    """The config as trained, for inference on this machine: no backbone initialisation (the
    checkpoint has the weights) and BatchNorm in place of SyncBatchNorm."""
    if not Path(path).is_file():
        raise SystemExit(f"error: config {path}: no such file")
    cfg = Config.fromfile(path)
    backbone = cfg.model.get("backbone", {})
    backbone["init_cfg"] = None
    sync_bn_to_bn(cfg.model)
    return cfg


def _write_json(path: Path, record: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))


def _detections_json(image: Path, pred: dict, classes: list[str]) -> dict:
    labels = [int(x) for x in pred.get("labels", [])]
    return dict(
        image=str(image),
        boxes_xyxy=[[round(float(v), 2) for v in box] for box in pred.get("bboxes", [])],
        scores=[round(float(s), 5) for s in pred.get("scores", [])],
        labels=labels,
        names=[classes[i] if 0 <= i < len(classes) else str(i) for i in labels],
        masks="run-length encoded (COCO RLE)" if "masks" in pred else None,
        masks_rle=pred.get("masks"),
    )


def _segmentation_json(image: Path, mask: np.ndarray, classes: list[str], mask_file: Path) -> dict:
    ids, counts = np.unique(mask, return_counts=True)
    return dict(
        image=str(image),
        height=int(mask.shape[0]),
        width=int(mask.shape[1]),
        mask_png=str(mask_file),
        pixels_per_class={(classes[i] if 0 <= i < len(classes) else str(i)): int(n) for i, n in zip(ids, counts)},
    )


def run_image_demo(task: str, argv: list[str] | None = None) -> int:
    """The whole of image_demo.py for `task` ('detection' or 'segmentation'); returns the exit code."""
    args = image_demo_parser(task).parse_args(argv)
    try:
        images = collect_images(args.images)
    except ImageFileError as err:
        print(f"error: {err}")
        return 2
    if not Path(args.checkpoint).is_file():
        print(f"error: checkpoint {args.checkpoint}: no such file")
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    allow_mmengine_checkpoints()
    cfg = _config(args.config)
    out = Path(args.out_dir)
    (out / "preds").mkdir(parents=True, exist_ok=True)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in images]
    if task == "detection":
        from mmdet.apis import DetInferencer

        inferencer = DetInferencer(model=cfg, weights=args.checkpoint, device=device, show_progress=False)
        classes = list(inferencer.model.dataset_meta.get("classes", []))
        result = inferencer(files, batch_size=args.batch_size, pred_score_thr=args.score_thr, out_dir=str(out),
                            no_save_pred=True, return_vis=False)  # fmt: skip
        for image, pred in zip(images, result["predictions"]):
            _write_json(out / "preds" / f"{image.stem}.json", _detections_json(image, pred, classes))
    else:
        from mmseg.apis import MMSegInferencer
        from PIL import Image

        inferencer = MMSegInferencer(model=cfg, weights=args.checkpoint, device=device)
        classes = list(inferencer.model.dataset_meta.get("classes", []))
        result = inferencer(files, batch_size=args.batch_size, out_dir=str(out), opacity=args.opacity)
        predictions = result["predictions"]
        predictions = predictions if isinstance(predictions, list) else [predictions]
        for image, mask in zip(images, predictions):
            mask = np.asarray(mask).astype(np.uint16 if len(classes) > 255 else np.uint8)
            mask_file = out / "preds" / f"{image.stem}_classes.png"
            atomic_write(mask_file, lambda tmp, m=mask: Image.fromarray(m).save(tmp, format="PNG"))
            _write_json(out / "preds" / f"{image.stem}.json", _segmentation_json(image, mask, classes, mask_file))
    drawn = sorted(os.listdir(out / "vis"))
    print(f"{len(images)} image(s): drawn predictions in {out / 'vis'} ({len(drawn)} files), JSON in {out / 'preds'}")
    return 0
