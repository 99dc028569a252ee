"""The architecture: exact sizes, shapes, the backbone contract and input checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomize_and_calibrate
from torch import nn

import nextvit
from nextvit.model import EfficientAttention, NextTransformerBlock, stage_plan

PAPER_PARAMS = {"nextvit_small": 31_763_368, "nextvit_base": 44_818_856, "nextvit_large": 57_874_344}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_is_exact(name):
    model = nextvit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]


@pytest.mark.parametrize(
    "name,blocks", [("nextvit_small", (16, 4)), ("nextvit_base", (24, 6)), ("nextvit_large", (32, 8))]
)
def test_hybrid_strategy_block_counts(name, blocks):
    model = nextvit.create_model(name)
    ncb = sum(isinstance(m, nextvit.model.NextConvBlock) for m in model.modules())
    ntb = sum(isinstance(m, NextTransformerBlock) for m in model.modules())
    assert (ncb, ntb) == blocks
    # the last block of stages 1-3 is an NTB, and stage 2 repeats [NCB x 4, NTB]
    stage2 = [type(b).__name__ for b in model.stages[2].blocks]
    assert stage2 == (["NextConvBlock"] * 4 + ["NextTransformerBlock"]) * (len(stage2) // 5)


def test_block_hyperparameters_follow_the_paper():
    model = nextvit.create_model("nextvit_small")
    ntbs = [m for m in model.modules() if isinstance(m, NextTransformerBlock)]
    assert [(b.mhsa_out_chs, b.mhca_out_chs) for b in ntbs] == [(192, 64), (384, 128), (384, 128), (768, 256)]
    assert [b.e_mhsa.sr_ratio for b in ntbs] == [4, 2, 2, 1]
    assert all(b.e_mhsa.head_dim == 32 for b in ntbs)
    ncb = model.stages[0].blocks[0]
    assert ncb.mhca.group_conv3x3.groups == 96 // 32
    assert ncb.mlp.fc1.out_channels == 3 * 96 and ntbs[0].mlp.fc1.out_channels == 2 * 256
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    stem_convs = [
        (m.in_channels, m.out_channels, m.stride[0]) for m in model.stem.modules() if isinstance(m, nn.Conv2d)
    ]
    assert stem_convs == [(3, 64, 2), (64, 32, 1), (32, 64, 1), (64, 64, 2)]


@pytest.mark.parametrize("name,rate", [("nextvit_small", 0.1), ("nextvit_base", 0.2), ("nextvit_large", 0.2)])
def test_drop_path_is_linear_over_blocks(name, rate):
    model = nextvit.create_model(name)
    blocks = [b for s in model.stages for b in s.blocks]
    rates = [b.mlp_drop_path.drop_prob for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(rate)
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(steps) - min(steps) < 1e-6
    ntb = blocks[-1]
    assert ntb.mhsa_drop_path.drop_prob == pytest.approx(0.75 * rate)
    assert ntb.mhca_drop_path.drop_prob == pytest.approx(0.25 * rate)
    assert nextvit.create_model(name, drop_path_rate=0.3).stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(
        0.3
    )


def test_init_is_truncated_normal_002():
    model = nextvit.create_model("nextvit_small")
    w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert abs(w.std().item() - 0.02) < 0.001 and w.abs().max() <= 2.0
    assert all(
        (m.bias == 0).all() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None
    )


@pytest.mark.parametrize("hw", [(224, 224), (240, 240), (384, 384), (32, 32), (97, 131), (200, 333), (800, 1333)])
def test_output_shapes(tiny_calibrated, hw):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        logits = tiny_calibrated(x)
        feats = tiny_calibrated.forward_features(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    # each stride-2 step uses ceil mode, so odd sides round up
    h, w = hw
    for _ in range(5):
        h, w = -(-h // 2), -(-w // 2)
    assert feats.shape == (2, 256, h, w)


def test_small_at_detection_resolutions():
    model = nextvit.create_model("nextvit_small").eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 512, 512), intermediates_only=True)
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 128, 128), (256, 64, 64), (512, 32, 32), (1024, 16, 16)]


@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 224, 224), "4-D batch"),
        ((1, 1, 3, 224, 224), "4-D batch"),
        ((1, 1, 224, 224), "3 input channels"),
        ((1, 4, 224, 224), "3 input channels"),
        ((1, 3, 31, 224), "at least 32"),
        ((1, 3, 224, 16), "at least 32"),
    ],
)
def test_bad_input_raises_value_error(tiny_calibrated, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_calibrated(torch.zeros(shape))
    with pytest.raises(ValueError, match=match):
        tiny_calibrated.forward_intermediates(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depths=(3, 4, 9, 3)), "multiple of 5"),
        (dict(depths=(3, 4, 10)), "4 stages"),
        (dict(depths=(0, 4, 10, 3)), "at least one block"),
        (dict(kv_pool="3d"), "kv_pool"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nextvit.build_nextvit("nextvit_small", **kwargs)


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match="nextvit_small"):
        nextvit.create_model("nextvit_huge")
    with pytest.raises(ValueError, match="no released weights"):
        nextvit.create_model("nextvit_small.bd_in22k")


def test_a_model_knows_its_variant():
    """The name of its row in VARIANTS, set by the builder: checkpoints record it."""
    assert nextvit.build_nextvit("nextvit_tiny").variant == "nextvit_tiny"
    assert nextvit.create_model("nextvit_tiny", features_only=True).variant == "nextvit_tiny"
    assert nextvit.NextViT(**nextvit.VARIANTS["nextvit_tiny"]).variant == ""  # a configuration, no name


def test_head_contract(tiny_calibrated):
    model = tiny_calibrated
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        assert torch.allclose(model.forward_head(feats), model.get_classifier()(pre))
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 10


def test_reset_classifier():
    model = nextvit.create_model("nextvit_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    model.reset_classifier(7)
    assert model(x).shape == (1, 7) and model.num_classes == 7
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == (1, model.num_features, 2, 2)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(0, global_pool="mean")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(5, global_pool="")


@pytest.mark.parametrize("name", ["nextvit_small", "nextvit_base", "nextvit_large"])
def test_intermediates_strides_and_channels(name):
    model = nextvit.create_model(name).eval()
    assert [f["num_chs"] for f in model.feature_info] == [96, 256, 512, 1024]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
    for m, info in zip(maps, model.feature_info):
        assert m.shape == (1, info["num_chs"], 128 // info["reduction"], 160 // info["reduction"])


def test_intermediates_selection(tiny_calibrated):
    model = tiny_calibrated
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        all_maps = model.forward_intermediates(x, intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True, norm=True)
        early = model.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)
    assert [m.shape for m in last_two] == [m.shape for m in all_maps[2:]]
    assert torch.equal(picked[0], all_maps[0])
    assert torch.allclose(picked[1], model.norm(all_maps[3]))
    assert torch.equal(early[0], all_maps[1])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


def test_every_parameter_gets_a_gradient():
    model = nextvit.create_model("nextvit_tiny", num_classes=5, drop_path_rate=0.1)
    model.train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_grad_checkpointing_matches(tiny_calibrated):
    import copy

    model = copy.deepcopy(tiny_calibrated)
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    ref.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-6), n


def test_one_d_token_pooling_matches_avgpool1d_and_drops_the_remainder():
    torch.manual_seed(0)
    attn = EfficientAttention(64, sr_ratio=2).eval()
    tokens = torch.randn(2, 15 * 15, 64)  # 225 tokens: 56 windows of 4, one token dropped
    pooled = attn.pool_tokens(tokens, (15, 15))
    reference = nn.AvgPool1d(4, 4)(tokens.transpose(1, 2)).transpose(1, 2)
    assert pooled.shape == (2, 56, 64)
    assert torch.allclose(pooled, reference, atol=1e-6)
    # a window crosses the row border: tokens 12..15 are (0,12),(0,13),(0,14),(1,0)
    assert torch.allclose(pooled[:, 3], tokens[:, 12:16].mean(1))


def test_two_d_pooling_is_spatial_and_optional():
    torch.manual_seed(0)
    attn = EfficientAttention(64, sr_ratio=2, kv_pool="2d").eval()
    grid = torch.randn(1, 64, 6, 6)
    tokens = grid.flatten(2).transpose(1, 2)
    pooled = attn.pool_tokens(tokens, (6, 6))
    assert torch.allclose(pooled, nn.AvgPool2d(2)(grid).flatten(2).transpose(1, 2), atol=1e-6)
    model_1d = randomize_and_calibrate(nextvit.create_model("nextvit_tiny"))
    model_2d = nextvit.create_model("nextvit_tiny", kv_pool="2d")
    model_2d.load_state_dict(model_1d.state_dict())  # same weights, another pooling
    model_2d.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert not torch.allclose(model_1d(x), model_2d(x), atol=1e-5)
    assert all(m.kv_pool == "2d" for m in model_2d.modules() if isinstance(m, EfficientAttention))


def test_stage_plan():
    plan = stage_plan((3, 4, 10, 3), nextvit.model.DEFAULT_WIDTHS)
    assert [len(s) for s in plan] == [3, 4, 10, 3]
    assert plan[1][-1] == ("ntb", 256) and plan[2][4] == ("ntb", 512) and plan[3][-1] == ("ntb", 1024)
    assert plan[2][5] == ("ncb", 384)


def test_hub_entry_points():
    repo = Path(__file__).resolve().parents[1]
    model = torch.hub.load(str(repo), "nextvit_small", source="local")
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS["nextvit_small"]
