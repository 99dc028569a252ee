"""CoreML conversion of Next-ViT: an ML program (.mlpackage) or a neural network (.mlmodel), checked.

The folded model is traced with `torch.jit.trace` and converted by coremltools. Input:

* ``image``: an RGB image of 0-255 pixels, normalised inside the model. CoreML's ImageType applies
  one scalar scale to every channel plus a per-channel bias, but ImageNet's std differs per
  channel, so the normalisation is split: the ImageType computes ``y = p / 255 - mean[c]`` (scale
  1/255, bias -mean) and a per-channel multiply by ``1 / std[c]`` in front of the network
  (`ImageNormalization`) completes ``x = (p / 255 - mean[c]) / std[c]``. One image per call.
* ``tensor``: a float32 (B, 3, H, W) array, already normalised.

Checks: the traced model against PyTorch, the converted model's input and output description
(names, types, shapes) as written to disk, and on macOS a prediction against PyTorch (CoreML
cannot run elsewhere; the record says so).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import replace_path, staging_folder
from ..model import ChannelAffine
from ..pretrained import IMAGENET_MEAN, IMAGENET_STD
from .errors import EXIT_UNAVAILABLE, EXIT_USAGE, ExportError
from .record import provenance, source_record
from .source import ExportSource
from .verify import compare

__all__ = [
    "TOLERANCES",
    "ImageNormalization",
    "image_type_scale_bias",
    "coreml_friendly",
    "import_coremltools",
    "describe_spec",
    "check_spec",
    "save_mlmodel",
    "predict_check",
    "convert_and_check_coreml",
]

# Tolerances of the macOS prediction check, by compute precision.
TOLERANCES = {"float16": (1e-2, 5e-2), "float32": (1e-3, 1e-3)}


class ImageNormalization(nn.Module):
    """The per-channel half of the ImageNet normalisation, in front of the network.

    CoreML's ImageType turns a pixel p (0-255) into ``scale * p + bias[c]``: one scale for all
    channels. With scale 1/255 and bias -mean[c] (`image_type_scale_bias`) it gives
    ``p / 255 - mean[c]``; this module multiplies by ``1 / std[c]``, so the network receives
    ``(p / 255 - mean[c]) / std[c]``, the normalisation it was trained with.
    """

    def __init__(self, model: nn.Module, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("inv_std", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor):
        return self.model(x * self.inv_std)


def image_type_scale_bias(mean: tuple[float, ...] = IMAGENET_MEAN) -> tuple[float, list[float]]:
    """The ImageType's scale and per-channel bias that go with `ImageNormalization`."""
    return 1.0 / 255.0, [-m for m in mean]


class _ChannelMulAdd(nn.Module):
    """`ChannelAffine` written as a multiply and an add: coremltools has no converter for addcmul."""

    def __init__(self, affine: ChannelAffine) -> None:
        super().__init__()
        self.weight, self.bias = affine.weight, affine.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def coreml_friendly(module: nn.Module) -> nn.Module:
    """A copy of `module` whose ops all have coremltools converters (same computation)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, ChannelAffine):
                setattr(parent, name, _ChannelMulAdd(child))
    return module.eval()


def import_coremltools():
    """coremltools, quietly, or `ExportError` (exit 3) when it is not installed."""
    # coremltools logs, at import, that its native runtime is missing off macOS and that this torch
    # is newer than it was tested with; the check below and the sidecar cover both.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise ExportError("coremltools is not installed here: pip install coremltools", EXIT_UNAVAILABLE) from None
    return ct


def describe_spec(spec) -> dict:
    """Names, types and shapes of a CoreML model's inputs and outputs, from its spec."""
    from coremltools.proto import FeatureTypes_pb2

    def feature(f) -> dict:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            image = f.type.imageType
            color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
            return dict(name=f.name, type="image", color=color, height=image.height, width=image.width)
        if kind == "multiArrayType":
            array = f.type.multiArrayType
            dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
            return dict(name=f.name, type="tensor", shape=list(array.shape), dtype=dtype)
        return dict(name=f.name, type=kind)

    return dict(
        inputs=[feature(f) for f in spec.description.input],
        outputs=[feature(f) for f in spec.description.output],
    )


