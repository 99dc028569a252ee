"""classification/augment.py: the trainer's default train transform on Pillow 13, and errors naming the op."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from nextvit.synthetic import draw_shape, make_classification_dataset

POLICIES = (
    "rand-m9-mstd0.5-inc1",  # the recipe's default
    "rand-m10-n3",
    "rand-m9-mstd0.5",  # posterize without 'inc': the TPU level, 0 bits at small magnitudes
    "augmix-m5-w3-d2",
    "augmix-m10-mstd0.5",
    "original",
    "originalr",
    "v0",
    "v0r",
    "3a",
)


@pytest.fixture(scope="module")
def imagefolder(import_script):
    return import_script("classification", "imagefolder")


@pytest.fixture(scope="module")
def augment(imagefolder):
    """The module imagefolder.py imports by name (one set of classes for both)."""
    return sys.modules["augment"]


@pytest.fixture(scope="module")
def default_args(import_script, tmp_path_factory):
    """The trainer's own parser defaults: nothing but the data path is given."""
    main = import_script("classification", "main")
    return main.get_args_parser().parse_args(["--data-path", str(tmp_path_factory.mktemp("unused"))])


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return draw_shape("star", 96, random.Random(0))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def count_zero_bit_posterize(transform, augment) -> list[int]:
    """Make every posterize op of `transform` count the calls that keep 0 bits; return the counter."""
    calls = [0]

    def counting(posterize):
        def count(img, bits_to_keep, **kwargs):
            calls[0] += bits_to_keep <= 0
            return posterize(img, bits_to_keep, **kwargs)

        return count

    posterize_ops = [op for op in augment.augment_ops(transform) if op.name.startswith("Posterize")]
    assert posterize_ops, "the policy has no posterize op to watch"
    for op in posterize_ops:
        op.aug_fn = counting(op.aug_fn)  # the transform's own op, watched
    return calls


def test_timm_still_asks_pillow_for_zero_bits_which_pillow_refuses(augment, photo):
    """The bug the fix is for. When this fails, timm or Pillow changed: augment.py's fix can go."""
    from timm.data.auto_augment import AugmentOp

    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    assert op.level_fn(10, op.hparams) == (0,)
    with pytest.raises(ValueError, match="bits"):
        op(photo)


def test_zero_bit_posterize_is_black_and_otherwise_pillows(augment, photo):
    black = np.asarray(augment.zero_bit_posterize(photo, 0))
    assert black.shape == np.asarray(photo).shape and not black.any()
    for bits in range(1, 8):
        assert np.array_equal(
            np.asarray(augment.zero_bit_posterize(photo, bits)), np.asarray(ImageOps.posterize(photo, bits))
        )
    assert augment.zero_bit_posterize(photo, 8) is photo


def test_default_train_transform_reaches_zero_bits_and_never_raises(augment, imagefolder, default_args, photo):
    """The trainer's default transform (its parser's defaults, 224, RandAugment m9 mstd0.5 inc1, random
    erasing), drawn with fixed seeds often enough that magnitude 10 posterize happens several times."""
    assert default_args.aa == "rand-m9-mstd0.5-inc1" and default_args.input_size == 224
    transform = imagefolder.build_transform(True, default_args)
    zero_bits = count_zero_bit_posterize(transform, augment)
    for seed in range(4000):
        seed_all(seed)
        out = transform(photo)
        assert out.shape == (3, 224, 224)
    assert zero_bits[0] >= 3, f"only {zero_bits[0]} draws reached 0 bits: the test did not see the case"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_posterizes_at_every_magnitude(augment, photo, policy):
    from timm.data import auto_augment as timm_aa

    transform = augment.build_train_transform(
        64, color_jitter=0.4, auto_augment=policy, interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1
    )
    ops = list(augment.augment_ops(transform))
    assert ops and not any(op.aug_fn is timm_aa.posterize for op in ops)
    for op in (op for op in ops if op.name.startswith("Posterize")):
        for magnitude in (0, 1, 2, 5, 9, 10):
            probe = timm_aa.AugmentOp(op.name, prob=1.0, magnitude=magnitude)
            probe.aug_fn = op.aug_fn
            assert probe(photo).size == photo.size
    seed_all(0)
    for _ in range(50):
        assert transform(photo.resize((64, 64))).shape == (3, 64, 64)


def test_no_policy_keeps_the_transform_plain(augment, photo):
    transform = augment.build_train_transform(
        48, color_jitter=0.4, auto_augment="none", interpolation="bicubic", re_prob=0.0, re_mode="pixel", re_count=1
    )
    assert not list(augment.augment_ops(transform))
    assert transform(photo).shape == (3, 48, 48)


def broken_posterize_transform(augment, imagefolder, args):
    """The default transform with its RandAugment reduced to timm's own posterize at magnitude 10."""
    from timm.data import auto_augment as timm_aa

    transform = imagefolder.build_transform(True, args)
    policy = next(step.fn for step in transform.transforms if isinstance(step.fn, timm_aa.RandAugment))
    op = timm_aa.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    policy.ops[:] = [augment.NamedStep(op, "RandAugment op PosterizeIncreasing (p=1.0, m=10)")]
    return transform


def test_a_failing_step_names_the_image_and_the_operation(augment, imagefolder, default_args, tmp_path):
    root = make_classification_dataset(tmp_path, num_classes=2, train_per_class=2, val_per_class=1, size=32, seed=0)
    dataset = imagefolder.CheckedImageFolder(str(root / "train"), transform=broken_posterize_transform(
        augment, imagefolder, default_args))  # fmt: skip
    with pytest.raises(imagefolder.DataError) as caught:
        dataset[0]
    message = str(caught.value)
    assert dataset.samples[0][0] in message
    assert "PosterizeIncreasing" in message and "bits must be" in message


def test_a_failing_step_in_a_loader_worker_is_one_line_naming_the_image(
    import_script, augment, imagefolder, default_args, tmp_path
):
    main = import_script("classification", "main")
    root = make_classification_dataset(tmp_path, num_classes=2, train_per_class=2, val_per_class=1, size=32, seed=0)
    dataset = imagefolder.CheckedImageFolder(str(root / "train"), transform=broken_posterize_transform(
        augment, imagefolder, default_args))  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(imagefolder.DataError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # what torch hands back from the worker
    line = main.data_error_message(caught.value)
    assert "\n" not in line
    assert Path(line.split(": ")[0]).is_file() and "PosterizeIncreasing" in line
