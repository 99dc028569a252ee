"""A run's config.json and an export's sidecar (nextvit.records), and the one loader (nextvit.loading)
that decides a checkpoint's variant and input size from flags, records, its own args and its weights."""

from __future__ import annotations

import json

import pytest
import torch

import nextvit
from nextvit.loading import LoadError, load_model
from nextvit.records import (
    RECORD_VERSION,
    RecordError,
    RunRecord,
    SidecarRecord,
    read_run_record,
    read_sidecar,
    run_record_beside,
    write_run_record,
    write_sidecar,
)

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nextvit.create_model("nextvit_tiny", num_classes=10).eval()


def training_checkpoint(model, path, **args):
    """What classification/main.py saves each epoch: the weights, the optimizer's state, its args."""
    args = dict(dict(model="nextvit_tiny", input_size=64, crop_pct=0.9, kv_pool="1d", lr=5e-4, data_path="x"), **args)
    torch.save(dict(model=model.state_dict(), optimizer={}, epoch=3, args=args), path)
    return path


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


def test_run_record_round_trip_is_atomic_and_versioned(tmp_path):
    record = RunRecord("nextvit_tiny", 10, 64, kv_pool="2d", class_names=CLASSES)
    path = write_run_record(tmp_path / "config.json", record)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left
    data = json.loads(path.read_text())
    assert data["record_version"] == RECORD_VERSION and data["input_size"] == 64 and data["class_names"] == CLASSES
    assert read_run_record(path) == record and record.input_size == (64, 64)
    assert run_record_beside(tmp_path / "model.safetensors") == record and run_record_beside(None) is None
    assert run_record_beside(tmp_path / "other" / "model.safetensors") is None
    assert record.preprocessing().resize_shorter_side == 73 and record.preprocessing([96, 128]).input_size == (96, 128)


def test_a_config_without_version_is_version_1_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(arch="nextvit_small", input_size=[224, 256], class_names=["a", "b"])))
    old = read_run_record(path)
    assert old.arch == "nextvit_small" and old.input_size == (224, 256) and old.num_classes is None
    path.write_text(json.dumps(dict(record_version=RECORD_VERSION + 1, arch="nextvit_small")))
    with pytest.raises(RecordError, match=f"{path} is a version {RECORD_VERSION + 1} record, newer than"):
        read_run_record(path)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("class_names", "abc", "class_names must be a list of strings"),
        ("class_names", [1, 2], "class_names must be a list of strings"),
        ("input_size", "64", "input_size '64' takes one size"),
        ("input_size", [64, 64, 3], "input_size .* takes one size"),
        ("mean", [0.5, 0.5], "mean must be 3 numbers"),
        ("std", [0.2, 0.0, 0.2], "std must be positive"),
        ("crop_pct", "0.9", "crop_pct must be a number"),
        ("kv_pool", "3d", "kv_pool must be '1d' or '2d'"),
        ("num_classes", 10.5, "num_classes must be a whole number"),
        ("record_version", "1", "record_version must be a whole number"),
    ],
)
def test_a_malformed_config_is_refused_naming_file_and_field(tmp_path, field, value, match):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"arch": "nextvit_tiny", "input_size": 64, field: value}))
    with pytest.raises(RecordError, match=match) as err:
        read_run_record(path)
    assert str(err.value).startswith(str(path))


def test_unreadable_json_is_refused_by_name(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(RecordError, match="config.json: not a readable JSON file"):
        read_run_record(path)
    path.write_text("[1, 2]")
    with pytest.raises(RecordError, match="expected a JSON object, found list"):
        read_run_record(path)


# --------------------------------------------------------------------------------------------
# sidecars
# --------------------------------------------------------------------------------------------


def sidecar(**changes) -> dict:
    record = dict(
        format="onnx",
        model="nextvit_tiny",
        task="classification",
        num_classes=3,
        input=dict(name="input", shape=[1, 3, 64, 64], dtype="float32"),
        outputs=[dict(name="logits", shape=[1, 3])],
        preprocessing=dict(
            center_crop=[64, 64], crop_pct=0.875, interpolation="bicubic", mean=[0.5] * 3, std=[0.25] * 3
        ),
        class_names=["a", "b", "c"],
    )
    record.update(changes)
    return record


def test_sidecar_is_written_with_its_version_and_read_back_typed(tmp_path):
    path = write_sidecar(tmp_path / "m.onnx", sidecar())
    assert path.name == "m.onnx.json" and json.loads(path.read_text())["record_version"] == RECORD_VERSION
    record = read_sidecar(tmp_path / "m.onnx")
    assert record.class_names == ("a", "b", "c") and record.preprocessing.input_size == (64, 64)
    assert record.preprocessing.mean == (0.5, 0.5, 0.5) and record.input_shape == (1, 3, 64, 64)
    assert record.output_names == ("logits",) and record.num_classes == 3 and record.data["format"] == "onnx"
    assert read_sidecar(tmp_path / "none.onnx") is None


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(class_names="abc"), "class_names must be a list of strings"),
        (dict(preprocessing=dict(center_crop="64")), "center_crop '64' takes one size"),
        (dict(preprocessing=dict(center_crop=[64], mean=[1, 2])), "mean must be 3 numbers"),
        (dict(task="segmentation"), "task must be one of"),
        (dict(input=dict(shape=["1", 3, 64, 64])), "input.shape must hold whole numbers"),
        (dict(num_classes="3"), "num_classes must be a whole number"),
        (dict(record_version=RECORD_VERSION + 1), "newer than this nextvit reads"),
    ],
)
def test_a_malformed_sidecar_is_refused_on_read_and_never_written(tmp_path, changes, match):
    path = tmp_path / "m.onnx.json"
    path.write_text(json.dumps(sidecar(**changes)))
    with pytest.raises(RecordError, match=match):
        read_sidecar(tmp_path / "m.onnx")
    if "record_version" not in changes:
        with pytest.raises(RecordError, match=match):
            write_sidecar(tmp_path / "n.onnx", sidecar(**changes))
        assert not (tmp_path / "n.onnx.json").exists()


