"""What describes a trained or an exported model on disk, written and read in one place.

Two records:

* a training run's `config.json`, beside `model.safetensors` (classification/main.py): the variant,
  classes, eval preprocessing, pooling and class names (`RunRecord`);
* an export's JSON sidecar `<file>.json`, beside every exported model: the artifact, its input and
  outputs, the same preprocessing and class names, the check against PyTorch and provenance
  (`write_sidecar`, read back as a `SidecarRecord`).

Both are written atomically (`nextvit.files`) with a `record_version`. A file without one was
written before versions existed and reads as version 1 (the same fields); a file of a newer version
than this code knows is refused with a message naming it, and so is a malformed field: class names
that are not a list of strings, a size that is not one or two whole numbers, a mean or std that is
not three numbers. Readers get typed values, never the raw JSON, so a string is never taken letter
by letter.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes
from .preprocess import CROP_PCT, INTERPOLATIONS, ConfigError, Preprocessing, image_size_hw
from .pretrained import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "RECORD_VERSION",
    "RUN_RECORD_NAME",
    "RecordError",
    "RunRecord",
    "SidecarRecord",
    "run_record_path",
    "read_run_record",
    "run_record_beside",
    "write_run_record",
    "sidecar_path",
    "read_sidecar",
    "write_sidecar",
    "preprocessing_block",
    "checked_class_names",
    "read_class_names_file",
]

RECORD_VERSION = 1  # of both records; bump when a field changes meaning, and read the older versions
RUN_RECORD_NAME = "config.json"
TASKS = ("classification", "features")


class RecordError(ConfigError):
    """A config.json or sidecar that cannot be used; the message names the file and the field."""


# --------------------------------------------------------------------------------------------
# Fields, checked on read
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: expected a JSON object, found {type(value).__name__}")
    _check_version(value, path)
    return value


def _check_version(data: Mapping[str, Any], where: object) -> int:
    version = data.get("record_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{where}: record_version must be a whole number from 1, got {version!r}")
    if version > RECORD_VERSION:
        raise RecordError(
            f"{where} is a version {version} record, newer than this nextvit reads (up to {RECORD_VERSION}): "
            "upgrade nextvit"
        )
    return version


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: object, what: str) -> Any:
    """`data[key]` (None when absent or null) when it is of `kind`; a `RecordError` otherwise."""
    value = data.get(key)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise RecordError(f"{where}: {key} must be {what}, got {value!r}")
    return value


def _size(data: Mapping[str, Any], key: str, where: object) -> tuple[int, int] | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return image_size_hw(value)
    except ConfigError as err:
        raise RecordError(f"{where}: {key} {value!r} {err}") from None


def _three_numbers(data: Mapping[str, Any], key: str, where: object) -> tuple[float, float, float] | None:
    value = data.get(key)
    if value is None:
        return None
    numeric = isinstance(value, list) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    if not numeric or len(value) != 3:
        raise RecordError(f"{where}: {key} must be 3 numbers (R, G, B), got {value!r}")
    return tuple(float(v) for v in value)


def _class_names(data: Mapping[str, Any], where: object) -> tuple[str, ...] | None:
    value = data.get("class_names")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise RecordError(f"{where}: class_names must be a list of strings, got {type(value).__name__}")
    return tuple(value)


def _preprocessing(
    data: Mapping[str, Any], size: tuple[int, int] | None, where: object
) -> tuple[Preprocessing | None, dict[str, Any]]:
    """The recorded eval settings (crop, filter, mean, std), checked; with a size, as a `Preprocessing`."""
    settings = dict(
        crop_pct=_field(data, "crop_pct", numbers.Real, where, "a number in (0, 1]"),
        interpolation=_field(data, "interpolation", str, where, f"one of {INTERPOLATIONS}"),
        mean=_three_numbers(data, "mean", where),
        std=_three_numbers(data, "std", where),
    )
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        prep = Preprocessing(size or (224, 224), **settings)
    except ConfigError as err:
        raise RecordError(f"{where}: {err}") from None
    return (prep if size is not None else None), settings


# --------------------------------------------------------------------------------------------
# A training run's config.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """A training run's `config.json`: what a checkpoint of it is and how its images were preprocessed.

    Every field may be unknown (None) in a file written by hand; the loader (`nextvit.loading`)
    then looks for it elsewhere (the checkpoint's metadata, its weights' shapes).
    """

    arch: str | None = None
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    crop_pct: float = CROP_PCT
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    kv_pool: str | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_size is not None:
            object.__setattr__(self, "input_size", image_size_hw(self.input_size))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        Preprocessing(self.input_size or (224, 224), self.crop_pct, self.interpolation, self.mean, self.std)

    def preprocessing(self, input_size: Sequence[int] | int | None = None) -> Preprocessing | None:
        """The eval preprocessing at `input_size` (default: the recorded one); None when neither is known."""
        size = input_size if input_size is not None else self.input_size
        if size is None:
            return None
        return Preprocessing(size, self.crop_pct, self.interpolation, self.mean, self.std)

    def to_json(self) -> dict[str, Any]:
        h, w = self.input_size or (None, None)
        return dict(
            record_version=RECORD_VERSION,
            arch=self.arch,
            num_classes=self.num_classes,
            input_size=h if h == w else [h, w],
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
            mean=list(self.mean),
            std=list(self.std),
            kv_pool=self.kv_pool,
            class_names=None if self.class_names is None else list(self.class_names),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: object = RUN_RECORD_NAME) -> RunRecord:
        """From a parsed config.json, every field checked; `RecordError` naming `where` and the field."""
        _check_version(data, where)
        size = _size(data, "input_size", where)
        _, settings = _preprocessing(data, size, where)
        kv_pool = _field(data, "kv_pool", str, where, "'1d' or '2d'")
        if kv_pool not in (None, "1d", "2d"):
            raise RecordError(f"{where}: kv_pool must be '1d' or '2d', got {kv_pool!r}")
        num_classes = _field(data, "num_classes", int, where, "a whole number")
        if num_classes is not None and num_classes < 0:
            raise RecordError(f"{where}: num_classes must be 0 or more, got {num_classes}")
        return cls(
            arch=_field(data, "arch", str, where, "a model name"),
            num_classes=num_classes,
            input_size=size,
            kv_pool=kv_pool,
            class_names=_class_names(data, where),
            **settings,
        )


def run_record_path(checkpoint: str | os.PathLike) -> Path:
    """Where the run record of a checkpoint is: `config.json` in its folder."""
    return Path(checkpoint).with_name(RUN_RECORD_NAME)


def read_run_record(path: str | os.PathLike) -> RunRecord:
    path = Path(path)
    return RunRecord.from_json(_read_json(path), path)


def run_record_beside(checkpoint: str | os.PathLike | None) -> RunRecord | None:
    """The `config.json` beside a checkpoint, or None when there is none (a malformed one is an error)."""
    if checkpoint is None:
        return None
    path = run_record_path(checkpoint)
    return read_run_record(path) if path.is_file() else None


def write_run_record(path: str | os.PathLike, record: RunRecord) -> Path:
    """Write `record` as JSON to `path` (a `config.json`), atomically."""
    return atomic_write_bytes(path, (json.dumps(record.to_json(), indent=2) + "\n").encode())


# --------------------------------------------------------------------------------------------
# An export's sidecar
# --------------------------------------------------------------------------------------------


def preprocessing_block(prep: Preprocessing, crop: bool = True) -> dict[str, Any]:
    """The sidecar's `preprocessing` block: how an image becomes the exported model's input.

    `crop=False` for the stage features of detection and segmentation, whose pipelines resize and
    pad to the input size themselves."""
    block: dict[str, Any] = dict(
        color="RGB",
        layout="NCHW",
        scale="pixels / 255, then (x - mean) / std per channel",
        mean=list(prep.mean),
        std=list(prep.std),
    )
    h, w = prep.input_size
    if not crop:
        return dict(block, resize=f"the dense-task pipeline's own (resize, then pad) to {h}x{w}; no crop")
    return dict(
        block,
        resize_shorter_side=prep.resize_shorter_side,
        interpolation=prep.interpolation,
        center_crop=[h, w],
        crop_pct=prep.crop_pct,
    )


@dataclass(frozen=True)
class SidecarRecord:
    """An export's sidecar as predict and the other readers need it, every field checked."""

    path: Path
    task: str = "classification"
    model: str | None = None
    num_classes: int | None = None
    input_name: str | None = None
    input_shape: tuple[int | None, ...] | None = None
    output_names: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None  # None: the record has no center crop (features, or no block)
    class_names: tuple[str, ...] | None = None
    precision: str | None = None  # OpenVINO: what the IR is compiled in
    input_type: str | None = None  # CoreML: "image" or "tensor"
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the whole record, as written

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: object) -> SidecarRecord:
        _check_version(data, where)
        task = _field(data, "task", str, where, f"one of {TASKS}") or "classification"
        if task not in TASKS:
            raise RecordError(f"{where}: task must be one of {TASKS}, got {task!r}")
        num_classes = _field(data, "num_classes", int, where, "a whole number")
        inputs = _field(data, "input", dict, where, "an object (name, shape, dtype)") or {}
        shape = _field(inputs, "shape", list, where, "a list of dimensions")
        if shape is not None and not all(d is None or isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise RecordError(f"{where}: input.shape must hold whole numbers, got {shape!r}")
        outputs = _field(data, "outputs", list, where, "a list of {name, shape}") or []
        if not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise RecordError(f"{where}: outputs must be a list of objects with a name, got {outputs!r}")
        block = _field(data, "preprocessing", dict, where, "an object") or {}
        prep, _ = _preprocessing(block, _size(block, "center_crop", where), where)
        return cls(
            path=Path(str(where)),
            task=task,
            model=_field(data, "model", str, where, "a model name"),
            num_classes=num_classes,
            input_name=_field(inputs, "name", str, where, "a name"),
            input_shape=None if shape is None else tuple(shape),
            output_names=tuple(o["name"] for o in outputs),
            preprocessing=prep,
            class_names=_class_names(data, where),
            precision=_field(data, "precision", str, where, "a precision name"),
            input_type=_field(data, "input_type", str, where, "'image' or 'tensor'"),
            data=dict(data),
        )


def sidecar_path(output: str | os.PathLike) -> Path:
    """`<output>.json`: where an export's sidecar is."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def read_sidecar(artifact: str | os.PathLike) -> SidecarRecord | None:
    """The sidecar of an exported model, or None when there is none (a malformed one is an error)."""
    path = sidecar_path(artifact)
    return SidecarRecord.from_json(_read_json(path), path) if path.is_file() else None


def write_sidecar(output: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write `record` as `<output>.json`, atomically, with the record version; a record that would
    not read back (`SidecarRecord`) is refused before anything is written."""
    path = sidecar_path(output)
    data = {"record_version": RECORD_VERSION, **{k: v for k, v in record.items() if k != "record_version"}}
    text = json.dumps(data, indent=2, default=str) + "\n"
    SidecarRecord.from_json(json.loads(text), path)
    return atomic_write_bytes(path, text.encode())


# --------------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------------


def checked_class_names(names: Sequence[str] | None, num_classes: int, where: str) -> list[str] | None:
    """`names` when there is one string per class; a `ConfigError` naming `where` otherwise."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: class names must be a list of strings, got {type(names).__name__}")
    if len(names) != num_classes:
        raise ConfigError(f"{where} lists {len(names)} class names but the model has {num_classes} outputs")
    return list(names)


def read_class_names_file(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored); `ConfigError` naming the file."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err})") from None
    if not names:
        raise ConfigError(f"{path}: holds no class names (one per line)")
    return names
