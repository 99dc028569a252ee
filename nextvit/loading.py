"""One way from a checkpoint file to a model and the record that describes it: export, prediction,
int8 quantization and benchmarks all load through `load_model`.

What the model is (variant, input size, classes, pooling, eval preprocessing, class names) is
decided from, in order:

1. the caller's arguments (the command line's flags),
2. the run record `config.json` beside the checkpoint (classification/main.py writes it),
3. the checkpoint's own metadata: this package's (`variant`, `kv_pool`) and the `args` that a
   training checkpoint of classification/main.py keeps (`model`, `input_size`, `crop_pct`),
4. the weights: their stage depths tell the variant, their classifier the class count.

Each decision says where it came from (`LoadedModel.sources`). Two records that disagree, or an
argument that contradicts the weights, stop the load with one line that names the flag to pass
(`LoadError.describe` puts the caller's flag name in); nothing is guessed silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .checkpoint import detect_layout, read_checkpoint, variant_of_state
from .factory import model_from_state
from .files import sha256_file
from .model import VARIANTS, NextViT, build_nextvit
from .preprocess import MIN_IMAGE_SIDE, ConfigError, Preprocessing, image_size_hw
from .records import RecordError, RunRecord, checked_class_names, run_record_beside, run_record_path

__all__ = ["LoadError", "LoadedModel", "load_model", "DEFAULT_VARIANT", "DEFAULT_INPUT_SIZE"]

DEFAULT_VARIANT = "nextvit_small"  # of random weights, where nothing else says
DEFAULT_INPUT_SIZE = 224  # the released checkpoints' (the original export scripts' default)


class LoadError(ValueError):
    """A checkpoint, its records and the arguments given cannot make a model; the message says why.

    `param` is the argument concerned ("model", "image_size", "num_classes", "kv_pool",
    "class_names", "checkpoint"); `{flag}` in the message is where a command line's name for it
    goes (`describe`), so the library speaks of arguments and each script of its own flags.
    """

    def __init__(self, message: str, param: str) -> None:
        self.template, self.param = message, param
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        return self.template.replace("{flag}", (names or {}).get(self.param, self.param))


@dataclass
class LoadedModel:
    """A model loaded from a checkpoint (or built with random weights) and what describes it."""

    model: NextViT  # eval mode, as loaded: unfolded unless the checkpoint was folded
    record: RunRecord  # the decided variant, classes, input size, preprocessing, pooling and names
    checkpoint: dict | None  # path, sha256, layout, tensors_loaded; None for random weights
    sources: dict[str, str] = field(default_factory=dict)  # what was decided -> where from
    notes: list[str] = field(default_factory=list)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.record.preprocessing()

    def describe(self) -> str:
        """One line: what was loaded and where each setting came from."""
        h, w = self.record.input_size
        return (
            f"{self.record.arch} ({self.sources['variant']}), input {h}x{w} ({self.sources['input_size']}), "
            f"{self.record.num_classes} classes ({self.sources['num_classes']}), kv_pool {self.record.kv_pool} "
            f"({self.sources['kv_pool']})"
        )


def load_model(
    checkpoint: str | os.PathLike | None,
    *,
    model: str | None = None,
    image_size: Sequence[int] | int | None = None,
    num_classes: int | None = None,
    features: bool = False,
    kv_pool: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    default_size: int | None = DEFAULT_INPUT_SIZE,
) -> LoadedModel:
    """Load `checkpoint` (None: random weights, seeded, for latency only) with what describes it.

    Args:
        model, image_size, kv_pool: the caller's choices, over everything recorded (see the module doc).
        num_classes: the class count expected; a checkpoint whose classifier has another is refused
            rather than given a random head. Default: the weights'.
        features: the backbone alone (the classifier is not loaded; 0 classes).
        preprocessing: eval settings over the recorded ones (`crop_pct`, `interpolation`, `mean`, `std`).
        class_names: names over the recorded ones, one per class.
        default_size: the input size where nothing records one; None refuses instead (prediction
            must not guess how the model's images were sized).
    """
    where = str(checkpoint)
    state, meta, info = _read(checkpoint)
    try:
        run = run_record_beside(checkpoint) or RunRecord()
    except RecordError as err:
        raise LoadError(str(err), "checkpoint") from None
    trained = _training_args(meta)
    sources: dict[str, str] = {}
    arch = _decide_variant(model, run, meta, trained, state, where, sources)
    size = _decide_input_size(image_size, run, trained, default_size, where, sources)
    pool = _decide_kv_pool(kv_pool, run, meta, trained, where, sources)
    classes = _decide_classes(state, num_classes, features, run, where, sources)
    net = _build(arch, state, meta, info, classes, features, pool, where)
    record = _described(run, trained, arch, classes, size, pool, preprocessing, class_names, features, where)
    notes = []
    if image_size is not None and run.input_size is not None and tuple(size) != run.input_size:
        notes.append(f"input {size[0]}x{size[1]} from the arguments; the run was trained at {run.input_size[0]}x"
                     f"{run.input_size[1]} ({run_record_path(where).name})")  # fmt: skip
    return LoadedModel(net, record, info, sources, notes)


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------


def _read(checkpoint: str | os.PathLike | None) -> tuple[dict | None, dict[str, str], dict | None]:
    """The weights, their metadata and the sidecar's description of the file (None: random weights)."""
    if checkpoint is None:
        return None, {}, None
    state, meta = read_checkpoint(checkpoint)
    detect_layout(state, meta)  # a clear error for a file that is not Next-ViT at all
    return state, meta, dict(path=str(checkpoint), sha256=sha256_file(checkpoint))


def _training_args(meta: Mapping[str, str]) -> dict[str, Any]:
    """The model, input size, crop and pooling a training checkpoint's `args` recorded ({} if none)."""
    try:
        args = json.loads(meta.get("training_args", "{}"))
    except json.JSONDecodeError:
        return {}
    return args if isinstance(args, dict) else {}


def _agreed(recorded: list[tuple[str, Any]], param: str, what: str, where: str) -> tuple[str, Any] | None:
    """The value the records agree on, with where it came from; a `LoadError` when two differ."""
    recorded = [(source, value) for source, value in recorded if value is not None]
    for source, value in recorded[1:]:
        if value != recorded[0][1]:
            first, value0 = recorded[0]
            raise LoadError(
                f"{where}: {first} says {what} {_shown(value0)} but {source} says {_shown(value)}; "
                "pass {flag} to choose",
                param,
            )
    return recorded[0] if recorded else None


def _shown(value: Any) -> str:
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value)