def test_a_sidecar_without_a_crop_has_no_classifier_preprocessing():
    features = SidecarRecord.from_json(dict(task="features", preprocessing=dict(mean=[0.5] * 3)), "f.onnx.json")
    assert features.task == "features" and features.preprocessing is None and features.class_names is None


# --------------------------------------------------------------------------------------------
# the loader
# --------------------------------------------------------------------------------------------


def test_a_lone_training_checkpoint_says_its_variant_size_and_crop(tiny, tmp_path):
    path = training_checkpoint(tiny, tmp_path / "checkpoint.pth")
    loaded = load_model(path, default_size=None)
    assert loaded.record.arch == "nextvit_tiny" and loaded.record.input_size == (64, 64)
    assert loaded.record.crop_pct == 0.9 and loaded.record.num_classes == 10
    assert loaded.sources["variant"] == "its training args" and loaded.sources["input_size"] == "its training args"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), tiny(x))
    assert "nextvit_tiny (its training args), input 64x64 (its training args)" in loaded.describe()


def test_weights_alone_tell_the_variant_and_the_size_is_asked_for(tiny, tmp_path):
    path = nextvit.save_bytedance_checkpoint(tiny, tmp_path / "release.pth")  # no metadata at all
    loaded = load_model(path)
    assert loaded.record.arch == "nextvit_tiny" and loaded.sources["variant"] == "the weights' stage depths"
    assert loaded.record.input_size == (224, 224) and loaded.sources["input_size"] == "default"
    with pytest.raises(LoadError, match="no record says what size") as err:
        load_model(path, default_size=None)
    assert "pass --image-size" in err.value.describe({"image_size": "--image-size"})
    with pytest.raises(LoadError) as err:
        load_model(path, model="nextvit_small")
    assert err.value.describe({"model": "--model-name"}).startswith(
        "--model-name nextvit_small: the weights of"
    ) and "are a nextvit_tiny" in str(err.value)


def test_records_that_disagree_are_refused_in_one_line_naming_the_flag(tiny, tmp_path):
    path = training_checkpoint(tiny, tmp_path / "checkpoint.pth")
    config = tmp_path / "config.json"
    write_run_record(config, RunRecord("nextvit_tiny", 10, 96))
    with pytest.raises(LoadError) as err:
        load_model(path)
    message = err.value.describe({"image_size": "--image-size"})
    assert "config.json says the input size 96x96 but its training args says 64x64" in message
    assert message.endswith("pass --image-size to choose") and "\n" not in message
    assert load_model(path, image_size=96).record.input_size == (96, 96)  # the flag decides
    write_run_record(config, RunRecord("nextvit_small", 10, 64))
    with pytest.raises(
        LoadError, match="config.json says the variant nextvit_small but its training args says nextvit_tiny"
    ):
        load_model(path)
    write_run_record(config, RunRecord("nextvit_tiny", 7, 64))
    with pytest.raises(LoadError, match="config.json says 7 classes but its classifier has 10"):
        load_model(path)


def test_config_json_beside_the_weights_is_used_first(tiny, tmp_path):
    path = nextvit.save_checkpoint(tiny, tmp_path / "model.safetensors")
    write_run_record(tmp_path / "config.json", RunRecord("nextvit_tiny", 10, [64, 96], class_names=CLASSES))
    loaded = load_model(path, preprocessing=dict(crop_pct=1.0), class_names=None)
    assert loaded.record.input_size == (64, 96) and loaded.sources["input_size"] == "config.json"
    assert loaded.record.class_names == tuple(CLASSES) and loaded.preprocessing.crop_pct == 1.0
    assert loaded.checkpoint["layout"] == "nextvit" and len(loaded.checkpoint["sha256"]) == 64
    with pytest.raises(LoadError) as err:
        load_model(path, class_names=["a", "b"])
    assert err.value.describe({"class_names": "--class-names"}) == (
        "--class-names lists 2 class names but the model has 10 outputs"
    )


def test_read_checkpoint_keeps_a_training_checkpoints_args(tiny, tmp_path):
    path = training_checkpoint(tiny, tmp_path / "checkpoint.pth", input_size=80)
    _, meta = nextvit.read_checkpoint(path)
    assert json.loads(meta["training_args"]) == dict(model="nextvit_tiny", input_size=80, crop_pct=0.9, kv_pool="1d")
