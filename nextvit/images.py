"""Image files on disk: which files count as images, how to draw a sample across class folders, and
how to read one with an error that names it.

One list of suffixes serves training data checks, calibration, evaluation and prediction, so a
file that one of them reads is never silently skipped by another.
"""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFileError",
    "is_image",
    "find_images",
    "labelled_images",
    "collect_images",
    "open_rgb",
]

# the suffixes torchvision's ImageFolder reads, so an ImageFolder tree means the same images everywhere
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFileError(ValueError):
    """An image, a folder of images or a pattern that cannot be used; the message names it."""


def is_image(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def find_images(folder: str | os.PathLike, limit: int | None = None, seed: int = 0, flag: str = "folder") -> list[Path]:
    """Up to `limit` images under `folder` (recursively), spread over its subfolders (classes):
    one from each in turn, in a seeded random order inside each, so a small sample covers them all."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFileError(f"{flag} {folder}: no such folder")
    groups: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if is_image(path):
            groups.setdefault(path.parent, []).append(path)
    if not groups:
        raise ImageFileError(f"{flag} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    rng = random.Random(seed)
    for files in groups.values():
        rng.shuffle(files)
    picked: list[Path] = []
    queues = list(groups.values())
    depth = 0
    while queues and (limit is None or len(picked) < limit):
        queues = [q for q in queues if len(q) > depth]
        for q in queues:
            if limit is not None and len(picked) >= limit:
                break
            picked.append(q[depth])
        depth += 1
    return picked


def labelled_images(
    folder: str | os.PathLike, num_classes: int, class_names: Sequence[str] | None = None, flag: str = "folder"
) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image, class index) pairs of an ImageFolder (`folder/<class>/<image>`), checked against the
    classifier: as many class folders as it has outputs, with its class names when they are known."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFileError(f"{flag} {folder}: no such folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ImageFileError(f"{flag} {folder} has no class folders (expected {folder}/<class>/<image>)")
    if len(classes) != num_classes:
        raise ImageFileError(
            f"{flag} {folder} has {len(classes)} class folders but the classifier has {num_classes} "
            "outputs: evaluate on the validation folder of the data the model was trained on"
        )
    if class_names is not None and list(class_names) != classes:
        differ = [f"{a}/{b}" for a, b in zip(class_names, classes) if a != b][:5]
        raise ImageFileError(
            f"{flag} {folder}: its class folders differ from the model's classes (model/folder: {', '.join(differ)})"
        )
    samples = [(p, i) for i, name in enumerate(classes) for p in sorted((folder / name).rglob("*")) if is_image(p)]
    if not samples:
        raise ImageFileError(f"{flag} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return samples, classes


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by `inputs`: files (any suffix: the decoder decides), folders (their
    images, recursively, sorted) and glob patterns (`photos/*.jpg`, `**` allowed), in the order given,
    each file once. A path that does not exist or a pattern or folder that finds no image is an error."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(p for p in path.rglob("*") if is_image(p))
            if not images:
                raise ImageFileError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += images
        elif glob.has_magic(text):
            images = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image(p))
            if not images:
                raise ImageFileError(f"the pattern {text!r} matches no images ({', '.join(IMAGE_SUFFIXES)})")
            found += images
        else:
            raise ImageFileError(f"{path}: no such file or folder")
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p, None)
    return list(unique)


def open_rgb(path: str | os.PathLike):
    """The image at `path` as a fully decoded RGB PIL image; `ImageFileError` naming the file if it
    cannot be decoded (truncated, not an image, a decompression bomb)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"cannot read image {path}: {err}") from err
