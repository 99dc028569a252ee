"""Drop-in use in the PyTorch/timm ecosystem: timm's model contract (global_pool, pretrained_cfg,
features_only), TorchScript, FX (and torchvision's feature extractor), torch.export with dynamic
sizes. Outputs of every converted form are compared with eager PyTorch on calibrated weights."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from helpers import randomize_and_calibrate, relative_error
from torch import nn

import nextvit


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))


# -- global_pool ------------------------------------------------------------------------------


@pytest.mark.parametrize("pool,width", [("avg", 1), ("max", 1), ("avgmax", 1), ("catavgmax", 2)])
def test_global_pool_choices(tiny_calibrated, images, pool, width):
    model = nextvit.create_model("nextvit_tiny", num_classes=5, global_pool=pool).eval()
    model.load_state_dict({k: v for k, v in tiny_calibrated.state_dict().items() if not k.startswith("head.")},
                          strict=False)  # fmt: skip
    with torch.no_grad():
        maps = model.forward_features(images)
        pre = model.forward_head(maps, pre_logits=True)
        logits = model(images)
    avg, peak = maps.mean((2, 3)), maps.amax((2, 3))
    expected = {"avg": avg, "max": peak, "avgmax": (avg + peak) / 2, "catavgmax": torch.cat([avg, peak], 1)}[pool]
    assert pre.shape == (2, width * model.num_features) and torch.allclose(pre, expected, atol=1e-6)
    assert logits.shape == (2, 5) and model.get_classifier().in_features == width * model.num_features
    assert model.global_pool == pool


def test_global_pool_none_needs_a_headless_model(images):
    model = nextvit.create_model("nextvit_tiny", num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert model(images).shape == (2, model.num_features, 3, 4)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        nextvit.create_model("nextvit_tiny", num_classes=10, global_pool="")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        nextvit.create_model("nextvit_tiny", global_pool="gem")


# -- pretrained_cfg ---------------------------------------------------------------------------


@pytest.mark.interop
def test_pretrained_cfg_drives_timms_data_config():
    from timm.data import resolve_data_config

    model = nextvit.create_model("nextvit_small.bd_in1k_384")
    assert model.pretrained_cfg is model.default_cfg
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 384, 384) and cfg["pool_size"] == (12, 12) and cfg["num_classes"] == 1000
    assert cfg["hf_hub_id"] == "timm/nextvit_small.bd_in1k_384" and cfg["tag"] == "bd_in1k_384"
    data = resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 384, 384) and data["interpolation"] == "bicubic"
    assert data["crop_pct"] == 0.875 and data["mean"] == (0.485, 0.456, 0.406) and data["std"] == (0.229, 0.224, 0.225)
    # the module names in the cfg are real modules of the model
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()


def test_default_cfg_without_a_release():
    model = nextvit.create_model("nextvit_tiny", num_classes=7, in_chans=1)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (1, 224, 224) and cfg["num_classes"] == 7 and cfg["url"] == ""
    assert cfg["tag"] is None and cfg["crop_pct"] == 0.875
    # a model built directly (not through create_model) has the same defaults
    assert nextvit.NextViT(**nextvit.VARIANTS["nextvit_tiny"]).pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.interop
def test_builds_through_timms_builder(images):
    """A timm user who registers the class: timm's builder passes its own arguments and sets the cfg."""
    from timm.models import build_model_with_cfg

    cfg = nextvit.create_model("nextvit_tiny").pretrained_cfg
    model = build_model_with_cfg(
        nextvit.NextViT, "nextvit_tiny", pretrained=False, pretrained_cfg=cfg,
        **nextvit.VARIANTS["nextvit_tiny"], num_classes=3, global_pool="avgmax",
    )  # fmt: skip
    assert model.global_pool == "avgmax" and model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.eval()(images).shape == (2, 3)


# -- TorchScript ------------------------------------------------------------------------------


def _roundtrip_script(model: nn.Module, tmp_path) -> torch.jit.ScriptModule:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return torch.jit.load(str(path))


@pytest.mark.parametrize("kv_pool", ["1d", "2d"])
def test_torchscript_unfolded_and_folded(kv_pool, images, tmp_path):
    torch.manual_seed(0)
    model = randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10, kv_pool=kv_pool))
    with torch.no_grad():
        ref = model(images)
        scripted = _roundtrip_script(model, tmp_path)
        assert relative_error(scripted(images), ref) < 1e-6
        folded = _roundtrip_script(nextvit.fold_batchnorm(model), tmp_path)
        assert relative_error(folded(images), ref) < 1e-4
        assert "BatchNorm" not in str(folded.inlined_graph)


