"""segmentation/: the six ADE20K configs, and dist_train.sh / dist_test.sh on a generated ADE-format set."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_launcher
from mmengine.config import Config
from PIL import Image
from torch import nn

from nextvit.synthetic import ADE_SHAPE_LABELS, make_ade_dataset

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "segmentation"
FPN_CONFIGS = sorted((SEG / "configs").glob("fpn_512_nextvit_*.py"))
UPERNET_CONFIGS = sorted((SEG / "configs").glob("upernet_512_nextvit_*.py"))

# The real configs with a tiny backbone, small crops and a few iterations; everything else (heads,
# optimizer, schedule shape, dataset class, metric) comes from the config under test.
TINY = """
_base_ = ["{base}"]
data_root = "{data}"
crop_size = (96, 96)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch="tiny", init_cfg=None),
    {heads}
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(160, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(160, 128), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
# the configs' multi-scale + flip protocol, around this set's (160, 128) instead of ADE20K's (2048, 512)
tta_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="TestTimeAug", transforms=[
        [dict(type="Resize", scale=(int(160 * r), int(128 * r)), keep_ratio=True)
         for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)],
        [dict(type="RandomFlip", prob=0.0, direction="horizontal"),
         dict(type="RandomFlip", prob=1.0, direction="horizontal")],
        [dict(type="LoadAnnotations", reduce_zero_label=True)],
        [dict(type="PackSegInputs")],
    ]),
]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, **loader, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
{schedule}
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
"""
TINY_FPN = dict(
    heads="neck=dict(in_channels=[32, 128, 160, 256], out_channels=32),\n"
    "    decode_head=dict(in_channels=[32, 32, 32, 32], channels=16),",
    schedule='param_scheduler = [dict(type="PolyLR", eta_min=1e-6, power=0.9, begin=0, end=4, by_epoch=False)]',
)
TINY_UPERNET = dict(
    heads="decode_head=dict(in_channels=[32, 128, 160, 256], channels=16),\n"
    "    auxiliary_head=dict(in_channels=160, channels=16),",
    schedule='param_scheduler = [dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=2), '
    'dict(type="PolyLR", eta_min=0.0, power=1.0, begin=2, end=4, by_epoch=False)]',
)


def run(script: str, *args):
    return run_launcher(SEG, script, *args)


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    return make_ade_dataset(tmp_path_factory.mktemp("seg") / "ade", train_images=4, val_images=2, seed=0)


def tiny_config(ade: Path, tmp_path: Path, base: str, parts: dict) -> Path:
    config = tmp_path / f"tiny_{base}"
    config.write_text(TINY.format(base=SEG / "configs" / base, data=ade, **parts))
    return config


def test_generated_ade_set_has_the_ade20k_layout(ade):
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        images = sorted((ade / "images" / split).glob("*.jpg"))
        labels = sorted((ade / "annotations" / split).glob("*.png"))
        assert images and [p.stem for p in images] == [p.stem for p in labels]
        assert images[0].name.startswith(prefix)
        label = np.array(Image.open(labels[0]))
        assert label.ndim == 2 and label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, *ADE_SHAPE_LABELS.values()} and 0 in label  # 0: ignored "other"


def test_six_configs_with_the_original_names():
    names = sorted(p.name for p in FPN_CONFIGS + UPERNET_CONFIGS)
    sizes = ("small", "base", "large")
    assert names == sorted([f"fpn_512_nextvit_{s}_80k.py" for s in sizes] +
                           [f"upernet_512_nextvit_{s}_160k.py" for s in sizes])  # fmt: skip


def _build(cfg: Config):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from nextvit.mm.runner import sync_bn_to_bn

    register_all_modules()
    cfg.model.backbone.init_cfg = None
    sync_bn_to_bn(cfg.model)
    return MODELS.build(cfg.model)


def _check_common(cfg: Config, arch: str) -> None:
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.frozen_stages, backbone.norm_eval) == (
        "NextViTBackbone",
        arch,
        -1,
        False,
    )
    assert backbone.with_extra_norm is True and backbone.norm_cfg.type == "SyncBN"
    assert backbone.drop_path_rate == 0.2  # the released segmentation runs used 0.2 for S as well
    assert backbone.init_cfg.checkpoint == f"../checkpoints/nextvit_{arch}_in1k_224.pth"
    assert cfg.model.decode_head.num_classes == 150 and cfg.model.decode_head.norm_cfg.type == "SyncBN"
    data = cfg.train_dataloader
    assert data.batch_size == 2 and data.dataset.type == "ADE20KDataset"
    assert data.dataset.data_root == "data/ade/ADEChallengeData2016"
    crop = next(t for t in data.dataset.pipeline if t["type"] == "RandomCrop")
    resize = next(t for t in data.dataset.pipeline if t["type"] == "RandomResize")
    assert crop["crop_size"] == (512, 512) and resize["ratio_range"] == (0.5, 2.0)
    assert any(t["type"] == "PhotoMetricDistortion" for t in data.dataset.pipeline)
    test_resize = next(t for t in cfg.test_dataloader.dataset.pipeline if t["type"] == "Resize")
    assert test_resize["scale"] == (2048, 512) and cfg.model.test_cfg.mode == "whole"
    assert cfg.test_evaluator.type == "IoUMetric"


@pytest.mark.parametrize("path", FPN_CONFIGS, ids=lambda p: p.stem)
def test_fpn_config_holds_the_original_settings_and_builds(path):
    cfg = Config.fromfile(path)
    _check_common(cfg, re.search(r"nextvit_(\w+)_80k", path.name).group(1))
    assert cfg.model.neck.in_channels == [96, 256, 512, 1024]
    assert (cfg.model.neck.out_channels, cfg.model.neck.num_outs) == (256, 4)
    assert (cfg.model.decode_head.type, cfg.model.decode_head.channels) == ("FPNHead", 128)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 1e-4, 1e-4)
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 0.9, 1e-6, 80000)
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (80000, 8000)
    model = _build(cfg)
    assert type(model).__name__ == "EncoderDecoder" and model.backbone.out_channels == [96, 256, 512, 1024]


@pytest.mark.parametrize("path", UPERNET_CONFIGS, ids=lambda p: p.stem)
def test_upernet_config_holds_the_original_settings_and_builds(path):
    cfg = Config.fromfile(path)
    _check_common(cfg, re.search(r"nextvit_(\w+)_160k", path.name).group(1))
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (head.type, head.channels, head.pool_scales, head.in_channels) == (
        "UPerHead",
        512,
        (1, 2, 3, 6),
        [96, 256, 512, 1024],
    )
    assert (aux.type, aux.in_index, aux.in_channels, aux.channels) == ("FCNHead", 2, 512, 256)
    assert aux.loss_decode.loss_weight == 0.4
    wrapper = cfg.optim_wrapper
    assert (wrapper.optimizer.type, wrapper.optimizer.lr, wrapper.optimizer.weight_decay) == ("AdamW", 6e-5, 0.01)
    assert wrapper.paramwise_cfg.norm_decay_mult == 0.0
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.begin, poly.power, poly.eta_min) == ("LinearLR", 1500, 1500, 1.0, 0.0)
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval, poly.end) == (160000, 16000, 160000)
    model = _build(cfg)
    assert type(model.decode_head).__name__ == "UPerHead" and model.with_auxiliary_head


def test_multi_scale_flip_test_follows_the_original_protocol():
    """mmseg 0.23 resized to (2048, 512) x r; mmseg 1.x's default TTA scales the raw image instead."""
    cfg = Config.fromfile(FPN_CONFIGS[0])
    (tta,) = [t for t in cfg.tta_pipeline if t["type"] == "TestTimeAug"]
    resizes, flips = tta["transforms"][0], tta["transforms"][1]
    ratios = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert [t["scale"] for t in resizes] == [(int(2048 * r), int(512 * r)) for r in ratios]
    assert all(t["keep_ratio"] for t in resizes) and [f["prob"] for f in flips] == [0.0, 1.0]
    assert cfg.tta_model.type == "SegTTAModel"


