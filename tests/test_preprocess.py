"""The one eval preprocessing (nextvit.preprocess) and the image-file helpers (nextvit.images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nextvit.images import IMAGE_SUFFIXES, ImageFileError, collect_images, find_images, open_rgb
from nextvit.preprocess import CROP_PCT, ConfigError, Preprocessing, training_config

CASES = [  # (crop size, image width, height, crop_pct, interpolation)
    (64, 100, 80, 0.875, "bicubic"),
    (224, 500, 375, 0.875, "bicubic"),
    (224, 375, 500, 0.9, "bicubic"),
    (64, 64, 64, 0.875, "bicubic"),
    (384, 640, 427, 0.875, "bicubic"),
    (224, 257, 1000, 1.0, "bilinear"),
    (96, 97, 131, 0.95, "nearest"),
]


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.interop
@pytest.mark.parametrize("size,width,height,crop_pct,interpolation", CASES)
def test_equals_the_classification_path_it_replaced(size, width, height, crop_pct, interpolation):
    """The numbers the accuracy tables were measured with: torchvision's Resize(int(size / crop_pct)),
    CenterCrop, ToTensor and Normalize, as classification/imagefolder.py composed them before."""
    from torchvision import transforms

    mode = getattr(transforms.InterpolationMode, interpolation.upper())
    before = transforms.Compose([
        transforms.Resize(int(size / crop_pct), interpolation=mode),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])  # fmt: skip
    image = noise_image(width, height)
    now = Preprocessing((size, size), crop_pct, interpolation).tensor(image)
    assert now.shape == (3, size, size)
    assert (now - before(image)).abs().max().item() == 0.0


def test_shapes_defaults_and_record_round_trip():
    prep = Preprocessing(64)
    assert prep.input_size == (64, 64) and prep.crop_pct == CROP_PCT == 0.875 and prep.resize_shorter_side == 73
    assert Preprocessing(224).resize_shorter_side == 256 and Preprocessing(384).resize_shorter_side == 438
    record = json.loads(json.dumps(prep.to_record()))
    assert Preprocessing.from_record(record) == prep
    x = prep.array(noise_image(90, 70).convert("L"))  # grey images are converted to RGB
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    changed = prep.override(input_size=[96], crop_pct=1.0)
    assert changed.input_size == (96, 96) and changed.crop_pct == 1.0 and changed.mean == prep.mean


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(crop_pct=0.0), "crop_pct"),
        (dict(crop_pct=1.5), "crop_pct"),
        (dict(interpolation="cubic"), "interpolation"),
        (dict(mean=(0.5, 0.5)), "mean needs 3 values"),
        (dict(std=(0.2, 0.0, 0.2)), "std must be positive"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Preprocessing(64, **kwargs)


def test_training_config_is_read_or_refused_by_name(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    assert training_config(ckpt) == {} and training_config(None) == {}
    (tmp_path / "config.json").write_text('{"input_size": 64, "class_names": ["a", "b"]}')
    assert training_config(ckpt)["class_names"] == ["a", "b"]
    assert Preprocessing.from_config(training_config(ckpt)) == Preprocessing(64)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not a readable JSON file"):
        training_config(ckpt)
    (tmp_path / "config.json").write_text('{"class_names": "abc"}')
    with pytest.raises(ConfigError, match="class_names must be a list"):
        training_config(ckpt)


def make_tree(root):
    for cls, count in (("a", 5), ("b", 2), ("c", 1)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            noise_image(40, 40, i).save(root / cls / f"{cls}{i}.png")
    (root / "a" / "notes.txt").write_text("not an image")


def test_find_images_spreads_over_classes(tmp_path):
    make_tree(tmp_path)
    picked = find_images(tmp_path, limit=3)
    assert sorted(p.parent.name for p in picked) == ["a", "b", "c"]
    assert len(find_images(tmp_path)) == 8 and find_images(tmp_path, 4, seed=1) != find_images(tmp_path, 4, seed=2)
    with pytest.raises(ImageFileError, match="--calib-dir .*missing: no such folder"):
        find_images(tmp_path / "missing", flag="--calib-dir")
    assert ".webp" in IMAGE_SUFFIXES and len(IMAGE_SUFFIXES) == 9


def test_collect_images_from_files_folders_and_patterns(tmp_path):
    make_tree(tmp_path)
    found = collect_images([tmp_path / "a" / "a0.png", tmp_path / "b", str(tmp_path / "*" / "c*.png")])
    assert [p.name for p in found] == ["a0.png", "b0.png", "b1.png", "c0.png"]
    assert len(collect_images([tmp_path, tmp_path / "a"])) == 8  # each file once
    with pytest.raises(ImageFileError, match="no such file or folder"):
        collect_images([tmp_path / "nope.jpg"])
    with pytest.raises(ImageFileError, match="matches no images"):
        collect_images([str(tmp_path / "*.jpg")])


def test_open_rgb_names_an_unreadable_file(tmp_path):
    make_tree(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes((tmp_path / "a" / "a0.png").read_bytes()[:50])
    with pytest.raises(ImageFileError, match=f"cannot read image {broken}"):
        open_rgb(broken)
    assert open_rgb(tmp_path / "a" / "a0.png").mode == "RGB"
