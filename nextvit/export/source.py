"""The model to export: built, loaded from a checkpoint and folded, with the reference it must match."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..folding import fold_batchnorm
from ..loading import load_model
from ..model import NextViT
from ..preprocess import MIN_IMAGE_SIDE, ConfigError, Preprocessing, image_size_hw
from .errors import EXIT_USAGE, ExportError

__all__ = [
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
    decided_from: dict[str, str] = field(default_factory=dict)  # variant, input size ... -> where from

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
    """Load `checkpoint` (None: random weights, for latency only) through `nextvit.loading.load_model`,
    which decides the variant, input size, classes, preprocessing and class names from the arguments,
    the records and the weights (and refuses what disagrees), and prepare its export."""
    loaded = load_model(
        checkpoint, model=model, image_size=image_size, num_classes=num_classes, features=features,
        kv_pool=kv_pool, preprocessing=preprocessing, class_names=class_names,
    )  # fmt: skip
    notes = list(loaded.notes)
    if loaded.model.is_folded and not fold:
        notes.append("the checkpoint is already folded: fold=False has no effect")
    return source_from_model(
        loaded.model,
        batch_size=batch_size,
        image_size=loaded.record.input_size,
        features=features,
        fold=fold,
        input_name=input_name,
        checkpoint=loaded.checkpoint,
        notes=notes,
        preprocessing=loaded.preprocessing,
        class_names=loaded.record.class_names,
        decided_from=loaded.sources,
    )


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
    decided_from: dict[str, str] | None = None,
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
        decided_from=dict(decided_from or {}),
    )


def image_hw(image_size: Sequence[int] | int) -> tuple[int, int]:
    """(height, width) of an input the model takes: one int for a square, or two (`image_size_hw`)."""
    try:
        return image_size_hw(image_size if isinstance(image_size, int) else list(image_size), MIN_IMAGE_SIDE)
    except ConfigError as err:
        raise ExportError(str(err), EXIT_USAGE, param="image_size", value=image_size) from None


def default_stem(model: str, image_size: Sequence[int], features: bool) -> str:
    """`nextvit_small_224x224`, `nextvit_small_features_800x1344`: the original scripts' naming."""
    h, w = image_hw(image_size)
    return f"{model}{'_features' if features else ''}_{h}x{w}"
