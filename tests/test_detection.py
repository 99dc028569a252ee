"""detection/: the six Mask R-CNN configs, and dist_train.sh / dist_test.sh on a generated COCO set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import run_launcher
from mmengine.config import Config

from nextvit.synthetic import make_coco_dataset

REPO = Path(__file__).resolve().parents[1]
DET = REPO / "detection"
CONFIGS = sorted((DET / "configs").glob("mask_rcnn_nextvit_*.py"))

TINY = """
_base_ = ["{base}"]
data_root = "{data}/"
classes = ("circle", "square", "triangle")
model = dict(
    backbone=dict(arch="tiny", init_cfg=None),
    neck=dict(in_channels=[32, 128, 160, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=3),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=3),
    ),
)
pipe_train = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=(160, 128), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
pipe_test = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(160, 128), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
loader = dict(num_workers=0, persistent_workers=False)
data = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(batch_size=2, **loader, dataset=dict(**data, pipeline=pipe_train))
val_dataloader = dict(batch_size=1, **loader, dataset=dict(**data, pipeline=pipe_test))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_val2017.json")
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
"""


def run(script: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_launcher(DET, script, *args, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det")
    data = make_coco_dataset(root / "coco", train_images=4, val_images=2, seed=0)
    config = root / "mask_rcnn_nextvit_tiny_test.py"
    config.write_text(TINY.format(base=DET / "configs" / "mask_rcnn_nextvit_small_1x.py", data=data))
    return config


def test_six_configs_with_the_original_names():
    names = sorted(p.name for p in CONFIGS)
    assert names == sorted(f"mask_rcnn_nextvit_{s}_{k}.py" for s in ("small", "base", "large") for k in ("1x", "3x"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_builds(path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(path)
    size = re.search(r"nextvit_(\w+)_(\dx)", path.name)
    arch, sched = size.group(1), size.group(2)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.frozen_stages, backbone.norm_eval) == (
        "NextViTBackbone",
        arch,
        1,
        True,
    )
    assert backbone.with_extra_norm is False
    assert backbone.init_cfg.checkpoint == f"../checkpoints/nextvit_{arch}_in1k_224.pth"
    assert cfg.model.neck.in_channels == [96, 256, 512, 1024] and cfg.model.neck.num_outs == 5
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-4, 0.05)
    assert opt.paramwise_cfg.norm_decay_mult == 0.0 and opt.loss_scale == 512.0
    warmup, steps = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (1e-6, 500)
    assert cfg.train_cfg.max_epochs == {"1x": 12, "3x": 36}[sched]
    assert steps.milestones == {"1x": [8, 11], "3x": [27, 33]}[sched]
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_dataloader.dataset.data_root == "data/coco/"
    assert {m["type"] for m in [cfg.val_evaluator]} == {"CocoMetric"} and set(cfg.val_evaluator.metric) == {
        "bbox",
        "segm",
    }
    if sched == "3x":
        assert any(t["type"] == "RandomChoice" for t in cfg.train_dataloader.dataset.pipeline)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == "MaskRCNN" and model.backbone.out_channels == [96, 256, 512, 1024]


@pytest.mark.slow
def test_train_then_test_one_process(tiny_config, tmp_path):
    work = tmp_path / "work"
    trained = run("dist_train.sh", tiny_config, 1, "--work-dir", work)
    assert "Epoch(train) [1][2/2]" in trained.stdout and "coco/segm_mAP" in trained.stdout
    checkpoint = work / "epoch_1.pth"
    assert checkpoint.is_file()
    # the original README's flag, --eval bbox, is accepted and picks the metric
    tested = run("dist_test.sh", tiny_config, checkpoint, 1, "--eval", "bbox", "--work-dir", work)
    assert "coco/bbox_mAP" in tested.stdout and "coco/segm_mAP" not in tested.stdout
    tested = run("dist_test.sh", tiny_config, checkpoint, 1, "--work-dir", work)
    assert "coco/bbox_mAP" in tested.stdout and "coco/segm_mAP" in tested.stdout


@pytest.mark.slow
def test_train_two_gloo_processes(tiny_config, tmp_path):
    work = tmp_path / "work2"
    trained = run("dist_train.sh", tiny_config, 2, "--work-dir", work, "--cfg-options", "train_cfg.val_interval=2")
    assert "Epoch(train) [1][1/1]" in trained.stdout
    assert (work / "epoch_1.pth").is_file()


def test_get_flops_explains_the_original_figures(import_script):
    count = import_script("detection", "get_flops").count
    r = count(str(DET / "configs" / "mask_rcnn_nextvit_small_1x.py"), (800, 1280))
    assert round(r["params"] / 1e6, 2) == 51.12 and round(r["trainable_params"] / 1e6, 2) == 50.76
    # the original README's 51.8 M: trainable parameters plus the unused classifier head and final norm
    assert abs((r["trainable_params"] + 1_027_048) / 1e6 - 51.8) < 0.05
    assert round(r["backbone_flops"] / 1e9, 1) == 131.7
    # its 290 G: the same count without the attention matrix products, which mmcv's counter missed
    without = count(str(DET / "configs" / "mask_rcnn_nextvit_small_1x.py"), (800, 1280), attention=False)
    assert 10e9 < r["flops"] - without["flops"] < 20e9
    assert abs(without["flops"] / 1e9 - 290) < 1.0


@pytest.mark.slow
def test_original_release_detector_checkpoints_are_renamed_by_name(tiny_config, tmp_path):
    """mm checkpoints of the original keep the backbone as `backbone.features.N.*`."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner import load_checkpoint

    from nextvit.checkpoint import timm_to_bytedance
    from nextvit.mm import convert_mm_checkpoint

    register_all_modules()
    cfg = Config.fromfile(tiny_config)
    trained = MODELS.build(cfg.model)
    for p in trained.parameters():  # distinct values everywhere
        p.data.normal_()
    state = trained.state_dict()
    backbone = {k[len("backbone.model.") :]: v for k, v in state.items() if k.startswith("backbone.model.")}
    original = {f"backbone.{k}": v for k, v in timm_to_bytedance(backbone, (1, 1, 5, 1)).items()}
    original |= {k: v for k, v in state.items() if not k.startswith("backbone.")}
    assert "backbone.features.7.e_mhsa.q.weight" in original
    path = tmp_path / "mask_rcnn_1x_nextvit_tiny.pth"
    torch.save({"state_dict": original, "meta": {"mmdet_version": "2.23.0"}}, path)

    converted = convert_mm_checkpoint(str(path), "tiny", str(tmp_path))
    assert converted != str(path)
    fresh = MODELS.build(cfg.model)
    load_checkpoint(fresh, converted, map_location="cpu", strict=True)
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # our own checkpoints pass through untouched
    ours = tmp_path / "ours.pth"
    torch.save({"state_dict": state}, ours)
    assert convert_mm_checkpoint(str(ours), "tiny", str(tmp_path)) == str(ours)
    # and dist_test.sh converts and evaluates the original-layout file (random weights: no boxes)
    tested = run("dist_test.sh", tiny_config, path, 1, "--eval", "bbox", "--work-dir", tmp_path / "w")
    assert "renamed from the original layout" in tested.stdout and "Epoch(test) [2/2]" in tested.stdout