def _decide_variant(model, run: RunRecord, meta, trained, state, where: str, sources: dict) -> str:
    """Flag, config.json, the checkpoint's metadata, its training args, its weights, in that order."""
    weights = variant_of_state(state) if state is not None else None
    if model is not None:
        if model not in VARIANTS:
            raise LoadError(f"{{flag}} {model}: not a Next-ViT variant; choose one of {sorted(VARIANTS)}", "model")
        if weights is not None and model != weights:
            raise LoadError(
                f"{{flag}} {model}: the weights of {where} are a {weights} (by their stage depths)", "model"
            )
        sources["variant"] = "argument"
        return model
    found = _agreed(
        [
            (run_record_path(where).name, run.arch),
            ("its metadata", meta.get("variant") or None),
            ("its training args", trained.get("model")),
        ],
        "model",
        "the variant",
        where,
    )
    if found is not None:
        source, name = found
        if name not in VARIANTS:
            raise LoadError(f"{where}: {source} names {name!r}, not a Next-ViT variant; pass {{flag}}", "model")
        if weights is not None and name != weights:
            raise LoadError(
                f"{where}: {source} says {name} but the weights are a {weights} (by their stage depths); "
                "pass {flag} " + weights + " if the weights are right",
                "model",
            )
        sources["variant"] = source
        return name
    if weights is not None:
        sources["variant"] = "the weights' stage depths"
        return weights
    if state is None:
        sources["variant"] = "default"
        return DEFAULT_VARIANT
    raise LoadError(f"{where}: no record says which variant it is and its stage depths match none; pass {{flag}}",
                    "model")  # fmt: skip


def _decide_input_size(image_size, run: RunRecord, trained, default: int | None, where: str, sources: dict):
    if image_size is not None:
        try:
            hw = image_size_hw(list(image_size) if not isinstance(image_size, int) else image_size, MIN_IMAGE_SIDE)
        except ConfigError as err:
            raise LoadError(f"{{flag}} {_listed(image_size)}: {err}", "image_size") from None
        sources["input_size"] = "argument"
        return hw
    recorded = trained.get("input_size")
    try:
        recorded = image_size_hw(recorded) if recorded is not None else None
    except ConfigError:
        recorded = None  # a training arg we cannot read is not a record to go by
    found = _agreed(
        [(run_record_path(where).name, run.input_size), ("its training args", recorded)],
        "image_size",
        "the input size",
        where,
    )
    if found is not None:
        sources["input_size"] = found[0]
        return found[1]
    if default is None:
        raise LoadError(
            f"{where}: no record says what size its images were (no {run_record_path(where).name} beside it, no "
            "training args in it); pass {flag} (and --crop-pct, --interpolation, --mean, --std where they differ "
            "from ImageNet's defaults)",
            "image_size",
        )
    sources["input_size"] = "default"
    return (default, default)


