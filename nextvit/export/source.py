"""The model to export: built, loaded from a checkpoint and folded, with the reference it must match."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import detect_layout, read_checkpoint
from ..factory import model_from_state
from ..files import sha256_file
from ..folding import fold_batchnorm
from ..model import VARIANTS, NextViT, build_nextvit
from ..preprocess import CROP_PCT, ConfigError, Preprocessing, checked_class_names, training_config
from .errors import EXIT_USAGE, ExportError

__all__ = [
    "CROP_PCT",
    "FEATURE_NAMES",
    "BackboneFeatures",
    "ExportSource",
    "load_source",
    "source_from_model",
    "image_hw",
    "default_stem",
]

FEATURE_NAMES = ("stage0", "stage1", "stage2", "stage3")


class BackboneFeatures(nn.Module):
    """The backbone for detection and segmentation: the raw output of each of the four stages
    (strides 4, 8, 16, 32), as a tuple so that exporters see four named outputs."""

    def __init__(self, model: NextViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, intermediates_only=True))


@dataclass
class ExportSource:
    """A model ready to export: the reference it must match, the module to export, its I/O."""

    name: str
    reference: nn.Module  # eval-mode model as loaded (unfolded unless the checkpoint was folded)
    deploy: nn.Module  # what the exporter sees: folded (unless --no-fold), features wrapper
    input_shape: tuple[int, int, int, int]
    input_name: str
    output_names: list[str]
    features: bool
    folded: bool
    num_classes: int
    kv_pool: str
    checkpoint: dict | None  # path, sha256, layout, tensors loaded; None for random weights
    notes: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None  # how an image becomes the input (classifiers)
    class_names: list[str] | None = None  # one per output of the classifier, when known

    @property
    def image_size(self) -> tuple[int, int]:
        return self.input_shape[2], self.input_shape[3]

    def example_input(self, batch: int | None = None, seed: int = 0) -> torch.Tensor:
        """Normalised uniform random pixels: the value range the model sees in use."""
        b = self.input_shape[0] if batch is None else batch
        gen = torch.Generator().manual_seed(seed)
        pixels = torch.rand(b, *self.input_shape[1:], generator=gen)
        prep = self.preprocessing or Preprocessing(self.image_size)
        mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        std = torch.tensor(prep.std).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @torch.no_grad()
    def reference_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.features:
            return list(self.reference.forward_intermediates(x, intermediates_only=True))
        return [self.reference(x)]

    def outputs_info(self) -> list[dict]:
        """Name, shape (at the export batch size) and stride of each output."""
        h, w = self.image_size
        if self.features:
            info = self.reference.feature_info
            return [
                dict(
                    name=n,
                    shape=[
                        self.input_shape[0],
                        f["num_chs"],
                        math.ceil(h / f["reduction"]),
                        math.ceil(w / f["reduction"]),
                    ],
                    stride=f["reduction"],
                )
                for n, f in zip(self.output_names, info)
            ]
        width = self.num_classes if self.num_classes > 0 else self.reference.num_features
        return [dict(name=self.output_names[0], shape=[self.input_shape[0], width])]


def _head_classes(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("head.fc.weight", "proj_head.0.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def load_source(
    model: str | None,
    checkpoint: str | os.PathLike | None,
    *,
    batch_size: int = 1,
    image_size: Sequence[int] | int | None = None,
    num_classes: int | None = None,
    features: bool = False,
    fold: bool = True,
    input_name: str = "input",
    kv_pool: str | None = None,
    preprocessing: dict | None = None,
    class_names: Sequence[str] | None = None,
) -> ExportSource:
    """Build `model`, load `checkpoint` (None: random weights, for latency only) and prepare the export.

    The checkpoint is read once and loaded through `nextvit.factory.model_from_state`, the loading
    path of `create_model` (same `kv_pool` rule). The `config.json` that classification/main.py
    writes beside a checkpoint supplies what the flags leave unset: the variant (`model=None`),
    the input size, the eval preprocessing and the class names; `preprocessing` (keys of
    `Preprocessing.override`) and `class_names` override it. The number of classes is read from
    the checkpoint's head unless `num_classes` is given; a different `num_classes` is refused rather
    than exporting a randomly initialised classifier. For `features` the head is not loaded.
    """
    try:
        config = training_config(checkpoint)
    except ConfigError as err:
        raise ExportError(str(err), EXIT_USAGE, param="checkpoint", value=str(checkpoint)) from None
    state, meta, info = None, {}, None
    if checkpoint is not None:
        state, meta = read_checkpoint(checkpoint)
        detect_layout(state, meta)  # a clear error for a file that is not Next-ViT at all
        info = dict(path=str(checkpoint), sha256=sha256_file(checkpoint))
    if model is None:
        model = meta.get("variant") or config.get("arch") or "nextvit_small"
    if model not in VARIANTS:
        raise ExportError(
            f"not a Next-ViT variant; choose one of {sorted(VARIANTS)}", EXIT_USAGE, param="model", value=model
        )
    if image_size is None:
        image_size = config.get("input_size") or 224
    hw = image_hw(image_size)
    notes: list[str] = []
    classes = _classes_to_export(state, checkpoint, num_classes, features)

    if checkpoint is None:
        torch.manual_seed(0)  # reproducible random weights
        net = build_nextvit(model, num_classes=classes, kv_pool=kv_pool or "1d")
    else:
        try:
            net, report = model_from_state(
                model, state, meta, where=str(checkpoint), num_classes=classes,
                drop_head=True if features else None, **({"kv_pool": kv_pool} if kv_pool else {}),
            )  # fmt: skip
        except ValueError as err:
            if "kv_pool" not in str(err):
                raise
            raise ExportError(str(err), EXIT_USAGE, param="kv_pool", value=kv_pool) from None
        info.update(layout=report.layout, tensors_loaded=report.loaded)
        if report.dropped_head:
            info["head_not_loaded"] = report.dropped_head
        if net.is_folded and not fold:
            notes.append("the checkpoint is already folded: fold=False has no effect")
    try:
        prep = (Preprocessing.from_config(config) or Preprocessing(hw)).override(input_size=hw, **(preprocessing or {}))
        where = "--class-names" if class_names is not None else f"{Path(str(checkpoint)).with_name('config.json')}"
        names = None if features or classes == 0 else checked_class_names(
            class_names if class_names is not None else config.get("class_names"), classes, where
        )  # fmt: skip
    except ConfigError as err:
        raise ExportError(str(err), EXIT_USAGE, param="checkpoint", value=str(checkpoint)) from None
    return source_from_model(
        net,
        batch_size=batch_size,
        image_size=hw,
        features=features,
        fold=fold,
        input_name=input_name,
        checkpoint=info,
        notes=notes,
        preprocessing=prep,
        class_names=names,
    )


def _classes_to_export(state: dict | None, checkpoint, num_classes: int | None, features: bool) -> int:
    """The classifier's width: the checkpoint's, checked against an explicit `num_classes`."""
    ckpt_classes = _head_classes(state) if state is not None else None
    if features:
        return 0
    if num_classes is not None:
        if ckpt_classes is not None and ckpt_classes != num_classes:
            raise ExportError(
                f"does not match the checkpoint's classifier ({ckpt_classes} classes): exporting would give a"
                " randomly initialised head; leave it unset (the checkpoint's), or export the features",
                EXIT_USAGE,
                param="num_classes",
                value=num_classes,
            )
        if state is not None and ckpt_classes is None and num_classes > 0:
            raise ExportError(
                f"{checkpoint} has no classifier head: export pooled features (0 classes) or the stage features",
                EXIT_USAGE,
                param="num_classes",
                value=num_classes,
            )
        return num_classes
    if state is not None:
        if ckpt_classes is None:
            raise ExportError(
                "the checkpoint has no classifier head: export pooled features (0 classes) or the stage features",
                EXIT_USAGE,
                param="checkpoint",
                value=str(checkpoint),
            )
        return ckpt_classes
    return 1000


def source_from_model(
    model: NextViT,
    *,
    batch_size: int = 1,
    image_size: Sequence[int] | int = 224,
    features: bool = False,
    fold: bool = True,
    input_name: str = "input",
    checkpoint: dict | None = None,
    notes: Sequence[str] = (),
    preprocessing: Preprocessing | None = None,
    class_names: Sequence[str] | None = None,
) -> ExportSource:
    """Prepare an in-memory model for export. It is put in eval mode and otherwise left as it is:
    folding works on a copy. `checkpoint` describes its weights for the sidecar (None: random)."""
    model.eval()
    already_folded = bool(getattr(model, "is_folded", False))
    deploy: nn.Module = model if already_folded or not fold else fold_batchnorm(model)
    if features:
        deploy = BackboneFeatures(deploy).eval()
        output_names = list(FEATURE_NAMES)
    else:
        output_names = ["logits" if model.num_classes > 0 else "pooled_features"]
    return ExportSource(
        name=model.variant or "nextvit",
        reference=model,
        deploy=deploy,
        input_shape=(batch_size, 3, *image_hw(image_size)),
        input_name=input_name,
        output_names=output_names,
        features=features,
        folded=already_folded or fold,
        num_classes=0 if features else model.num_classes,
        kv_pool=str(getattr(model, "kv_pool", "1d")),
        checkpoint=checkpoint,
        notes=list(notes),
        preprocessing=None if features else (preprocessing or Preprocessing(image_hw(image_size))),
        class_names=None if features or class_names is None else list(class_names),
    )


def image_hw(image_size: Sequence[int] | int) -> tuple[int, int]:
    """(height, width) from an image size: one int for a square, or two."""
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    if len(sizes) not in (1, 2):
        raise ExportError("takes one size (square) or two (height width)", EXIT_USAGE, param="image_size", value=sizes)
    h, w = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    if h < 32 or w < 32:
        raise ExportError("both sides must be at least 32 pixels", EXIT_USAGE, param="image_size", value=[h, w])
    return int(h), int(w)


def default_stem(model: str, image_size: Sequence[int], features: bool) -> str:
    """`nextvit_small_224x224`, `nextvit_small_features_800x1344`: the original scripts' naming."""
    h, w = image_hw(image_size)
    return f"{model}{'_features' if features else ''}_{h}x{w}"
