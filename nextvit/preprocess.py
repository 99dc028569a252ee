"""The eval preprocessing of a Next-ViT classifier, defined once.

Resize the shorter side to `size / crop_pct` (bicubic), center crop `size`, scale to 0-1 and
normalise with the ImageNet mean and std: what the original evaluation did, what the accuracy
tables were measured with, and what calibration, evaluation and prediction of every exported model
must do too. It is written on PIL and numpy (no torchvision), and matches torchvision's
`Resize(int)` + `CenterCrop` + `ToTensor` + `Normalize` value for value (tested).

Where the settings come from: the records of `nextvit.records`, the `config.json` written beside
`model.safetensors` by classification/main.py and the JSON sidecar of every export. Sizes given
anywhere (flags, records) are read by one parser, `image_size_hw`.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from .pretrained import CROP_PCT, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["CROP_PCT", "INTERPOLATIONS", "MIN_IMAGE_SIDE", "Preprocessing", "ConfigError", "image_size_hw"]

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
MIN_IMAGE_SIDE = 32  # five stride-2 steps: the smallest input the model takes (NextViT.forward refuses less)


class ConfigError(ValueError):
    """A preprocessing setting or a config file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a classifier's input: a (3, height, width) float32 array."""

    input_size: tuple[int, int]  # (height, width) of the crop
    crop_pct: float = CROP_PCT
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        try:
            size = image_size_hw(self.input_size)
        except ConfigError as err:
            raise ConfigError(f"input_size {self.input_size!r}: {err}") from None
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ConfigError(f"{name} needs 3 values (R, G, B), got {list(value)}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ConfigError(f"std must be positive, got {list(self.std)}")
        object.__setattr__(self, "input_size", size)

    @property
    def resize_shorter_side(self) -> int:
        """The shorter side after resizing: int(size / crop_pct), as the original evaluation computed it."""
        return int(min(self.input_size) / self.crop_pct)

    # ---- applying it ----------------------------------------------------------------------

    def resize_and_crop(self, image):
        """The resized, center-cropped PIL image (RGB)."""
        from PIL import Image

        image = image.convert("RGB") if image.mode != "RGB" else image
        w, h = image.size
        short = self.resize_shorter_side
        if w <= h:
            new_w, new_h = short, int(short * h / w)
        else:
            new_w, new_h = int(short * w / h), short
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), getattr(Image.Resampling, self.interpolation.upper()))
        crop_h, crop_w = self.input_size
        top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
        return image.crop((left, top, left + crop_w, top + crop_h))

    def array(self, image) -> np.ndarray:
        """(3, height, width) float32 array of a PIL image: resized, cropped, normalised."""
        return self.normalize(self.resize_and_crop(image))

    def normalize(self, image) -> np.ndarray:
        """(3, H, W) float32 array of an RGB PIL image as it is: pixels / 255, then (x - mean) / std."""
        import numpy as np

        pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def tensor(self, image):
        """The same as a torch tensor: the eval transform of an image dataset."""
        import torch

        return torch.from_numpy(self.array(image))

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        """(3, height, width) float32 array for an image file (calibration and evaluation read files)."""
        from .images import open_rgb

        return self.array(open_rgb(path))

    def override(
        self,
        input_size: Sequence[int] | int | None = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> Preprocessing:
        """A copy with the given settings replaced (flags over a recorded preprocessing)."""
        changes: dict[str, Any] = {}
        if input_size is not None:
            changes["input_size"] = input_size  # parsed by __post_init__
        for name, value in (("crop_pct", crop_pct), ("interpolation", interpolation), ("mean", mean), ("std", std)):
            if value is not None:
                changes[name] = tuple(value) if name in ("mean", "std") else value
        return replace(self, **changes) if changes else self


def image_size_hw(value: Any, min_side: int = 1) -> tuple[int, int]:
    """(height, width) from one side (a square) or two: an int, or a list or tuple of one or two ints.

    The one reader of image sizes (flags, config.json, sidecars, library arguments), so that a
    string such as "64" is refused rather than read as the sides 6 and 4. The `ConfigError` states
    the problem only; the caller names the flag or field it came from.
    """

    def whole(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    sides = [value] if whole(value) else value
    if not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2) or not all(whole(v) for v in sides):
        raise ConfigError("takes one size (square) or two (height width), as whole numbers")
    h, w = (int(sides[0]), int(sides[0])) if len(sides) == 1 else (int(sides[0]), int(sides[1]))
    if min(h, w) < min_side:
        raise ConfigError(f"both sides must be at least {min_side} pixels")
    return h, w
