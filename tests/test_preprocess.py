"""The one eval preprocessing (nextvit.preprocess) and the image-file helpers (nextvit.images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nextvit.images import IMAGE_SUFFIXES, ImageFileError, ImageReader, collect_images, find_images, open_rgb
from nextvit.preprocess import CROP_PCT, ConfigError, Preprocessing, image_size_hw
from nextvit.records import SidecarRecord, preprocessing_block

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
    block = json.loads(json.dumps(preprocessing_block(prep)))
    assert SidecarRecord.from_json(dict(preprocessing=block), "x.json").preprocessing == prep
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


def test_one_reader_of_sizes_refuses_strings_and_small_sides():
    assert image_size_hw(64) == (64, 64) and image_size_hw([64]) == (64, 64) and image_size_hw((64, 96)) == (64, 96)
    for bad in ("64", ["6", "4"], [64, 64, 64], [], 64.0, True, None):
        with pytest.raises(ConfigError, match="one size"):
            image_size_hw(bad)
    with pytest.raises(ConfigError, match="at least 32 pixels"):
        image_size_hw([64, 16], 32)
    with pytest.raises(ConfigError, match="input_size '64'"):
        Preprocessing("64")


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


def test_a_gif_is_refused_named_or_found(tmp_path):
    """The same suffixes whether a file is named or found in a folder: ImageFolder (training) skips GIFs."""
    make_tree(tmp_path)
    gif = tmp_path / "a" / "anim.gif"
    noise_image(40, 40).save(gif)
    assert gif not in collect_images([tmp_path / "a"])
    with pytest.raises(ImageFileError, match="anim.gif: not an image file this reads"):
        collect_images([gif])
    with pytest.raises(ImageFileError, match="notes.txt: not an image file"):
        collect_images([tmp_path / "a" / "notes.txt"])


def test_open_rgb_names_an_unreadable_file(tmp_path):
    make_tree(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes((tmp_path / "a" / "a0.png").read_bytes()[:50])
    with pytest.raises(ImageFileError, match=f"cannot read image {broken}"):
        open_rgb(broken)
    assert open_rgb(tmp_path / "a" / "a0.png").mode == "RGB"


def test_16_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # what PIL reads a 16-bit PNG as
    rgb = np.asarray(open_rgb(path))
    expected = np.round(ramp / 257).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert rgb.min() == 0 and rgb.max() == 255 and 100 < rgb.mean() < 155  # PIL's convert gives 255 almost everywhere


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with an orientation tag is read upright."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # stored: 40 wide, 20 high, white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    upright = np.asarray(open_rgb(path))
    assert upright.shape == (40, 20, 3)  # 20 wide, 40 high
    assert upright[:15].mean() > 200 and upright[-15:].mean() < 50  # the white half is now on top


def test_huge_images_are_refused_before_decoding_with_the_limit_and_flag(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)
    with pytest.raises(
        ImageFileError, match=r"300x200 = 60,000 pixels, above the limit of 50,000 \(pass --max-image-pixels"
    ):
        open_rgb(path, max_pixels=50_000)
    assert open_rgb(path, max_pixels=60_000).size == (300, 200)
    assert open_rgb(path).size == (300, 200)  # no limit unless one is given


def test_image_reader_stops_or_skips_and_counts(tmp_path):
    make_tree(tmp_path)
    good = tmp_path / "a" / "a0.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:50])
    strict = ImageReader(Preprocessing(32).array)
    assert strict(good).shape == (3, 32, 32)
    with pytest.raises(ImageFileError, match="pass --skip-corrupt"):
        strict(broken)
    lenient = ImageReader(Preprocessing(32).array, skip_corrupt=True, max_pixels=1000)
    assert lenient(broken) is None and lenient(good) is None  # 40x40 is above 1000 pixels
    assert lenient.skipped == [str(broken), str(good)]
