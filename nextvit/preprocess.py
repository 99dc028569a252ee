"""The eval preprocessing of a Next-ViT classifier, defined once.

Resize the shorter side to `size / crop_pct` (bicubic), center crop `size`, scale to 0-1 and
normalise with the ImageNet mean and std: what the original evaluation did, what the accuracy
tables were measured with, and what calibration, evaluation and prediction of every exported model
must do too. It is written on PIL and numpy (no torchvision), and matches torchvision's
`Resize(int)` + `CenterCrop` + `ToTensor` + `Normalize` value for value (tested).

Where the settings come from: `config.json`, written beside `model.safetensors` by
classification/main.py, and the JSON sidecar of every export record them (`training_config`,
`Preprocessing.from_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from .pretrained import CROP_PCT, IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CROP_PCT",
    "INTERPOLATIONS",
    "Preprocessing",
    "ConfigError",
    "training_config",
    "checked_class_names",
    "read_json_object",
]

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


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
        size = self.input_size
        if isinstance(size, int):
            size = (size, size)
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"input_size must be one or two positive sides, got {self.input_size}")
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

    # ---- recording it ---------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The sidecar's `preprocessing` block (read back by `from_record`)."""
        return dict(
            color="RGB",
            layout="NCHW",
            scale="pixels / 255, then (x - mean) / std per channel",
            mean=list(self.mean),
            std=list(self.std),
            resize_shorter_side=self.resize_shorter_side,
            interpolation=self.interpolation,
            center_crop=list(self.input_size),
            crop_pct=self.crop_pct,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str = "sidecar") -> Preprocessing:
        """From a sidecar's `preprocessing` block (`to_record`)."""
        try:
            return cls(
                input_size=tuple(record["center_crop"]),
                crop_pct=float(record.get("crop_pct", CROP_PCT)),
                interpolation=str(record.get("interpolation", "bicubic")),
                mean=tuple(record.get("mean", IMAGENET_MEAN)),
                std=tuple(record.get("std", IMAGENET_STD)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: its preprocessing block is incomplete or malformed ({err!r})") from None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str = "config.json") -> Preprocessing | None:
        """From classification/main.py's `config.json`; None when it names no input size."""
        size = config.get("input_size")
        if size is None:
            return None
        try:
            return cls(
                input_size=tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size)),
                crop_pct=float(config.get("crop_pct", CROP_PCT)),
                interpolation=str(config.get("interpolation", "bicubic")),
                mean=tuple(config.get("mean", IMAGENET_MEAN)),
                std=tuple(config.get("std", IMAGENET_STD)),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None

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
            sizes = [input_size] if isinstance(input_size, int) else list(input_size)
            changes["input_size"] = (sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes)
        for name, value in (("crop_pct", crop_pct), ("interpolation", interpolation), ("mean", mean), ("std", std)):
            if value is not None:
                changes[name] = tuple(value) if name in ("mean", "std") else value
        return replace(self, **changes) if changes else self


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file holding an object (a config.json, an export's sidecar); `ConfigError` naming it otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def training_config(checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """The `config.json` beside a checkpoint written by classification/main.py (arch, input size,
    crop, mean/std, class names); {} when there is none. A config.json that cannot be read as a
    JSON object is an error naming it, not silently ignored."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint).with_name("config.json")
    if not path.is_file():
        return {}
    config = read_json_object(path)
    names = config.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{path}: class_names must be a list of strings")
    return config


def checked_class_names(names: Sequence[str] | None, num_classes: int, where: str) -> list[str] | None:
    """`names` when there is one per class; a `ConfigError` naming `where` otherwise."""
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ConfigError(f"{where} lists {len(names)} class names but the model has {num_classes} outputs")
    return names
