"""BatchNorm folding: same outputs, no BatchNorm left, idempotent, saved and loaded back. (The layers a folded
model runs, in float32 and bfloat16: test_deploy_layers.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import relative_error
from torch import nn

import nextvit


@pytest.mark.parametrize("kv_pool", ["1d", "2d"])
@pytest.mark.parametrize("hw", [(224, 224), (240, 200)])
def test_folded_equals_unfolded_small(small_calibrated, kv_pool, hw):
    model = copy.deepcopy(small_calibrated)
    if kv_pool == "2d":
        for m in model.modules():
            if hasattr(m, "kv_pool"):
                m.kv_pool = "2d"
    folded = nextvit.fold_batchnorm(model)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-5
        assert relative_error(folded.forward_features(x), model.forward_features(x)) < 1e-5


def test_folding_removes_every_batchnorm(tiny_calibrated):
    folded = nextvit.fold_batchnorm(tiny_calibrated)
    assert folded.is_folded and not tiny_calibrated.is_folded
    assert not any("running_mean" in k for k in folded.state_dict())
    # E-MHSA projections are fused: kv where tokens are pooled, qkv where they are not
    attns = [m for m in folded.modules() if isinstance(m, nextvit.model.EfficientAttention)]
    assert all((a.kv is not None) == (a.sr_ratio > 1) and (a.qkv is not None) == (a.sr_ratio == 1) for a in attns)


def test_folding_in_float64_is_exact(tiny_calibrated):
    model = copy.deepcopy(tiny_calibrated).double()
    folded = nextvit.fold_batchnorm(model)
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-12


def test_folding_twice_equals_folding_once(tiny_calibrated):
    once = nextvit.fold_batchnorm(tiny_calibrated)
    twice = nextvit.fold_batchnorm(once)
    assert once.state_dict().keys() == twice.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(once.state_dict().values(), twice.state_dict().values()))


def test_copy_by_default_in_place_on_request(tiny_calibrated):
    model = copy.deepcopy(tiny_calibrated)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = nextvit.fold_batchnorm(model)
    assert folded is not model and not model.is_folded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    same = nextvit.fold_batchnorm(model, inplace=True)
    assert same is model and model.is_folded


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_folded_save_and_load_round_trip(tiny_calibrated, tmp_path, suffix):
    folded = nextvit.fold_batchnorm(tiny_calibrated)
    path = nextvit.save_checkpoint(folded, tmp_path / f"folded{suffix}")
    restored = nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=path)
    assert restored.is_folded
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(restored(x), folded(x))
    # a folded file refuses to load into an unfolded model instead of applying nothing
    with pytest.raises(nextvit.CheckpointError, match="folded"):
        nextvit.load_checkpoint(nextvit.create_model("nextvit_tiny", num_classes=10), path)
    # and an unfolded one refuses a folded model
    plain = nextvit.save_checkpoint(tiny_calibrated, tmp_path / f"plain{suffix}")
    with pytest.raises(nextvit.CheckpointError, match="unfolded"):
        nextvit.load_checkpoint(nextvit.fold_batchnorm(tiny_calibrated), plain)


def test_headless_model_folds_its_final_norm_into_an_affine_map(tiny_calibrated):
    model = copy.deepcopy(tiny_calibrated)
    model.reset_classifier(0, global_pool="")
    folded = nextvit.fold_batchnorm(model)
    assert isinstance(folded.norm, nextvit.model.ChannelAffine)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) < 1e-5


@pytest.mark.export  # needs onnx and onnxruntime
def test_folded_model_exports_no_batchnorm_to_onnx(tiny_calibrated, tmp_path):
    import onnx

    folded = nextvit.fold_batchnorm(tiny_calibrated)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        folded, (torch.randn(1, 3, 64, 64),), str(path), opset_version=17, dynamo=False, input_names=["input"]
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 64)
    (exported,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert relative_error(torch.from_numpy(exported), tiny_calibrated(x)) < 1e-5


def test_batchnorm_without_running_statistics_cannot_be_folded():
    model = nextvit.create_model("nextvit_tiny")
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.track_running_stats = False
    bn.running_mean = None
    bn.running_var = None
    with pytest.raises(ValueError, match="running statistics"):
        nextvit.fold_batchnorm(model)