@pytest.mark.slow
def test_fpn_train_then_test_single_and_multi_scale(ade, tmp_path):
    config = tiny_config(ade, tmp_path, "fpn_512_nextvit_small_80k.py", TINY_FPN)
    work = tmp_path / "work"
    trained = run("dist_train.sh", config, 1, "--work-dir", work)
    assert "Iter(train) [4/4]" in trained.stdout and "mIoU" in trained.stdout
    checkpoint = work / "iter_4.pth"
    assert checkpoint.is_file() and any(work.glob("best_mIoU_iter_*.pth"))
    # the original README's command line: --eval mIoU
    single = run("dist_test.sh", config, checkpoint, 1, "--eval", "mIoU", "--work-dir", work, "--out", work / "pred")
    assert re.search(r"Iter\(test\) \[2/2\]\s+aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc", single.stdout)
    predictions = sorted((work / "pred").glob("*.png"))
    assert len(predictions) == 2 and np.array(Image.open(predictions[0])).shape == (128, 160)
    multi = run("dist_test.sh", config, checkpoint, 1, "--eval", "mIoU", "mDice", "--aug-test", "--work-dir", work)
    assert re.search(r"aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc: [\d.]+\s+mDice", multi.stdout)
    # the model under test is SegTTAModel(module=the segmentor), printed in the config dump
    assert "module=dict(" in multi.stdout and "module=dict(" not in single.stdout