def check_spec(description: dict, source: ExportSource, input_type: str) -> None:
    """Raise `ExportError` naming the difference when the converted I/O is not what was asked for."""
    inputs, outputs = description["inputs"], description["outputs"]
    b, c, h, w = source.input_shape
    if [i["name"] for i in inputs] != [source.input_name]:
        raise ExportError(f"CoreML inputs are {[i['name'] for i in inputs]}, expected [{source.input_name!r}]")
    got = inputs[0]
    if input_type == "image":
        if (got["type"], got.get("color"), got.get("height"), got.get("width")) != ("image", "RGB", h, w):
            raise ExportError(f"CoreML input is {got}, expected an RGB image of {h}x{w}")
    elif got["type"] != "tensor" or got.get("shape") != [b, c, h, w]:
        raise ExportError(f"CoreML input is {got}, expected a tensor of shape {[b, c, h, w]}")
    names = [o["name"] for o in outputs]
    if names != source.output_names:
        raise ExportError(f"CoreML outputs are {names}, expected {source.output_names}")
    for out, expected in zip(outputs, source.outputs_info()):
        if out.get("shape") and out["shape"] != expected["shape"]:  # neural networks leave shapes out
            raise ExportError(f"CoreML output {out['name']} has shape {out['shape']}, expected {expected['shape']}")


def save_mlmodel(mlmodel, output: Path) -> None:
    """Save into a temporary folder next to `output`, then move it into place."""
    with staging_folder(output) as tmp:
        staged = tmp / output.name
        mlmodel.save(str(staged))
        replace_path(staged, output)


def _mean_std(source: ExportSource) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the exported model expects: its recorded preprocessing's, else ImageNet's."""
    prep = source.preprocessing
    return (prep.mean, prep.std) if prep is not None else (IMAGENET_MEAN, IMAGENET_STD)


def predict_check(ct, output: Path, source: ExportSource, input_type: str, precision: str) -> dict:
    """Run the saved model with CoreML (macOS only) on random pixels and compare with PyTorch."""
    gen = np.random.default_rng(0)
    b, _, h, w = source.input_shape
    pixels = gen.integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean, std = _mean_std(source)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model = ct.models.MLModel(str(output))
    if input_type == "image":
        from PIL import Image

        feed = {source.input_name: Image.fromarray(pixels[0], mode="RGB")}
    else:
        feed = {source.input_name: x.numpy()}
    result = model.predict(feed)
    atol, rtol = TOLERANCES[precision]
    return dict(
        status="checked by prediction on macOS",
        **compare([result[n] for n in source.output_names], source.reference_outputs(x), atol, rtol),
    )


def convert_and_check_coreml(
    source: ExportSource,
    output: str | Path,
    *,
    convert_to: str = "mlprogram",
    input_type: str = "image",
    compute_precision: str = "float16",
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = lambda m: print(f"note: {m}", file=sys.stderr),
) -> dict:
    """Trace, convert, check and save `source` as CoreML at `output`; returns the sidecar record
    (not written: the caller adds to it). `check.passed` is False when the macOS prediction differs
    from PyTorch beyond `TOLERANCES`, None where CoreML cannot run."""
    ct = import_coremltools()
    output = Path(output)
    _check_coreml_args(source, output, convert_to, input_type)
    log(f"tracing {source.name} {'features' if source.features else 'classifier'} {list(source.input_shape)}")
    traced, ct_input, trace_check = _traced(ct, source, input_type)
    log(f"converting to a CoreML {convert_to} with coremltools {ct.__version__}")
    start = time.perf_counter()
    mlmodel = _converted(ct, traced, ct_input, source, convert_to, compute_precision)
    seconds = time.perf_counter() - start
    check_spec(describe_spec(mlmodel.get_spec()), source, input_type)
    save_mlmodel(mlmodel, output)
    description = describe_spec(ct.models.MLModel(str(output), skip_model_load=True).get_spec())  # as on disk
    check_spec(description, source, input_type)
    check = _prediction_check(ct, output, source, input_type, convert_to, compute_precision, warn)
    check.update(spec="input and output names, types and shapes match", trace=trace_check)
    record = dict(
        format=f"coreml {convert_to}",
        output=output.name,
        **source_record(source),
        input_type=input_type,
        compute_precision=compute_precision if convert_to == "mlprogram" else None,
        coreml_description=description,
        exporter="torch.jit.trace + coremltools.convert",
        conversion_seconds=round(seconds, 2),
        check=check,
        **provenance(("coremltools",)),
    )
    record["preprocessing"].update(_baked_normalisation(source, input_type))
    return record


def _check_coreml_args(source: ExportSource, output: Path, convert_to: str, input_type: str) -> None:
    suffix = ".mlpackage" if convert_to == "mlprogram" else ".mlmodel"
    if output.suffix != suffix:
        raise ExportError(f"a {convert_to} is saved as {suffix}", EXIT_USAGE, param="output", value=str(output))
    if input_type == "image" and source.input_shape[0] != 1:
        raise ExportError(
            "CoreML image inputs hold one image; use batch size 1 or a tensor input",
            EXIT_USAGE,
            param="batch_size",
            value=source.input_shape[0],
        )


def _traced(ct, source: ExportSource, input_type: str):
    """Step 1: the traced module (with the image normalisation in front for an image input), the
    CoreML input description, and the trace's check against PyTorch (`ExportError` when it differs)."""
    x = source.example_input()
    module = coreml_friendly(source.deploy)
    if input_type == "image":
        mean, std = _mean_std(source)  # the model's own (config.json), ImageNet's by default
        module = ImageNormalization(module, std).eval()
        traced_input = x * torch.tensor(std).view(1, 3, 1, 1)  # what the ImageType hands over
        scale, bias = image_type_scale_bias(mean)
        ct_input = ct.ImageType(
            name=source.input_name, shape=source.input_shape, scale=scale, bias=bias, color_layout=ct.colorlayout.RGB
        )
    else:
        traced_input = x
        ct_input = ct.TensorType(name=source.input_name, shape=source.input_shape, dtype=np.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, traced_input)
        traced_out = traced(traced_input)
    traced_out = list(traced_out) if isinstance(traced_out, (tuple, list)) else [traced_out]
    trace_check = compare([t.numpy() for t in traced_out], source.reference_outputs(x), 1e-4, 1e-4)
    if not trace_check["passed"]:
        raise ExportError(f"the traced model differs from PyTorch by {trace_check['max_abs_diff']:.3g}")
    return traced, ct_input, trace_check


