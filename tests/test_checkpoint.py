"""Checkpoints: timm and ByteDance layouts load by name, safely, with clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import randomize_and_calibrate, relative_error
from safetensors.torch import save_file

import nextvit
from nextvit.checkpoint import bytedance_to_timm, detect_layout, timm_to_bytedance


@pytest.fixture(scope="module")
def timm_small():
    import timm

    torch.manual_seed(1)
    return randomize_and_calibrate(timm.create_model("nextvit_small"))


def _outputs_match(ours, theirs, sizes=((224, 224), (256, 320))):
    ours.eval()
    theirs.eval()
    for hw in sizes:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            assert relative_error(ours(x), theirs(x)) < 2e-6


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.interop
def test_timm_checkpoint_loads_into_ours(timm_small, tmp_path, suffix):
    path = tmp_path / f"timm{suffix}"
    state = {k: v.contiguous() for k, v in timm_small.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    ours = nextvit.create_model("nextvit_small", checkpoint_path=path)
    report = nextvit.load_checkpoint(nextvit.create_model("nextvit_small"), path)
    assert report.layout == "timm" and report.clean and report.loaded == len(state)
    _outputs_match(ours, timm_small)


@pytest.mark.interop
def test_our_checkpoint_loads_into_timm(small_calibrated, tmp_path):
    import timm

    path = nextvit.save_checkpoint(small_calibrated, tmp_path / "ours.safetensors")
    theirs = timm.create_model("nextvit_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _outputs_match(small_calibrated, theirs)


@pytest.mark.interop
def test_bytedance_layout_round_trip_agrees_with_timms_converter(timm_small, tmp_path):
    import timm
    from timm.models.nextvit import checkpoint_filter_fn

    ours = nextvit.create_model("nextvit_small")
    ours.load_state_dict(timm_small.state_dict())
    path = nextvit.save_bytedance_checkpoint(ours, tmp_path / "nextvit_small_in1k_224.pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"}
    keys = list(raw["model"])
    assert "features.19.mlp.conv1.weight" in keys and "proj_head.0.weight" in keys
    assert not any(k.startswith(("stages.", "head.")) for k in keys)

    # timm's own (positional) converter turns our ByteDance file into exactly timm's weights
    theirs = timm.create_model("nextvit_small")
    converted = checkpoint_filter_fn(raw["model"], theirs)
    theirs.load_state_dict(converted)
    for key, value in timm_small.state_dict().items():
        assert torch.equal(converted[key], value), key

    # and our by-name loader reads it back into the same model
    reloaded = nextvit.create_model("nextvit_small", checkpoint_path=path)
    report = nextvit.load_checkpoint(nextvit.create_model("nextvit_small"), path)
    assert report.layout == "bytedance" and report.clean
    _outputs_match(reloaded, timm_small)
    _outputs_match(reloaded, theirs)


@pytest.mark.interop
def test_bare_bytedance_state_dict_and_ddp_prefix(timm_small, tmp_path):
    state = timm_to_bytedance(timm_small.state_dict(), (3, 4, 10, 3))
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    model = nextvit.create_model("nextvit_small", checkpoint_path=path)
    _outputs_match(model, timm_small, sizes=((224, 224),))


def test_layout_conversion_is_by_name_for_every_size():
    for name in ("nextvit_small", "nextvit_base", "nextvit_large"):
        model = nextvit.create_model(name)
        state = model.state_dict()
        bd = timm_to_bytedance(state, model.depths)
        assert detect_layout(bd) == "bytedance" and detect_layout(state) == "timm"
        back = bytedance_to_timm(bd, model.depths)
        assert list(back) == list(state)
        # shuffling the order of the file changes nothing: keys are mapped by name
        shuffled = dict(reversed(list(bd.items())))
        assert bytedance_to_timm(shuffled, model.depths).keys() == state.keys()


@pytest.mark.interop
def test_fine_tuning_drops_a_head_of_another_class_count(timm_small, tmp_path):
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in timm_small.state_dict().items()}, path)
    model = nextvit.create_model("nextvit_small", num_classes=10, checkpoint_path=path)
    assert model.get_classifier().out_features == 10
    report = nextvit.load_checkpoint(nextvit.create_model("nextvit_small", num_classes=10), path)
    assert report.dropped_head == ["head.fc.bias", "head.fc.weight"] and report.clean
    assert torch.equal(model.stem[0].conv.weight, timm_small.stem[0].conv.weight)
    # forced off, the class-count mismatch is an error that names the keys and shapes
    with pytest.raises(
        nextvit.CheckpointError, match=r"head\.fc\.weight checkpoint \(1000, 1024\) vs model \(10, 1024\)"
    ):
        nextvit.load_checkpoint(nextvit.create_model("nextvit_small", num_classes=10), path, drop_head=False)


def test_truncated_file_gives_a_clear_error(small_calibrated, tmp_path):
    for suffix in (".pth", ".safetensors"):
        path = nextvit.save_checkpoint(small_calibrated, tmp_path / f"ok{suffix}")
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(nextvit.CheckpointError, match=f"could not read checkpoint .*cut{suffix}"):
            nextvit.create_model("nextvit_small", checkpoint_path=cut)


@pytest.mark.parametrize(
    "content,found",
    [(b"", "an empty file"), (b"epoch 3 acc 81.2\n", "b'epoc'"), (bytes(range(7, 250)) * 8, r"b'\\x07")],
)
def test_a_file_that_is_not_a_checkpoint_gets_a_clear_error(tmp_path, content, found):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(
        nextvit.CheckpointError, match=f"could not read checkpoint .*weights.pth: not a torch file.*{found}"
    ):
        nextvit.create_model("nextvit_tiny", checkpoint_path=path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_keeps_its_kv_pooling(tmp_path, suffix):
    torch.manual_seed(0)
    model_2d = randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10, kv_pool="2d"))
    path = nextvit.save_checkpoint(model_2d, tmp_path / f"tiny_2d{suffix}")
    reloaded = nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=path).eval()
    assert reloaded.kv_pool == "2d"
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model_2d(x))
    with pytest.raises(ValueError, match="trained with kv_pool='2d'"):
        nextvit.create_model("nextvit_tiny", num_classes=10, checkpoint_path=path, kv_pool="1d")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(nextvit.CheckpointError, match="checkpoint not found: .*nope.pth"):
        nextvit.create_model("nextvit_small", checkpoint_path=tmp_path / "nope.pth")


def test_wrong_shape_checkpoint_lists_the_keys(small_calibrated, tmp_path):
    state = dict(small_calibrated.state_dict())
    state["stages.2.blocks.4.e_mhsa.q.weight"] = torch.zeros(100, 384)
    del state["stem.0.conv.weight"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(nextvit.CheckpointError) as err:
        nextvit.create_model("nextvit_small", checkpoint_path=path)
    text = str(err.value)
    assert "bad.pth" in text and "missing from the checkpoint (1): stem.0.conv.weight" in text
    assert "unexpected in the checkpoint (1): extra.weight" in text
    assert "stages.2.blocks.4.e_mhsa.q.weight checkpoint (100, 384) vs model (384, 384)" in text
    # with strict=False the rest loads and the report says what did not
    report = nextvit.load_checkpoint(nextvit.create_model("nextvit_small"), path, strict=False)
    assert report.missing == ["stem.0.conv.weight"] and report.unexpected == ["extra.weight"]
    assert len(report.mismatched) == 1 and not report.clean


def test_checkpoint_of_another_variant_is_named(tmp_path):
    base = nextvit.create_model("nextvit_base")
    bd_path = nextvit.save_bytedance_checkpoint(base, tmp_path / "nextvit_base_in1k_224.pth")
    with pytest.raises(nextvit.CheckpointError, match="30 blocks but the model has 20.*nextvit_base"):
        nextvit.create_model("nextvit_small", checkpoint_path=bd_path)
    timm_path = nextvit.save_checkpoint(base, tmp_path / "base.safetensors")
    with pytest.raises(nextvit.CheckpointError, match="unexpected in the checkpoint .*stages.2.blocks.10"):
        nextvit.create_model("nextvit_small", checkpoint_path=timm_path)


def test_checkpoint_records_the_variant_of_a_model_built_without_the_factory(tmp_path):
    path = nextvit.save_checkpoint(nextvit.build_nextvit("nextvit_tiny"), tmp_path / "tiny.safetensors")
    assert nextvit.read_checkpoint(path)[1]["variant"] == "nextvit_tiny"


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"stem.0.conv.weight": torch.zeros(1)}, "hook": subprocess.Popen}, path)
    with pytest.raises(nextvit.CheckpointError, match="refuses to unpickle"):
        nextvit.read_checkpoint(path)


def test_not_a_nextvit_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(nextvit.CheckpointError, match="not a Next-ViT checkpoint"):
        nextvit.create_model("nextvit_small", checkpoint_path=path)


@pytest.mark.interop
def test_import_does_not_touch_timms_registry():
    code = (
        "import warnings; warnings.simplefilter('error');"
        "import timm, nextvit;"
        "m = timm.create_model('nextvit_small');"
        "assert type(m).__module__ == 'timm.models.nextvit', type(m).__module__;"
        "assert 'nextvit_tiny' not in timm.list_models()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Overwriting" not in result.stderr


def test_released_checkpoint_table():
    names = nextvit.list_models(pretrained=True)
    assert len(names) == 12 and "nextvit_base.bd_ssld_6m_in1k_384" in names
    cfg = nextvit.get_pretrained_cfg("nextvit_small")
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation, cfg.top1) == (224, 0.875, "bicubic", 82.5)
    assert cfg.file == "nextvit_small_in1k_224.pth" and cfg.hf_hub_id == "timm/nextvit_small.bd_in1k"
    assert nextvit.get_pretrained_cfg("nextvit_large.bd_in1k_384").input_size == 384
    assert nextvit.list_models() == ["nextvit_base", "nextvit_large", "nextvit_small", "nextvit_tiny"]
