"""The layers of a folded model (nextvit.deploy_layers): their oneDNN path agrees with the plain one,
in float32 and bfloat16; the hardware is probed on first use; the blocks hand them their residuals."""

from __future__ import annotations

import copy
import subprocess
import sys

import torch
from helpers import randomize_and_calibrate, relative_error

import nextvit
from nextvit import deploy_layers
from nextvit.deploy_layers import DeployConv2d, DeployLinear
from nextvit.model import ConvAttention, ConvMlp, FusesResidualConv


def test_deploy_layers_fast_path_matches_plain_path(tiny_calibrated):
    folded = nextvit.fold_batchnorm(tiny_calibrated)
    assert any(isinstance(m, DeployConv2d) and m.fused_relu for m in folded.modules())
    assert any(isinstance(m, DeployLinear) for m in folded.modules())
    x = torch.randn(3, 3, 80, 112)
    with torch.no_grad():
        fast = folded(x)  # oneDNN with packed weights where available
    plain = folded(x)  # autograd enabled: the plain conv + ReLU path
    with torch.no_grad():
        reference = tiny_calibrated(x)
    assert relative_error(fast, reference) < 1e-5 and relative_error(plain.detach(), reference) < 1e-5


def test_deploy_layers_see_new_weights(tiny_calibrated):
    folded = nextvit.fold_batchnorm(tiny_calibrated)
    other = nextvit.fold_batchnorm(
        randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10), seed=5)
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        folded(x)  # fills the packed-weight caches
        folded.load_state_dict(other.state_dict())
        assert torch.allclose(folded(x), other(x), atol=1e-6)
        copied = copy.deepcopy(folded)
        assert torch.equal(copied(x), folded(x))


def test_folded_model_runs_in_bfloat16(tiny_calibrated):
    """bf16 weights and inputs, and fp32 weights under CPU autocast, both run and track fp32."""
    folded = nextvit.fold_batchnorm(tiny_calibrated)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = tiny_calibrated(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = folded(x)
        bf16 = nextvit.fold_batchnorm(tiny_calibrated).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert auto.dtype == bf16.dtype == torch.bfloat16
    for out in (auto, bf16):
        assert torch.nn.functional.cosine_similarity(out.float(), ref).min() > 0.99


def test_bf16_takes_onednn_only_where_the_cpu_has_bf16_units(tiny_calibrated, monkeypatch):
    """The deploy conv picks oneDNN in bf16 for bf16 inputs and under bf16 autocast when the CPU
    supports it, and the plain path otherwise (oneDNN's bf16 reorder fails on CPUs without it)."""
    conv = next(m for m in nextvit.fold_batchnorm(tiny_calibrated).modules() if isinstance(m, DeployConv2d))
    x = torch.randn(1, conv.in_channels, 8, 8)
    with torch.no_grad():
        assert conv._fast_dtype(x) == torch.float32
        for supported, expected in ((True, torch.bfloat16), (False, None)):
            monkeypatch.setattr(deploy_layers, "mkldnn_bf16_supported", lambda supported=supported: supported)
            assert conv._fast_dtype(x.bfloat16()) is expected
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert conv._fast_dtype(x) is expected
    assert conv._fast_dtype(x) is None  # autograd on: plain path


def test_hardware_is_probed_on_first_use_not_on_import():
    code = (
        "import torch, nextvit; from nextvit import deploy_layers as d\n"
        "probes = (d.mkldnn_usable, d.mkldnn_bf16_supported)\n"
        "assert all(p.cache_info().misses == 0 for p in probes), 'probed on import'\n"
        "model = nextvit.fold_batchnorm(nextvit.create_model('nextvit_tiny', num_classes=10))\n"
        "with torch.no_grad(): model(torch.randn(1, 3, 64, 64)); model(torch.randn(1, 3, 64, 64).bfloat16())\n"
        "assert d.mkldnn_usable.cache_info().misses == 1, 'not probed once'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_deploy_layers_are_still_importable_from_folding():
    from nextvit import folding

    assert folding.DeployConv2d is DeployConv2d and folding.DeployLinear is DeployLinear
    assert folding.mkldnn_bf16_supported is deploy_layers.mkldnn_bf16_supported


def test_blocks_hand_their_residual_to_a_residual_fusing_conv(tiny_calibrated):
    """Any `FusesResidualConv` in MHCA's projection or the MLP's fc2 gets the residual sum in eval
    mode, in eager mode and scripted; a plain conv does not."""
    model = copy.deepcopy(tiny_calibrated)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    swapped = 0
    for module in model.modules():
        for name in ("projection", "fc2"):
            conv = getattr(module, name, None)
            if isinstance(module, (ConvAttention, ConvMlp)) and type(conv) is torch.nn.Conv2d:
                fusing = FusesResidualConv(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
                fusing.weight, fusing.bias = conv.weight, conv.bias
                setattr(module, name, fusing)
                swapped += 1
    assert swapped and isinstance(DeployConv2d(4, 4, 1), FusesResidualConv)
    scripted = torch.jit.script(model)
    with_residual = []
    for module in model.modules():
        if isinstance(module, FusesResidualConv):
            module.register_forward_hook(lambda m, args, out: with_residual.append(len(args) == 2))
    with torch.no_grad():
        assert relative_error(model(x), reference) < 1e-6
        assert len(with_residual) == swapped and all(with_residual)
        assert relative_error(scripted(x), reference) < 1e-6


def test_a_model_built_folded_and_copied_in_inference_mode_runs(tiny_calibrated):
    """Serving code builds, folds and copies under `torch.inference_mode()`: the weights are then inference
    tensors, which have no version counter for the packed-weight cache. The model must run there, and
    afterwards outside it, and still see new weights loaded in place under inference mode."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = tiny_calibrated(x)
    state = copy.deepcopy(tiny_calibrated.state_dict())
    with torch.inference_mode():
        model = nextvit.create_model("nextvit_tiny", num_classes=10).eval()
        model.load_state_dict(state)
        folded = nextvit.fold_batchnorm(model)
        copied = copy.deepcopy(folded)
        assert next(copied.parameters()).is_inference()
        inside = copied(x)
        again = copied(x)  # served from the packed-weight cache
    with torch.no_grad():
        outside = copied(x)
    assert relative_error(inside, reference) < 1e-5 and torch.equal(again, inside)
    assert relative_error(outside, reference) < 1e-5
    other = nextvit.fold_batchnorm(
        randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10), seed=5)
    )
    with torch.inference_mode():
        copied.load_state_dict(other.state_dict())  # in place: the cached packed weights must not be reused
        changed = copied(x)
    with torch.no_grad():
        assert relative_error(changed, other(x)) < 1e-5