def _listed(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _decide_kv_pool(kv_pool, run: RunRecord, meta, trained, where: str, sources: dict) -> str:
    recorded = [
        ("its metadata", meta.get("kv_pool") if meta.get("kv_pool") in ("1d", "2d") else None),
        (run_record_path(where).name, run.kv_pool),
        ("its training args", trained.get("kv_pool")),
    ]
    found = _agreed(recorded, "kv_pool", "kv_pool", where)
    if kv_pool is not None:
        if found is not None and found[1] != kv_pool:
            raise LoadError(
                f"{{flag}} {kv_pool}: {where} was trained with kv_pool={found[1]!r} ({found[0]}); "
                "drop the argument to use the checkpoint's",
                "kv_pool",
            )
        sources["kv_pool"] = "argument"
        return kv_pool
    sources["kv_pool"] = found[0] if found else "default"
    return found[1] if found else "1d"


def _head_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    for key in ("head.fc.weight", "proj_head.0.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def _decide_classes(state, num_classes: int | None, features: bool, run: RunRecord, where: str, sources) -> int:
    """The classifier's width: the weights', checked against the argument and config.json."""
    head = _head_classes(state) if state is not None else None
    if features:
        sources["num_classes"] = "features (no classifier)"
        return 0
    if head is not None and run.num_classes is not None and run.num_classes != head:
        raise LoadError(
            f"{where}: {run_record_path(where).name} says {run.num_classes} classes but its classifier has {head}: "
            "the config.json is not this checkpoint's",
            "checkpoint",
        )
    if num_classes is not None:
        if head is not None and head != num_classes:
            raise LoadError(
                f"{{flag}} {num_classes}: does not match the checkpoint's classifier ({head} classes): exporting "
                "would give a randomly initialised head; leave it unset (the checkpoint's), or export the features",
                "num_classes",
            )
        if state is not None and head is None and num_classes > 0:
            raise LoadError(
                f"{{flag}} {num_classes}: {where} has no classifier head: use pooled features (0 classes) or the "
                "stage features",
                "num_classes",
            )
        sources["num_classes"] = "argument"
        return num_classes
    if state is None:
        sources["num_classes"] = "default"
        return 1000
    if head is None:
        raise LoadError(
            f"{where} has no classifier head: use pooled features ({{flag}} 0) or the stage features", "num_classes"
        )
    sources["num_classes"] = "the weights' classifier"
    return head


def _build(arch, state, meta, info, classes: int, features: bool, pool: str, where: str) -> NextViT:
    """The model with the weights loaded (`info` gains what was loaded), or seeded random weights."""
    if state is None:
        torch.manual_seed(0)  # reproducible random weights
        return build_nextvit(arch, num_classes=classes, kv_pool=pool).eval()
    net, report = model_from_state(
        arch, state, meta, where=where, num_classes=classes, drop_head=True if features else None, kv_pool=pool
    )
    info.update(layout=report.layout, tensors_loaded=report.loaded)
    if report.dropped_head:
        info["head_not_loaded"] = report.dropped_head
    return net.eval()


def _described(run: RunRecord, trained, arch, classes, size, pool, overrides, class_names, features, where):
    """The decided record: the run's with the decisions and the arguments applied."""
    record = run
    crop = trained.get("crop_pct")
    if run == RunRecord() and isinstance(crop, float) and 0 < crop <= 1:
        record = replace(record, crop_pct=crop)  # a lone training checkpoint's eval crop
    try:
        prep = record.preprocessing(size).override(**dict(overrides or {}))
        names = None
        if not features and classes > 0:
            given = class_names is not None
            names = checked_class_names(
                list(class_names) if given else (list(run.class_names) if run.class_names else None),
                classes,
                "{flag}" if given else str(run_record_path(where)),
            )
    except ConfigError as err:
        raise LoadError(str(err), "class_names" if "class names" in str(err) else "checkpoint") from None
    return RunRecord(arch, classes, prep.input_size, prep.crop_pct, prep.interpolation, prep.mean, prep.std, pool,
                     tuple(names) if names else None)  # fmt: skip
