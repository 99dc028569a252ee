"""Image files on disk: which files count as images, how to draw a sample across class folders, and
how to read one as the RGB image the model was trained on, with an error that names it.

One list of suffixes serves training data checks, calibration, evaluation and prediction, so a
file that one of them reads is never silently skipped by another: a file named on the command line
is held to it too (a `.gif` is refused both ways: ImageFolder, which training reads, leaves GIFs
out, and an animated one has no single image to classify).

Reading (`open_rgb`) turns the camera's EXIF orientation into pixels (a phone photo is classified
upright), scales 16-bit images to 8 bits (16-bit PNGs use the full 0-65535 range, so a pixel
v becomes round(v / 257): 65535 maps to 255, where PIL's own conversion clips everything above 255 to
white), and can refuse an image above a pixel count before decoding it (a 10000x10000 PNG takes about
a gigabyte to decode).
"""

from __future__ import annotations

import glob
import os
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFileError",
    "is_image",
    "find_images",
    "labelled_images",
    "collect_images",
    "open_rgb",
    "MAX_IMAGE_PIXELS",
    "ImageReader",
]

MAX_IMAGE_PIXELS = 89_478_485  # PIL's own limit (Image.MAX_IMAGE_PIXELS), above which it warns of a decompression bomb
_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
T = TypeVar("T")

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
    """The image files named by `inputs`: files, folders (their images, recursively, sorted) and glob
    patterns (`photos/*.jpg`, `**` allowed), in the order given, each file once. A path that does not
    exist, a file whose suffix is not an image's (`IMAGE_SUFFIXES`), or a pattern or folder that finds
    no image is an error."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            if not is_image(path):
                raise ImageFileError(f"{path}: not an image file this reads ({', '.join(IMAGE_SUFFIXES)})")
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


def open_rgb(path: str | os.PathLike, max_pixels: int | None = None):
    """The image at `path` as a fully decoded RGB PIL image, upright (EXIF orientation applied) and
    16-bit images scaled to 8 bits; `ImageFileError` naming the file if it cannot be decoded
    (truncated, not an image, a decompression bomb) or has more than `max_pixels` pixels."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            w, h = image.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageFileError(
                    f"image {path} is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                    "(pass --max-image-pixels to lift it)"
                )
            image = ImageOps.exif_transpose(image)
            return _as_rgb(image, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageFileError):
            raise
        raise ImageFileError(f"cannot read image {path}: {err}") from err


def _as_rgb(image, path):
    """RGB, with 16-bit grey scaled to 8 bits rather than clipped; refused where no scale is known."""
    from PIL import Image

    if image.mode in _16_BIT_MODES or image.mode == "I":
        import numpy as np

        pixels = np.asarray(image, dtype=np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageFileError(f"cannot read image {path}: 32-bit integer pixels outside 0-65535 have no known scale")
        image = Image.fromarray(np.round(pixels / 257).astype(np.uint8), mode="L")
    elif image.mode == "F":
        raise ImageFileError(f"cannot read image {path}: floating-point pixels have no known scale; save it as 8 bits")
    return image.convert("RGB") if image.mode != "RGB" else image


class ImageReader(Generic[T]):
    """Image files into model inputs for a batch loop (prediction, calibration, evaluation), the same way
    everywhere: `reader(path)` is `transform(open_rgb(path))`; an unreadable file stops the run with its
    name and the flag to pass, or with `skip_corrupt` gives None and is counted in `skipped`.
    Safe to call from several threads."""

    def __init__(
        self, transform: Callable[[object], T], skip_corrupt: bool = False, max_pixels: int | None = MAX_IMAGE_PIXELS
    ) -> None:
        from PIL import Image

        self.transform, self.skip_corrupt, self.max_pixels = transform, skip_corrupt, max_pixels
        if Image.MAX_IMAGE_PIXELS is not None and (max_pixels is None or max_pixels > Image.MAX_IMAGE_PIXELS):
            Image.MAX_IMAGE_PIXELS = max_pixels  # a limit lifted on purpose replaces PIL's (it warns, then refuses)
        self.skipped: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, path: str | os.PathLike) -> T | None:
        try:
            image = open_rgb(path, self.max_pixels)
        except ImageFileError as err:
            if not self.skip_corrupt:
                hint = "" if "--max-image-pixels" in str(err) else " (pass --skip-corrupt to skip unreadable images)"
                raise ImageFileError(f"{err}{hint}") from None
            with self._lock:
                self.skipped.append(str(path))
            return None
        return self.transform(image)
