"""nextvit.mm: the OpenMMLab backbone shared by detection and segmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomize_and_calibrate
from safetensors.torch import save_file
from torch import nn

import nextvit
from nextvit.mm import NextViTBackbone  # needs mmengine, which `make test` installs

ROOT = Path(__file__).resolve().parents[1]
TASK_CONFIGS = [
    *sorted((ROOT / "detection" / "configs").glob("*.py")),
    *sorted((ROOT / "segmentation" / "configs").glob("*.py")),
]


def build(scope: str, **cfg):
    """Build through mmdet's or mmseg's registry, as their configs do."""
    if scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with MODELS.switch_scope_and_registry(scope) as registry:
        return registry.build(dict(type="NextViTBackbone", **cfg))


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_both_registries_build_it(scope):
    backbone = build(scope, arch="tiny")
    assert isinstance(backbone, NextViTBackbone)
    maps = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 32, 16, 24), (1, 128, 8, 12), (1, 160, 4, 6), (1, 256, 2, 3)]


@pytest.mark.parametrize("arch,channels", [("small", [96, 256, 512, 1024]), ("base", [96, 256, 512, 1024])])
def test_out_indices_and_channels(arch, channels):
    backbone = NextViTBackbone(arch=arch, out_indices=(1, 3)).eval()
    assert backbone.out_channels == [channels[1], channels[3]]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 128, 128))
    assert [m.shape[1] for m in maps] == backbone.out_channels and maps[1].shape[-1] == 4
    # no classifier and no unused final norm among the parameters
    assert not any(k.startswith(("model.head", "model.norm")) for k in backbone.state_dict())


def test_frozen_stages_and_norm_eval():
    backbone = NextViTBackbone(arch="tiny", frozen_stages=1, norm_eval=False)
    backbone.train()
    frozen = [backbone.model.stem, backbone.model.stages[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for p in backbone.model.stages[1].parameters())
    assert backbone.model.stages[1].training
    assert backbone.train() is backbone  # the original returned None here

    with_norm_eval = NextViTBackbone(arch="tiny", norm_eval=True).train()
    bns = [m for m in with_norm_eval.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    assert all(bn.weight.requires_grad for bn in bns)  # statistics frozen, affine still trained
    x = torch.randn(2, 3, 64, 64)
    before = bns[5].running_mean.clone()
    sum(m.sum() for m in with_norm_eval(x)).backward()
    assert torch.equal(before, bns[5].running_mean)


def test_extra_norm_forward_and_loading_from_a_classifier(tmp_path):
    # the original crashed on forward here (it called a norm it had deleted)
    classifier = randomize_and_calibrate(nextvit.create_model("nextvit_tiny"))
    path = nextvit.save_checkpoint(classifier, tmp_path / "cls.safetensors")
    backbone = NextViTBackbone(
        arch="tiny", with_extra_norm=True, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    backbone.init_weights()
    backbone.eval()
    assert torch.equal(backbone.model.norm.running_var, classifier.norm.running_var)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = backbone(x)
        _, raw = classifier.forward_intermediates(x)
    assert torch.allclose(maps[3], classifier.norm(raw[3]), atol=1e-6)
    assert torch.allclose(maps[0], backbone.extra_norms["0"](raw[0]), atol=1e-6)
    assert len(backbone.extra_norms) == 3


@pytest.mark.parametrize("layout", ["bytedance", "timm", "nextvit", "mmdet"])
def test_pretrained_loading_from_every_layout(tmp_path, layout):
    source = randomize_and_calibrate(nextvit.create_model("nextvit_tiny"))
    prefix = None
    if layout == "bytedance":
        path = nextvit.save_bytedance_checkpoint(source, tmp_path / "bd.pth")
    elif layout == "timm":
        path = tmp_path / "timm.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    elif layout == "nextvit":
        path = nextvit.save_checkpoint(source, tmp_path / "ours.pth")
    else:  # a detector checkpoint: the backbone under "backbone.model."
        donor = NextViTBackbone(arch="tiny")
        donor.model.load_state_dict(
            {k: v for k, v in source.state_dict().items() if not k.startswith(("head", "norm"))}
        )
        path = tmp_path / "det.pth"
        torch.save({"state_dict": {f"backbone.{k}": v for k, v in donor.state_dict().items()}}, path)
        prefix = "backbone."
    backbone = build(
        "mmdet", arch="tiny", frozen_stages=1, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix=prefix)
    )
    before = backbone.model.stages[2].blocks[4].e_mhsa.q.weight.clone()
    backbone.init_weights()
    after = backbone.model.stages[2].blocks[4].e_mhsa.q.weight
    assert not torch.equal(before, after)
    assert torch.equal(after, source.stages[2].blocks[4].e_mhsa.q.weight)
    assert not backbone.model.stem[0].conv.weight.requires_grad  # still frozen after loading
    report = backbone.load_report
    assert report.loaded == len(backbone.model.state_dict()) and not report.missing and not report.mismatched
    if layout != "mmdet":  # the classifier and the final norm are reported as not used (no extra norm)
        assert report.dropped_head == ["head.fc.bias", "head.fc.weight"]
        assert "norm.weight" in report.unexpected


def test_loading_reports_and_refuses_garbage(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, path)
    backbone = NextViTBackbone(arch="tiny", init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="neck."))
    with pytest.raises(nextvit.CheckpointError, match="prefix"):
        backbone.init_weights()


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(arch="huge"), "arch"), (dict(out_indices=(4,)), "out_indices"), (dict(frozen_stages=7), "frozen_stages")],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NextViTBackbone(**kwargs)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = NextViTBackbone(arch="tiny")
    checkpointed = NextViTBackbone(arch="tiny", with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for m in (plain, checkpointed):
        sum(o.square().mean() for o in m(x)).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("path", TASK_CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_the_shared_backbone_with_its_task_settings(path):
    """configs/nextvit_backbone.py holds the backbone once; each task's primitive sets what differs."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ["nextvit.mm"] and cfg.custom_imports.allow_failed_imports is False
    backbone = cfg.model.backbone
    arch = next(a for a in ("small", "base", "large") if f"_{a}_" in path.name)
    assert "_delete_" not in backbone
    assert (backbone.type, backbone.arch, backbone.out_indices) == ("NextViTBackbone", arch, (0, 1, 2, 3))
    assert backbone.init_cfg == dict(type="Pretrained", checkpoint=f"../checkpoints/nextvit_{arch}_in1k_224.pth")
    if path.name.startswith("mask_rcnn"):  # stem and stage 0 frozen, BatchNorm statistics too
        assert (backbone.frozen_stages, backbone.norm_eval, backbone.with_extra_norm) == (1, True, False)
        assert set(backbone) == {"type", "arch", "out_indices", "frozen_stages", "norm_eval", "with_extra_norm",
                                 "init_cfg"}  # fmt: skip
    else:  # nothing frozen, a norm on every output, drop-path 0.2, SyncBN across GPUs
        assert (backbone.frozen_stages, backbone.norm_eval, backbone.with_extra_norm) == (-1, False, True)
        assert backbone.drop_path_rate == 0.2 and backbone.norm_cfg == dict(type="SyncBN", requires_grad=True)