def _converted(ct, traced, ct_input, source: ExportSource, convert_to: str, compute_precision: str):
    """Step 2: coremltools' conversion, with the model's description and weights' hash in its metadata."""
    kwargs = dict(inputs=[ct_input], outputs=[ct.TensorType(name=n) for n in source.output_names],
                  convert_to=convert_to)  # fmt: skip
    if convert_to == "mlprogram":
        kwargs["compute_precision"] = getattr(ct.precision, compute_precision.upper())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(traced, **kwargs)
    mlmodel.short_description = f"Next-ViT {source.name} ({'features' if source.features else 'classifier'})"
    mlmodel.user_defined_metadata["nextvit.checkpoint_sha256"] = (source.checkpoint or {}).get("sha256", "random")
    return mlmodel


def _prediction_check(ct, output, source, input_type, convert_to, compute_precision, warn) -> dict:
    """Step 3: a prediction against PyTorch on macOS; elsewhere, a record of why it was not run."""
    precision = compute_precision if convert_to == "mlprogram" else "float16"
    if sys.platform == "darwin":
        return predict_check(ct, output, source, input_type, precision)
    message = f"CoreML prediction needs macOS and cannot be checked on {sys.platform}; the I/O spec was checked"
    warn(message)
    return dict(status=f"not run: {message}", passed=None)


def _baked_normalisation(source: ExportSource, input_type: str) -> dict:
    """What the sidecar's preprocessing block adds: the normalisation an image input carries inside."""
    prep = dict(baked_into_model=input_type == "image")
    if input_type == "image":
        mean, std = _mean_std(source)
        scale, bias = image_type_scale_bias(mean)
        prep.update(
            input="RGB image, pixels 0-255",
            image_type_scale=scale,
            image_type_bias=bias,
            channel_multiplier=[1.0 / s for s in std],
        )
    return prep