@pytest.mark.slow
def test_upernet_train_two_gloo_processes_and_resume(ade, tmp_path):
    config = tiny_config(ade, tmp_path, "upernet_512_nextvit_small_160k.py", TINY_UPERNET)
    work = tmp_path / "work"
    trained = run("dist_train.sh", config, 2, "--work-dir", work, "--cfg-options", "train_cfg.max_iters=2",
                  "default_hooks.checkpoint.interval=2", "train_cfg.val_interval=2")  # fmt: skip
    assert "Iter(train) [2/2]" in trained.stdout and "aux.loss_ce" in trained.stdout
    assert "SyncBN -> BN" in trained.stdout  # SyncBatchNorm cannot synchronise CPU tensors
    assert (work / "iter_2.pth").is_file()
    resumed = run("dist_train.sh", config, 2, "--work-dir", work, "--resume")
    assert "resumed" in resumed.stdout.lower() and "Iter(train) [4/4]" in resumed.stdout
    assert "Iter(train) [1/4]" not in resumed.stdout


def test_get_flops_explains_the_original_figures(import_script):
    count = import_script("segmentation", "get_flops").count
    # the original's parameter counts include the classifier head (1000 x 1024 + 1000) and one
    # more BatchNorm (1024 x 2) that its segmentation backbone carried without using
    unused = 1_025_000 + 2_048
    for path, original_params, original_flops in (
        (FPN_CONFIGS[2], 36.3, 208),  # small (the list is sorted: base, large, small)
        (UPERNET_CONFIGS[2], 66.3, 968),
    ):
        r = count(str(path), (512, 2048))
        without = count(str(path), (512, 2048), attention=False)
        assert round((r["params"] + unused) / 1e6, 1) == original_params
        # the original counter did not see the attention matrix products (14.5 G for S at 512x2048)
        assert 14.0e9 < r["flops"] - without["flops"] < 15.0e9
        assert abs(without["flops"] / 1e9 - original_flops) < 1.0
        assert round(r["backbone_flops"] / 1e9, 1) == 135.2


@pytest.mark.slow
def test_original_release_segmentor_checkpoints_are_renamed_by_name(ade, tmp_path):
    """Original checkpoints: `backbone.features.N.*`, the classifier `norm`, and `extra_norm_list.i`."""
    from mmengine.runner import load_checkpoint

    from nextvit.checkpoint import timm_to_bytedance
    from nextvit.mm import convert_mm_checkpoint

    config = tiny_config(ade, tmp_path, "fpn_512_nextvit_small_80k.py", TINY_FPN)
    trained = _build(Config.fromfile(config))
    for p in trained.parameters():
        p.data.normal_()
    state = trained.state_dict()
    inner = {k[len("backbone.model.") :]: v for k, v in state.items() if k.startswith("backbone.model.")}
    original = {f"backbone.{k}": v for k, v in timm_to_bytedance(inner, (1, 1, 5, 1)).items()}
    for key, value in state.items():
        if key.startswith("backbone.extra_norms."):
            original[key.replace("backbone.extra_norms.", "backbone.extra_norm_list.")] = value
        elif not key.startswith("backbone."):
            original[key] = value
    for name, value in nn.BatchNorm2d(256).state_dict().items():  # created, never used
        original[f"backbone.extra_norm_list.3.{name}"] = value
    original["backbone.proj_head.0.weight"] = torch.randn(1000, 256)  # the classifier's, unused here
    original["backbone.proj_head.0.bias"] = torch.randn(1000)
    assert "backbone.norm.running_var" in original and "backbone.extra_norm_list.0.bias" in original
    path = tmp_path / "fpn_80k_nextvit_tiny.pth"
    torch.save({"state_dict": original, "meta": {"mmseg_version": "0.23.0"}}, path)

    fresh = _build(Config.fromfile(config))
    load_checkpoint(fresh, convert_mm_checkpoint(str(path), "tiny", str(tmp_path)), map_location="cpu", strict=True)
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    tested = run("dist_test.sh", config, path, 1, "--work-dir", tmp_path / "w")
    assert "renamed from the original layout" in tested.stdout and "extra_norm_list.3.running_var" in tested.stdout
    assert "proj_head.0.weight" in tested.stdout and "unexpected key" not in tested.stdout
    assert "Iter(test) [2/2]" in tested.stdout
    # fine-tuning from it: train.py converts a load_from of the original layout too
    short = ["train_cfg.max_iters=1", "train_cfg.val_interval=1", "default_hooks.checkpoint.interval=1"]
    short.append(f"load_from={path}")
    trained = run("dist_train.sh", config, 1, "--work-dir", tmp_path / "ft", "--cfg-options", *short)
    assert "renamed from the original layout" in trained.stdout and "unexpected key" not in trained.stdout
    assert "Iter(train) [1/1]" in trained.stdout


def test_get_flops_command_line_prints_both_counts(import_script, capsys):
    get_flops = import_script("segmentation", "get_flops")
    assert get_flops.main([str(FPN_CONFIGS[2]), "--shape", "256", "512"]) == 0
    out = capsys.readouterr().out
    assert "input        1x3x256x512" in out and "auxiliary head 0.00 M" in out
    with_attention, without = re.findall(r"([\d.]+) G", out.split("FLOPs", 1)[1])[0:3:2]
    assert float(without) < float(with_attention)
    with pytest.raises(SystemExit):
        get_flops.main([str(FPN_CONFIGS[2]), "--shape", "1", "2", "3"])
