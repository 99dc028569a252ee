"""Deployed classifiers, each behind one small interface: a batch of preprocessed images in, logits out.

A `Predictor` knows what it runs (the artifact and the runtime), the preprocessing its input needs
and the class names, read from the artifact's own records: the JSON sidecar every exporter writes
beside its file (`<file>.json`), or the `config.json` that classification/main.py writes beside a
checkpoint. Flags override both; where neither knows the input size, loading stops and names the
flags to pass.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess import ConfigError, Preprocessing, checked_class_names, read_json_object

__all__ = ["PredictError", "Predictor", "ARTIFACT_KINDS", "artifact_kind", "load_predictor"]

# artifact suffix -> kind
ARTIFACT_KINDS = {
    ".pth": "checkpoint",
    ".pt": "checkpoint",
    ".safetensors": "checkpoint",
    ".onnx": "onnx",
    ".xml": "openvino",
    ".trt": "tensorrt",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".mlpackage": "coreml",
    ".mlmodel": "coreml",
}


class PredictError(ValueError):
    """The artifact, its records or the settings given cannot be used; the message says which and why.

    `flag` names the command-line option concerned, when there is one."""

    def __init__(self, message: str, flag: str | None = None, unavailable: bool = False) -> None:
        super().__init__(message)
        self.flag = flag
        self.unavailable = unavailable  # a runtime missing here (exit 3), not bad input


@dataclass
class Predictor:
    """A loaded artifact: `run(batch)` maps (N, 3, H, W) float32 to (N, classes) logits."""

    artifact: Path
    kind: str
    runtime: str
    run: Callable[[np.ndarray], np.ndarray]
    preprocessing: Preprocessing
    num_classes: int
    class_names: list[str] | None
    fixed_batch: int | None = None  # the batch an artifact with a static batch dimension takes
    takes_image: bool = False  # CoreML with an image input: gets the cropped RGB image, not an array
    notes: list[str] = field(default_factory=list)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)


def artifact_kind(path: str | os.PathLike) -> str:
    path = Path(path)
    kind = ARTIFACT_KINDS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(ARTIFACT_KINDS))
        raise PredictError(f"{path}: unknown kind of model file (suffix {path.suffix or 'none'}; known: {known})")
    return kind


def _read_sidecar(artifact: Path) -> dict[str, Any] | None:
    path = artifact.with_name(artifact.name + ".json")
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except ConfigError as err:
        raise PredictError(f"the sidecar {err}") from None


def _settings(
    artifact: Path,
    recorded: Preprocessing | None,
    recorded_names: Sequence[str] | None,
    num_classes: int,
    overrides: dict[str, Any],
    class_names: Sequence[str] | None,
    source_of_records: str,
) -> tuple[Preprocessing, list[str] | None]:
    """The preprocessing and class names: the recorded ones with the flags applied on top."""
    size = overrides.get("input_size")
    if recorded is None and size is None:
        raise PredictError(
            f"{artifact}: no preprocessing is known ({source_of_records}); pass --image-size (and, if they differ "
            "from the defaults, --crop-pct, --interpolation, --mean, --std)",
            flag="--image-size",
        )
    try:
        prep = (recorded or Preprocessing(size)).override(**overrides)
        names = checked_class_names(
            class_names if class_names is not None else recorded_names,
            num_classes,
            "--class-names" if class_names is not None else source_of_records,
        )
    except ConfigError as err:
        raise PredictError(str(err), flag="--class-names" if "class names" in str(err) else None) from None
    return prep, names


def _check_input_size(artifact: Path, prep: Preprocessing, dims: Sequence[Any], given: bool) -> int | None:
    """Refuse a crop size the artifact cannot take; return its static batch size (None: dynamic)."""
    if len(dims) != 4:
        raise PredictError(f"{artifact} takes a {len(dims)}-d input, not an image batch (N, 3, H, W)")
    h, w = dims[2], dims[3]
    static = [d for d in (h, w) if isinstance(d, int) and d > 0]
    if len(static) == 2 and (h, w) != tuple(prep.input_size):
        how = "--image-size" if given else "its recorded preprocessing"
        raise PredictError(
            f"{artifact} takes {h}x{w} inputs but {how} gives {prep.input_size[0]}x{prep.input_size[1]}",
            flag="--image-size",
        )
    batch = dims[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def _check_classes(artifact: Path, outputs: int, num_classes: int | None) -> None:
    if num_classes is not None and outputs != num_classes:
        raise PredictError(
            f"{artifact} has {outputs} outputs, but {num_classes} classes were given", flag="--num-classes"
        )


# --------------------------------------------------------------------------------------------
# Loaders, one per kind
# --------------------------------------------------------------------------------------------


def _load_checkpoint(artifact: Path, overrides: dict, class_names, num_classes, model: str | None, **_) -> Predictor:
    import torch

    from ..export.errors import ExportError
    from ..export.source import load_source
    from ..preprocess import training_config

    try:
        config = training_config(artifact)
    except ConfigError as err:
        raise PredictError(str(err)) from None
    size = overrides.get("input_size")
    if not config.get("input_size") and size is None:
        raise PredictError(
            f"{artifact}: no config.json beside it says how its images were preprocessed; pass --image-size "
            "(and --crop-pct, --interpolation, --mean, --std where they differ from ImageNet's defaults)",
            flag="--image-size",
        )
    rest = {k: v for k, v in overrides.items() if k != "input_size"}
    try:
        source = load_source(
            model, artifact, image_size=size, num_classes=num_classes, preprocessing=rest, class_names=class_names
        )
    except ExportError as err:
        raise PredictError(err.describe({"num_classes": "--num-classes", "model": "--model"})) from None
    if source.num_classes <= 0:
        raise PredictError(f"{artifact} has no classifier head: nothing to predict classes with")
    net = source.deploy.eval()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(x)).float().numpy()

    return Predictor(artifact, "checkpoint", f"PyTorch {torch.__version__} (folded, CPU)", run, source.preprocessing,
                     source.num_classes, source.class_names)  # fmt: skip


def _from_sidecar(artifact: Path, sidecar: dict | None) -> tuple[Preprocessing | None, list | None, str]:
    where = f"{artifact.name}.json"
    if sidecar is None:
        return None, None, f"there is no sidecar {where} beside it"
    if sidecar.get("task") == "features":
        raise PredictError(f"{artifact} outputs stage features (a detection/segmentation backbone), not classes")
    block = sidecar.get("preprocessing")
    prep = None
    if isinstance(block, dict) and "center_crop" in block:
        try:
            prep = Preprocessing.from_record(block, where)
        except ConfigError as err:
            raise PredictError(str(err)) from None
    return prep, sidecar.get("class_names"), where


def _load_onnx(artifact: Path, overrides: dict, class_names, num_classes, threads: int | None, **_) -> Predictor:
    from ..export.errors import ExportError
    from ..export.onnx import onnx_is_quantized, onnx_session

    prep, names, where = _from_sidecar(artifact, _read_sidecar(artifact))
    try:
        session = onnx_session(artifact, threads)
    except ExportError as err:
        raise PredictError(str(err), unavailable=True) from None
    except Exception as err:  # noqa: BLE001 - ONNX Runtime's own errors for a bad file
        raise PredictError(f"{artifact}: ONNX Runtime cannot load it ({err})") from None
    (inp,), out = session.get_inputs(), session.get_outputs()[0]
    outputs = out.shape[-1]
    if not isinstance(outputs, int):
        raise PredictError(f"{artifact}: its output has no fixed class dimension ({out.shape})")
    _check_classes(artifact, outputs, num_classes)
    prep, names = _settings(artifact, prep, names, outputs, overrides, class_names, where)
    batch = _check_input_size(artifact, prep, inp.shape, "input_size" in overrides)
    quantized = "int8 QDQ" if onnx_is_quantized(artifact) else "fp32"
    import onnxruntime

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out.name], {inp.name: x})[0]

    return Predictor(artifact, "onnx", f"ONNX Runtime {onnxruntime.__version__} CPU ({quantized})", run, prep, outputs,
                     names, fixed_batch=batch)  # fmt: skip


def _load_openvino(artifact: Path, overrides: dict, class_names, num_classes, threads: int | None, **_) -> Predictor:
    from ..export.openvino import compile_model, effective_precision, require_openvino

    try:
        ov = require_openvino()
    except ModuleNotFoundError as err:
        raise PredictError(str(err), unavailable=True) from None
    sidecar = _read_sidecar(artifact)
    prep, names, where = _from_sidecar(artifact, sidecar)
    precision = str((sidecar or {}).get("precision", "fp32"))
    try:
        compiled = compile_model(artifact, precision if precision in ("fp32", "bf16", "int8") else "fp32", threads)
    except Exception as err:  # noqa: BLE001 - OpenVINO's own errors for a bad file
        raise PredictError(f"{artifact}: OpenVINO cannot load it ({err})") from None
    inp, out = compiled.inputs[0], compiled.outputs[0]
    dims = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
    out_shape = out.get_partial_shape()
    if not out_shape[-1].is_static:
        raise PredictError(f"{artifact}: its output has no fixed class dimension")
    outputs = out_shape[-1].get_length()
    _check_classes(artifact, outputs, num_classes)
    prep, names = _settings(artifact, prep, names, outputs, overrides, class_names, where)
    batch = _check_input_size(artifact, prep, dims, "input_size" in overrides)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(request.infer({0: x})[out]).copy()

    runtime = f"OpenVINO {ov.__version__.split('-')[0]} CPU ({precision}, computes in {effective_precision(compiled)})"
    return Predictor(artifact, "openvino", runtime, run, prep, outputs, names, fixed_batch=batch)


def _load_tensorrt(artifact: Path, overrides: dict, class_names, num_classes, **_) -> Predictor:
    from ..export.tensorrt import EngineRunner, gpu_visible, tensorrt_module

    trt = tensorrt_module()
    if trt is None or not gpu_visible():
        raise PredictError(
            f"{artifact}: a TensorRT engine runs only where the tensorrt module and an NVIDIA GPU are "
            "(it is built for one GPU model and TensorRT version)",
            unavailable=True,
        )
    sidecar = _read_sidecar(artifact)
    prep, names, where = _from_sidecar(artifact, sidecar)
    shape = (sidecar or {}).get("input", {}).get("shape")
    if shape is None:
        raise PredictError(f"{artifact}: its sidecar {where} is needed for the engine's input shape")
    prep, names = _settings(artifact, prep, names, int(num_classes or 0) or _sidecar_classes(sidecar), overrides,
                            class_names, where)  # fmt: skip
    batch = _check_input_size(artifact, prep, shape, "input_size" in overrides)
    runner = EngineRunner(trt, artifact, tuple(shape))
    output = runner.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return runner(x)[output]

    return Predictor(artifact, "tensorrt", f"TensorRT {trt.__version__}", run, prep, _sidecar_classes(sidecar), names,
                     fixed_batch=batch)  # fmt: skip


def _sidecar_classes(sidecar: dict | None) -> int:
    classes = (sidecar or {}).get("num_classes")
    if not isinstance(classes, int) or classes <= 0:
        raise PredictError("the sidecar does not record the number of classes (num_classes)")
    return classes


def _load_coreml(artifact: Path, overrides: dict, class_names, num_classes, **_) -> Predictor:
    if sys.platform != "darwin":
        raise PredictError(f"{artifact}: CoreML models run only on macOS (this is {sys.platform})", unavailable=True)
    import coremltools as ct

    sidecar = _read_sidecar(artifact)
    prep, names, where = _from_sidecar(artifact, sidecar)
    if sidecar is None:
        raise PredictError(f"{artifact}: its sidecar {where} is needed (input name and type)")
    classes = _sidecar_classes(sidecar)
    _check_classes(artifact, classes, num_classes)
    prep, names = _settings(artifact, prep, names, classes, overrides, class_names, where)
    model = ct.models.MLModel(str(artifact))
    input_name = sidecar["input"]["name"]
    output_name = sidecar["outputs"][0]["name"]
    takes_image = sidecar.get("input_type") == "image"

    def run(x) -> np.ndarray:
        rows = [model.predict({input_name: item if takes_image else item[None]})[output_name] for item in x]
        return np.concatenate([np.asarray(r, dtype=np.float32).reshape(1, -1) for r in rows])

    return Predictor(artifact, "coreml", f"CoreML (coremltools {ct.__version__})", run, prep, classes, names,
                     takes_image=takes_image)  # fmt: skip


_LOADERS = {
    "checkpoint": _load_checkpoint,
    "onnx": _load_onnx,
    "openvino": _load_openvino,
    "tensorrt": _load_tensorrt,
    "coreml": _load_coreml,
}


def load_predictor(
    artifact: str | os.PathLike,
    *,
    preprocessing: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    model: str | None = None,
    threads: int | None = None,
) -> Predictor:
    """Load any deployed form of a Next-ViT classifier for prediction.

    Args:
        artifact: a checkpoint (.pth/.safetensors), ONNX model (fp32 or int8), OpenVINO IR (.xml),
            TensorRT engine (.trt/.engine/.plan, with TensorRT and a GPU) or CoreML model (macOS).
        preprocessing: settings over the recorded ones (`input_size`, `crop_pct`, `interpolation`,
            `mean`, `std`).
        class_names: names over the recorded ones, one per output.
        num_classes: the class count expected; an artifact with another is refused.
        model: the variant of a checkpoint without config.json (default: its metadata's, else small).
        threads: CPU threads of ONNX Runtime / OpenVINO.
    """
    artifact = Path(artifact)
    kind = artifact_kind(artifact)
    exists = artifact.is_dir() if artifact.suffix.lower() == ".mlpackage" else artifact.is_file()
    if not exists:
        raise PredictError(f"{artifact}: no such model file")
    overrides = dict(preprocessing or {})
    if "input_size" in overrides and overrides["input_size"] is not None:
        sizes = (
            list(overrides["input_size"]) if not isinstance(overrides["input_size"], int) else [overrides["input_size"]]
        )
        overrides["input_size"] = (sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return _LOADERS[kind](
        artifact,
        overrides=overrides,
        class_names=list(class_names) if class_names is not None else None,
        num_classes=num_classes,
        model=model,
        threads=threads,
    )