def test_torchscript_trains(images):
    model = torch.jit.script(nextvit.create_model("nextvit_tiny", num_classes=10, drop_path_rate=0.1).train())
    model(images).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# -- FX ---------------------------------------------------------------------------------------


def test_fx_forward_backward_and_script(tiny_calibrated, images):
    traced = torch.fx.symbolic_trace(tiny_calibrated)
    with torch.no_grad():
        ref = tiny_calibrated(images)
        assert torch.equal(traced(images), ref)
        assert relative_error(torch.jit.script(traced)(images), ref) < 1e-6
        folded = torch.fx.symbolic_trace(nextvit.fold_batchnorm(tiny_calibrated))
        assert relative_error(folded(images), ref) < 1e-4
    # the traced graph trains: every parameter gets a gradient
    train = torch.fx.symbolic_trace(nextvit.create_model("nextvit_tiny", num_classes=10).train())
    train(images).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in train.parameters())


@pytest.mark.interop
def test_torchvision_feature_extractor(tiny_calibrated, images):
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = {f"stages.{i}": f"c{i + 2}" for i in range(4)}
    extractor = create_feature_extractor(tiny_calibrated, return_nodes=nodes).eval()
    with torch.no_grad():
        out = extractor(images)
        maps = tiny_calibrated.forward_intermediates(images, intermediates_only=True)
    assert list(out) == ["c2", "c3", "c4", "c5"]
    assert all(torch.equal(a, b) for a, b in zip(out.values(), maps))


def test_eager_input_checks_survive_tracing_support(tiny_calibrated):
    with pytest.raises(ValueError, match="at least 32"):
        tiny_calibrated(torch.zeros(1, 3, 16, 64))
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        tiny_calibrated.forward_features([torch.zeros(1, 3, 64, 64)])


# -- features_only ----------------------------------------------------------------------------


def test_features_only(tiny_calibrated, images, tmp_path):
    path = nextvit.save_checkpoint(tiny_calibrated, tmp_path / "tiny.safetensors")
    feats = nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=path, features_only=True)
    feats.eval()
    assert isinstance(feats, nextvit.NextViTFeatures)
    assert feats.feature_info.channels() == [32, 128, 160, 256]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert feats.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.3"]
    with torch.no_grad():
        maps = feats(images)
        ref = tiny_calibrated.forward_intermediates(images, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(maps, ref))
        # a subset: later stages are cut away, negative indices count from the end
        some = nextvit.create_model("nextvit_tiny", features_only=True, out_indices=(1, -2))
        assert len(some.stages) == 3 and some.feature_info.channels() == [128, 160]
        assert [m.shape[1:] for m in some.eval()(images)] == [(128, 12, 16), (160, 6, 8)]
        assert all(torch.equal(a, b) for a, b in zip(torch.jit.script(feats)(images), ref))
    assert not any(name.startswith(("head", "norm")) for name, _ in feats.named_parameters())
    with pytest.raises(ValueError, match="out of range"):
        nextvit.create_model("nextvit_tiny", features_only=True, out_indices=(4,))
    with pytest.raises(ValueError, match="at least 32"):
        feats(torch.zeros(1, 3, 20, 64))


# -- torch.export -----------------------------------------------------------------------------


def test_torch_export_dynamic_batch_and_size(tiny_calibrated):
    from torch.export import export

    example = torch.randn(2, 3, 96, 128)
    program = export(tiny_calibrated, (example,), dynamic_shapes=nextvit.export_dynamic_shapes())
    exported = program.module()
    with torch.no_grad():
        for shape in [(1, 3, 800, 1344), (3, 3, 64, 96), (2, 3, 224, 224)]:
            x = torch.randn(shape)
            assert relative_error(exported(x), tiny_calibrated(x)) < 1e-5, shape


def test_torch_export_features_for_detection_sizes():
    from torch.export import export

    torch.manual_seed(0)
    model = randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=0))
    feats = nextvit.NextViTFeatures(model).eval()
    program = export(feats, (torch.randn(2, 3, 128, 160),), dynamic_shapes=nextvit.export_dynamic_shapes())
    x = torch.randn(1, 3, 800, 1216)
    with torch.no_grad():
        got, ref = program.module()(x), feats(x)
    assert [tuple(m.shape[2:]) for m in got] == [(200, 304), (100, 152), (50, 76), (25, 38)]
    assert all(relative_error(a, b) < 1e-5 for a, b in zip(got, ref))
