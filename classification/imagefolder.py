"""ImageNet-style data: an ImageFolder tree with train/ and val/, checked up front.

Every problem with the data is reported with the path it concerns: a missing folder, a class
folder without images, train and val class lists that differ, an unreadable image, an
augmentation step that fails on an image (augment.py names the step).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch.distributed as dist
from augment import AugmentationError, build_train_transform
from PIL import Image
from torchvision import datasets

from nextvit.images import IMAGE_SUFFIXES, ImageFileError, is_image, open_rgb
from nextvit.preprocess import Preprocessing

__all__ = ["CheckedImageFolder", "DataError", "build_dataset", "build_transform", "check_image_folder"]


class DataError(ValueError):
    """The dataset on disk is not usable as given."""


def _class_folders(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image_folder(root: str | Path) -> list[str]:
    """Check `root/train/<class>/...` and `root/val/<class>/...`; return the class names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data-path {root} does not exist or is not a folder")
    classes = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: --data-path must hold train/ and val/ ImageFolder trees")
        names = _class_folders(folder)
        if not names:
            raise DataError(f"{folder} has no class folders")
        for name in names:
            if not any(is_image(p) for p in (folder / name).rglob("*")):
                raise DataError(f"class folder {folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        classes[split] = names
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise DataError(
            f"train and val class lists differ under {root}: "
            f"only in train {only_train[:10]}, only in val {only_val[:10]}"
        )
    return classes["train"]


def _checked_loader(path: str) -> Image.Image:
    try:
        return open_rgb(path)
    except ImageFileError as err:
        raise DataError(f"{err} (pass --skip-corrupt to skip unreadable images)") from err


def _readable(path: str) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:  # noqa: BLE001 - anything PIL cannot decode counts as corrupt
        return False


def find_unreadable(paths: list[str], workers: int = 8) -> list[str]:
    """The paths PIL cannot decode, in their order; in a distributed run every image is decoded once.

    Each process decodes its share (every world-size-th path) and the lists are gathered, so all
    processes get the same complete list for the cost of one pass over the dataset, split among them.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    mine = paths[rank::world]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ok = list(pool.map(_readable, mine, chunksize=64))
    bad = [p for p, good in zip(mine, ok) if not good]
    if distributed:
        shares: list[list[str] | None] = [None] * world
        dist.all_gather_object(shares, bad)
        found = {p for share in shares for p in share}
        bad = [p for p in paths if p in found]
    return bad


def drop_unreadable(dataset: datasets.ImageFolder, workers: int = 8) -> list[str]:
    """Remove the images that fail to decode (see `find_unreadable`); return their paths."""
    bad = find_unreadable([p for p, _ in dataset.samples], workers)
    if bad:
        unreadable = set(bad)
        keep = [s for s in dataset.samples if s[0] not in unreadable]
        dataset.samples = dataset.imgs = keep
        dataset.targets = [t for _, t in keep]
    return bad


def build_transform(is_train: bool, args: argparse.Namespace):
    """timm's training transform (RandAugment, random erasing, ...; see augment.py); for eval the one eval
    preprocessing of `nextvit.preprocess` (resize to size/crop_pct, bicubic, center crop, ImageNet
    mean/std), which exported models are calibrated, evaluated and run with too."""
    if is_train:
        return build_train_transform(
            args.input_size,
            color_jitter=args.color_jitter,
            auto_augment=args.aa,
            interpolation=args.train_interpolation,
            re_prob=args.reprob,
            re_mode=args.remode,
            re_count=args.recount,
        )
    preprocessing = Preprocessing((args.input_size, args.input_size), args.crop_pct, "bicubic")
    return preprocessing.tensor


class CheckedImageFolder(datasets.ImageFolder):
    """An ImageFolder whose transform failures are `DataError`s naming the image and the step."""

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            try:
                sample = self.transform(sample)
            except AugmentationError as err:
                raise DataError(f"{path}: {err}") from err
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target


def build_dataset(is_train: bool, args: argparse.Namespace, log=print) -> tuple[datasets.ImageFolder, int]:
    """The train or val ImageFolder of `--data-path`, with its number of classes."""
    split = Path(args.data_path) / ("train" if is_train else "val")
    dataset = CheckedImageFolder(str(split), transform=build_transform(is_train, args), loader=_checked_loader)
    if getattr(args, "skip_corrupt", False):
        bad = drop_unreadable(dataset, workers=max(1, args.num_workers))
        if bad:
            log(f"skipped {len(bad)} unreadable image(s) in {split}, e.g. {bad[0]}")
    return dataset, len(dataset.classes)
