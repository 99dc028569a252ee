"""Each detection and segmentation config's own train pipeline (not a replacement), drawn many times.

The training tests of test_detection.py and test_segmentation.py swap in small pipelines to stay
fast; these tests run the configs' real ones (1x single-scale and 3x multi-scale Mask R-CNN,
ADE20K's 512x512 crops with photometric distortion) on generated images, with fixed seeds, and
check what they hand the model.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from nextvit.synthetic import COCO_CLASSES, make_ade_dataset, make_coco_dataset

REPO = Path(__file__).resolve().parents[1]
DET_CONFIGS = sorted((REPO / "detection" / "configs").glob("mask_rcnn_nextvit_*.py"))
SEG_CONFIGS = sorted((REPO / "segmentation" / "configs").glob("*_512_nextvit_*.py"))
DRAWS = 60


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def two_orientations(make, root: Path) -> Path:
    """Three training images landscape (`wide/`) and three portrait (`tall/`), so that keep-ratio
    resizing meets both orientations."""
    make(root / "wide", train_images=3, val_images=0, size=(320, 240), seed=1)
    make(root / "tall", train_images=3, val_images=0, size=(200, 300), seed=2)
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return two_orientations(make_coco_dataset, tmp_path_factory.mktemp("coco_pipelines"))


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    return two_orientations(make_ade_dataset, tmp_path_factory.mktemp("ade_pipelines"))


def train_dataset(config: Path, data_root: Path, scope: str, **overrides):
    """The config's train dataset with its own pipeline, reading `data_root` instead of COCO/ADE20K."""
    cfg = Config.fromfile(str(config))
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=str(data_root), **overrides)
    with DefaultScope.overwrite_default_scope(scope):
        if scope == "mmdet":
            from mmdet.registry import DATASETS
            from mmdet.utils import register_all_modules
        else:
            from mmseg.registry import DATASETS
            from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        return DATASETS.build(dataset_cfg), cfg.train_dataloader.dataset.pipeline


def test_the_config_pipelines_are_the_originals():
    """What these draws cover: the 1x, the 3x multi-scale, and ADE20K's pipeline in every config."""
    kinds = {p.stem: [t["type"] for t in Config.fromfile(str(p)).train_dataloader.dataset.pipeline]
             for p in DET_CONFIGS + SEG_CONFIGS}  # fmt: skip
    assert len(kinds) == 12
    for name, steps in kinds.items():
        if name.endswith("_1x"):
            assert steps == ["LoadImageFromFile", "LoadAnnotations", "Resize", "RandomFlip", "PackDetInputs"]
        elif name.endswith("_3x"):
            assert steps == ["LoadImageFromFile", "LoadAnnotations", "RandomFlip", "RandomChoice", "PackDetInputs"]
        else:
            assert steps == ["LoadImageFromFile", "LoadAnnotations", "RandomResize", "RandomCrop", "RandomFlip",
                             "PhotoMetricDistortion", "PackSegInputs"]  # fmt: skip


@pytest.mark.parametrize("config", DET_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("shape", ["wide", "tall"])
def test_detection_train_pipeline_draws(config, shape, coco):
    dataset, _ = train_dataset(config, coco / shape, "mmdet", metainfo=dict(classes=COCO_CLASSES))
    assert len(dataset) == 3
    sizes = set()
    for seed in range(DRAWS):
        seed_all(seed)
        sample = dataset[seed % len(dataset)]
        image, gt = sample["inputs"], sample["data_samples"].gt_instances
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        h, w = image.shape[1:]
        assert max(h, w) <= 1333 and min(h, w) <= 800, (h, w)
        assert len(gt.bboxes) == len(gt.masks) == len(gt.labels)
        boxes = gt.bboxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
        assert gt.masks.height == h and gt.masks.width == w
        sizes.add((h, w))
    if config.stem.endswith("_3x"):
        assert len(sizes) >= 4, f"multi-scale training drew only {sorted(sizes)}"
    else:
        assert len(sizes) == 1


@pytest.mark.parametrize("config", SEG_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("shape", ["wide", "tall"])
def test_segmentation_train_pipeline_draws(config, shape, ade):
    dataset, _ = train_dataset(config, ade / shape, "mmseg")
    assert len(dataset) == 3
    for seed in range(DRAWS):
        seed_all(seed)
        sample = dataset[seed % len(dataset)]
        image, label = sample["inputs"], sample["data_samples"].gt_sem_seg.data
        assert image.shape[0] == 3 and image.shape[1:] == label.shape[1:]
        assert max(image.shape[1:]) <= 512  # 512x512 crops (or the whole image where it is smaller)
        values = set(label.unique().tolist())
        assert values <= set(range(150)) | {255}, values  # reduce_zero_label: "other" becomes 255
