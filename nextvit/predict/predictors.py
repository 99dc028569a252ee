"""Loading a model file of any kind (checkpoint, AOTInductor .pt2, ONNX, OpenVINO, TensorRT, CoreML) as a
`Predictor`: one small interface, a batch of preprocessed images in, logits out. (`loop.py` runs it over
image files.)

A `Predictor` knows what it runs (the artifact and the runtime), the preprocessing its input needs
and the class names, read from the artifact's own records (`nextvit.records`): the JSON sidecar every
exporter writes beside its file (`<file>.json`), or for a checkpoint whatever `nextvit.loading`
finds (config.json, the checkpoint's training args, its weights); a `.pt2` without its sidecar
falls back on the description stored inside the package. Flags override both; where nothing knows
the input size, loading stops and names the flags to pass.

Checkpoints and `.pt2` packages run in PyTorch, on the CPU or a CUDA GPU: on CUDA each batch goes
through a pinned host buffer with a non-blocking copy, and a checkpoint's folded model runs in
channels_last, in the dtype asked for (a `.pt2` computes in the dtype compiled into it). The other
kinds run in their own runtimes on the device they were made for.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..preprocess import MIN_IMAGE_SIDE, ConfigError, Preprocessing, image_size_hw
from ..records import SidecarRecord, checked_class_names, read_sidecar

__all__ = [
    "PredictError",
    "Predictor",
    "ARTIFACT_KINDS",
    "PREDICT_DEVICES",
    "PREDICT_DTYPES",
    "PREDICT_FLAGS",
    "artifact_kind",
    "load_predictor",
]

# library argument -> deployment/predict.py's flag for it, in messages
PREDICT_FLAGS = {
    "model": "--model-name",
    "image_size": "--image-size",
    "num_classes": "--num-classes",
    "class_names": "--class-names",
    "kv_pool": "--kv-pool",
    "checkpoint": "the model file",
    "device": "--device",
    "dtype": "--dtype",
}

PREDICT_DEVICES = ("cpu", "cuda", "auto")  # auto: CUDA where there is a GPU (a .pt2: its own device)
PREDICT_DTYPES = ("fp32", "fp16", "bf16")  # what a checkpoint computes in; a .pt2's is compiled in
TORCH_KINDS = ("checkpoint", "aoti")  # the kinds PyTorch runs, on either device

# artifact suffix -> kind
ARTIFACT_KINDS = {
    ".pth": "checkpoint",
    ".pt": "checkpoint",
    ".safetensors": "checkpoint",
    ".pt2": "aoti",
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
    max_batch: int | None = None  # the largest batch a dynamic-batch artifact takes (None: no limit)
    device: str = "cpu"  # where the model runs ("cuda" for a TensorRT engine)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def batch_size(self, requested: int) -> int:
        """The batch each call gets: the artifact's static one, or `requested` up to its limit."""
        return self.fixed_batch or min(requested, self.max_batch or requested)


def artifact_kind(path: str | os.PathLike) -> str:
    path = Path(path)
    kind = ARTIFACT_KINDS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(ARTIFACT_KINDS))
        raise PredictError(f"{path}: unknown kind of model file (suffix {path.suffix or 'none'}; known: {known})")
    return kind


def _sidecar(artifact: Path) -> SidecarRecord | None:
    """The artifact's sidecar, checked; a classifier's (a features backbone has no classes to predict)."""
    try:
        record = read_sidecar(artifact)
    except ConfigError as err:
        raise PredictError(f"the sidecar {err}") from None
    if record is not None and record.task == "features":
        raise PredictError(f"{artifact} outputs stage features (a detection/segmentation backbone), not classes")
    return record


def _where(artifact: Path, sidecar: SidecarRecord | None) -> str:
    return sidecar.path.name if sidecar is not None else f"there is no sidecar {artifact.name}.json beside it"


def _sidecar_classes(artifact: Path, sidecar: SidecarRecord | None) -> int:
    if sidecar is None or not sidecar.num_classes:
        raise PredictError(f"{artifact}: its sidecar does not record the number of classes (num_classes)")
    return sidecar.num_classes


def _settings(
    artifact: Path,
    sidecar: SidecarRecord | None,
    num_classes: int,
    overrides: dict[str, Any],
    class_names: Sequence[str] | None,
) -> tuple[Preprocessing, list[str] | None]:
    """The preprocessing and class names: the sidecar's with the flags applied on top."""
    recorded = sidecar.preprocessing if sidecar is not None else None
    size = overrides.get("input_size")
    if recorded is None and size is None:
        raise PredictError(
            f"{artifact}: no preprocessing is known ({_where(artifact, sidecar)}); pass --image-size (and, if they "
            "differ from the defaults, --crop-pct, --interpolation, --mean, --std)",
            flag="--image-size",
        )
    recorded_names = list(sidecar.class_names) if sidecar is not None and sidecar.class_names else None
    try:
        prep = (recorded or Preprocessing(size)).override(**overrides)
        names = checked_class_names(
            class_names if class_names is not None else recorded_names,
            num_classes,
            "--class-names" if class_names is not None else _where(artifact, sidecar),
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


def _torch_device(requested: str | None) -> str:
    """Where a checkpoint runs: the CPU unless CUDA is asked for (`auto`: where there is a GPU)."""
    import torch

    if requested in (None, "cpu"):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "auto":
        return "cpu"
    return _no_cuda("--device cuda: no CUDA device here", flag="--device")


def _no_cuda(what: str, flag: str | None = None) -> NoReturn:
    import torch

    build = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no GPU"
    raise PredictError(f"{what} ({build}, torch {torch.__version__})", flag=flag, unavailable=True)


def _device_name(device: str) -> str:
    import torch

    return f"CUDA, {torch.cuda.get_device_name()}" if device == "cuda" else "CPU"


def _feeder(device: str, channels_last: bool = False) -> Callable[[np.ndarray], Any]:
    """float32 numpy batches as tensors on `device`. On CUDA a batch is copied into a pinned host buffer
    (kept across calls, grown when a batch is larger) and sent with a non-blocking copy; the caller reads
    its results back to the host (a synchronising copy) before the next batch overwrites the buffer."""
    import torch

    pinned: list[torch.Tensor] = []

    def feed(x: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if device == "cuda":
            if not pinned or pinned[0].shape[0] < len(batch) or pinned[0].shape[1:] != batch.shape[1:]:
                pinned[:] = [torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)]
            staged = pinned[0][: len(batch)]
            staged.copy_(batch)
            batch = staged.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch

    return feed


def _load_checkpoint(artifact: Path, overrides: dict, class_names, num_classes, model: str | None,
                     device: str | None = None, dtype: str | None = None, **_) -> Predictor:  # fmt: skip
    import torch

    from ..export.aoti import AOTI_DTYPES, CastedModel
    from ..folding import fold_batchnorm
    from ..loading import LoadError, load_model

    target = _torch_device(device)  # before loading: a missing GPU is reported at once
    dtype = dtype or "fp32"
    rest = {k: v for k, v in overrides.items() if k != "input_size"}
    try:
        loaded = load_model(
            artifact, model=model, image_size=overrides.get("input_size"), num_classes=num_classes,
            preprocessing=rest, class_names=class_names, default_size=None,
        )  # fmt: skip
    except LoadError as err:
        raise PredictError(err.describe(PREDICT_FLAGS), flag=PREDICT_FLAGS.get(err.param)) from None
    if loaded.record.num_classes <= 0:
        raise PredictError(f"{artifact} has no classifier head: nothing to predict classes with")
    net = loaded.model if loaded.model.is_folded else fold_batchnorm(loaded.model)
    if dtype != "fp32":
        net = CastedModel(net, AOTI_DTYPES[dtype])  # float32 in and out, computing in `dtype`
    cuda = target == "cuda"
    net = net.to(target, memory_format=torch.channels_last) if cuda else net
    feed = _feeder(target, channels_last=cuda)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return net(feed(x)).float().cpu().numpy()

    notes = [loaded.describe()] + loaded.notes
    if dtype == "fp16" and not cuda:
        notes.append("fp16 on the CPU runs PyTorch's generic kernels, slower than fp32 (bf16 has oneDNN's)")
    layout = ", channels_last" if cuda else ""
    runtime = f"PyTorch {torch.__version__} (folded, {_device_name(target)}, {dtype}{layout})"
    names = list(loaded.record.class_names) if loaded.record.class_names else None
    return Predictor(artifact, "checkpoint", runtime, run, loaded.preprocessing, loaded.record.num_classes, names,
                     notes=notes, device=target)  # fmt: skip


def _load_onnx(artifact: Path, overrides: dict, class_names, num_classes, threads: int | None, **_) -> Predictor:
    from ..export.errors import ExportError
    from ..export.onnx import onnx_is_quantized, onnx_session

    sidecar = _sidecar(artifact)
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
    prep, names = _settings(artifact, sidecar, outputs, overrides, class_names)
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
    sidecar = _sidecar(artifact)
    precision = (sidecar.precision if sidecar is not None else None) or "fp32"
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
    prep, names = _settings(artifact, sidecar, outputs, overrides, class_names)
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
    sidecar = _sidecar(artifact)
    if sidecar is None or sidecar.input_shape is None:
        raise PredictError(f"{artifact}: its sidecar {artifact.name}.json is needed for the engine's input shape")
    classes = _sidecar_classes(artifact, sidecar)
    _check_classes(artifact, classes, num_classes)
    prep, names = _settings(artifact, sidecar, classes, overrides, class_names)
    batch = _check_input_size(artifact, prep, sidecar.input_shape, "input_size" in overrides)
    shape = sidecar.input_shape
    runner = EngineRunner(trt, artifact, tuple(shape))
    output = runner.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return runner(x)[output]

    return Predictor(artifact, "tensorrt", f"TensorRT {trt.__version__}", run, prep, classes, names,
                     fixed_batch=batch, device="cuda")  # fmt: skip


def _load_coreml(artifact: Path, overrides: dict, class_names, num_classes, **_) -> Predictor:
    if sys.platform != "darwin":
        raise PredictError(f"{artifact}: CoreML models run only on macOS (this is {sys.platform})", unavailable=True)
    import coremltools as ct

    sidecar = _sidecar(artifact)
    if sidecar is None or not sidecar.input_name or not sidecar.output_names:
        raise PredictError(f"{artifact}: its sidecar {artifact.name}.json is needed (input name and type)")
    classes = _sidecar_classes(artifact, sidecar)
    _check_classes(artifact, classes, num_classes)
    prep, names = _settings(artifact, sidecar, classes, overrides, class_names)
    model = ct.models.MLModel(str(artifact))
    input_name, output_name = sidecar.input_name, sidecar.output_names[0]
    takes_image = sidecar.input_type == "image"

    def run(x) -> np.ndarray:
        rows = [model.predict({input_name: item if takes_image else item[None]})[output_name] for item in x]
        return np.concatenate([np.asarray(r, dtype=np.float32).reshape(1, -1) for r in rows])

    return Predictor(artifact, "coreml", f"CoreML (coremltools {ct.__version__})", run, prep, classes, names,
                     takes_image=takes_image)  # fmt: skip


def _embedded_metadata(artifact: Path) -> dict[str, Any]:
    """The metadata AOTInductor stores in a `.pt2` package (read from the archive, without loading the
    compiled model: a CUDA package's is readable on a machine without a GPU); {} when it has none."""
    try:
        with zipfile.ZipFile(artifact) as archive:
            for name in archive.namelist():
                if "data/aotinductor/" in name and name.endswith("_metadata.json"):
                    data = json.loads(archive.read(name))
                    if isinstance(data, dict):
                        return data
    except (OSError, zipfile.BadZipFile, UnicodeError, json.JSONDecodeError) as err:
        raise PredictError(f"{artifact}: not a readable AOTInductor package ({err})") from None
    raise PredictError(
        f"{artifact}: not an AOTInductor package (no compiled model inside; a torch.export.save file is not "
        "runnable: compile one with deployment/export_aoti.py)"
    )


def _embedded_record(artifact: Path, described: dict[str, Any]) -> SidecarRecord:
    """A sidecar made of the description deployment/export_aoti.py stores in the package (its input shape,
    mean, std, class names): what predict goes by when the `.pt2` was copied without its sidecar."""
    shape = (described.get("input") or {}).get("shape")
    names = described.get("class_names")
    data = dict(
        task=described.get("task"),
        model=described.get("model"),
        num_classes=len(names) if isinstance(names, list) else None,
        input=dict(shape=shape),
        outputs=[dict(name=n) for n in described.get("outputs") or [] if isinstance(n, str)],
        class_names=names,
    )
    if isinstance(shape, list) and len(shape) == 4:
        data["preprocessing"] = dict(center_crop=shape[2:], mean=described.get("mean"), std=described.get("std"))
    try:
        return SidecarRecord.from_json(data, f"{artifact.name}'s own metadata")
    except ConfigError as err:
        raise PredictError(str(err)) from None


@dataclass(frozen=True)
class _Package:
    """What a `.pt2` was compiled for: device, dtype, input shape (batch None when dynamic), batch limit."""

    device: str
    dtype: str
    input_shape: tuple[int | None, ...]
    max_batch: int | None


def _package(artifact: Path, sidecar: SidecarRecord | None, meta: dict[str, Any]) -> tuple[_Package, SidecarRecord]:
    """The package's compiled settings and the record predict reads (its sidecar, else its own metadata)."""
    from ..export.aoti import MAX_DYNAMIC_BATCH, METADATA_KEY

    try:
        described = json.loads(meta.get(METADATA_KEY) or "{}")
    except (TypeError, json.JSONDecodeError):
        described = {}
    described = described if isinstance(described, dict) else {}
    if sidecar is None and not described:
        raise PredictError(
            f"{artifact}: there is no sidecar {artifact.name}.json beside it and no description of its input inside "
            "(a package of deployment/export_aoti.py has both)"
        )
    record = sidecar or _embedded_record(artifact, described)
    if record.task == "features":
        raise PredictError(f"{artifact} outputs stage features (a detection/segmentation backbone), not classes")
    inputs = described.get("input") if isinstance(described.get("input"), dict) else {}
    data = sidecar.data if sidecar is not None else dict(described, dynamic_batch=inputs.get("dynamic_batch"))
    where = record.path.name
    device = data.get("device")
    compiled_for = meta.get("AOTI_DEVICE_KEY")  # AOTInductor's own note of the device
    if device not in ("cpu", "cuda"):
        raise PredictError(f"{where}: device must be 'cpu' or 'cuda', got {device!r}")
    if compiled_for in ("cpu", "cuda") and compiled_for != device:
        raise PredictError(f"{where} says device {device} but {artifact.name} is compiled for {compiled_for}: the "
                           "sidecar is not this package's")  # fmt: skip
    dtype = data.get("dtype")
    if dtype not in PREDICT_DTYPES:
        raise PredictError(f"{where}: dtype must be one of {PREDICT_DTYPES}, got {dtype!r}")
    shape = record.input_shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PredictError(f"{where}: input shape must be 4 whole numbers (N, 3, H, W), got {shape!r}")
    dynamic = data.get("dynamic_batch")
    if not isinstance(dynamic, bool):
        raise PredictError(f"{where}: dynamic_batch must be true or false, got {dynamic!r}")
    limit = data.get("max_batch", MAX_DYNAMIC_BATCH) if dynamic else shape[0]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise PredictError(f"{where}: max_batch must be a whole number from 1, got {limit!r}")
    return _Package(device, dtype, (None if dynamic else shape[0], *shape[1:]), limit if dynamic else None), record


def _check_package_flags(artifact: Path, package: _Package, device: str | None, dtype: str | None) -> None:
    """A package runs where and in what it was compiled for: flags that say otherwise are refused."""
    import torch

    if device not in (None, "auto") and device != package.device:
        raise PredictError(
            f"--device {device}: {artifact.name} is compiled for {package.device} (a package runs on the device it "
            f"was built for); drop --device, or export one with deployment/export_aoti.py --device {device}",
            flag="--device",
        )
    if dtype is not None and dtype != package.dtype:
        raise PredictError(
            f"--dtype {dtype}: {artifact.name} computes in {package.dtype} (compiled in); drop --dtype, or export "
            f"one with deployment/export_aoti.py --dtype {dtype}",
            flag="--dtype",
        )
    if package.device == "cuda" and not torch.cuda.is_available():
        _no_cuda(f"{artifact}: a CUDA package, and there is no CUDA device here; for the CPU, export one with "
                 "deployment/export_aoti.py --device cpu")  # fmt: skip


def _load_aoti(artifact: Path, overrides: dict, class_names, num_classes, device: str | None = None,
               dtype: str | None = None, **_) -> Predictor:  # fmt: skip
    """A `.pt2` package of deployment/export_aoti.py: float32 NCHW on its device in, float32 logits out."""
    import torch

    sidecar = _sidecar(artifact)
    package, record = _package(artifact, sidecar, _embedded_metadata(artifact))
    _check_package_flags(artifact, package, device, dtype)
    try:
        runner = torch._inductor.aoti_load_package(str(artifact))
    except Exception as err:  # noqa: BLE001 - AOTInductor's own errors for a package it cannot load
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise PredictError(f"{artifact}: torch {torch.__version__} cannot load it ({first}); a package loads "
                           "with the torch version that compiled it") from None  # fmt: skip
    feed = _feeder(package.device)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        out = runner(feed(x))
        return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu().numpy()

    # one call on a zero batch: the class count the package really has (checked against its records)
    _, channels, height, width = package.input_shape
    outputs = run(np.zeros((package.input_shape[0] or 1, channels, height, width), np.float32)).shape[-1]
    if record.num_classes is not None and record.num_classes != outputs:
        raise PredictError(f"{artifact} has {outputs} outputs but {record.path.name} says {record.num_classes} "
                           "classes: the sidecar is not this package's")  # fmt: skip
    _check_classes(artifact, outputs, num_classes)
    prep, names = _settings(artifact, record, outputs, overrides, class_names)
    fixed = _check_input_size(artifact, prep, package.input_shape, "input_size" in overrides)
    notes = []
    if sidecar is None:
        notes.append(f"no sidecar {artifact.name}.json: input size, mean/std and class names from the package's own "
                     f"metadata; resizing to {prep.resize_shorter_side} ({prep.interpolation}) then the center crop "
                     "assumed (--crop-pct, --interpolation if the model was trained otherwise)")  # fmt: skip
    runtime = f"AOTInductor, torch {torch.__version__} ({_device_name(package.device)}, {package.dtype})"
    return Predictor(artifact, "aoti", runtime, run, prep, outputs, names, fixed_batch=fixed, notes=notes,
                     max_batch=package.max_batch, device=package.device)  # fmt: skip


_LOADERS = {
    "checkpoint": _load_checkpoint,
    "onnx": _load_onnx,
    "openvino": _load_openvino,
    "tensorrt": _load_tensorrt,
    "coreml": _load_coreml,
    "aoti": _load_aoti,
}


def _check_runtime_flags(artifact: Path, kind: str, device: str | None, dtype: str | None) -> None:
    """--device and --dtype choose how PyTorch runs a checkpoint or a .pt2; the other kinds run in their own
    runtime on the device and in the precision they were made for."""
    if device not in (None, *PREDICT_DEVICES):
        raise PredictError(f"--device {device}: must be one of {PREDICT_DEVICES}", flag="--device")
    if dtype not in (None, *PREDICT_DTYPES):
        raise PredictError(f"--dtype {dtype}: must be one of {PREDICT_DTYPES}", flag="--dtype")
    if kind in TORCH_KINDS:
        return
    if dtype is not None:
        raise PredictError(
            f"--dtype {dtype}: {artifact.name} ({kind}) computes in the precision it was exported in; --dtype is for "
            "checkpoints and .pt2 packages",
            flag="--dtype",
        )
    if kind == "tensorrt" and device == "cpu":
        raise PredictError(f"--device cpu: {artifact.name} is a TensorRT engine, which runs on the GPU only",
                           flag="--device")  # fmt: skip
    if kind != "tensorrt" and device == "cuda":
        raise PredictError(
            f"--device cuda: {artifact.name} ({kind}) runs on the CPU here; --device cuda is for checkpoints and "
            ".pt2 packages (a TensorRT engine for the GPU)",
            flag="--device",
        )


def load_predictor(
    artifact: str | os.PathLike,
    *,
    preprocessing: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    model: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Predictor:
    """Load any deployed form of a Next-ViT classifier for prediction.

    Args:
        artifact: a checkpoint (.pth/.safetensors), AOTInductor package (.pt2), ONNX model (fp32 or
            int8), OpenVINO IR (.xml), TensorRT engine (.trt/.engine/.plan, with TensorRT and a GPU)
            or CoreML model (macOS).
        preprocessing: settings over the recorded ones (`input_size`, `crop_pct`, `interpolation`,
            `mean`, `std`).
        class_names: names over the recorded ones, one per output.
        num_classes: the class count expected; an artifact with another is refused.
        model: the variant of a checkpoint (default: `nextvit.loading` decides from its records and weights).
        threads: CPU threads of ONNX Runtime / OpenVINO.
        device: "cpu", "cuda" or "auto" (CUDA where there is a GPU) for a checkpoint; a .pt2 runs on the
            device it was compiled for and refuses another. None: the CPU (a .pt2: its own device).
        dtype: "fp32", "fp16" or "bf16", what a checkpoint computes in (None: fp32); a .pt2 refuses
            any but its own. Other kinds refuse both but a device they run on.
    """
    artifact = Path(artifact)
    kind = artifact_kind(artifact)
    exists = artifact.is_dir() if artifact.suffix.lower() == ".mlpackage" else artifact.is_file()
    if not exists:
        raise PredictError(f"{artifact}: no such model file")
    _check_runtime_flags(artifact, kind, device, dtype)
    overrides = {k: v for k, v in (preprocessing or {}).items() if v is not None}
    if "input_size" in overrides:
        size = overrides["input_size"]
        try:
            overrides["input_size"] = image_size_hw(size if isinstance(size, int) else list(size), MIN_IMAGE_SIDE)
        except ConfigError as err:
            raise PredictError(f"--image-size {size}: {err}", flag="--image-size") from None
    return _LOADERS[kind](
        artifact,
        overrides=overrides,
        class_names=list(class_names) if class_names is not None else None,
        num_classes=num_classes,
        model=model,
        threads=threads,
        device=device,
        dtype=dtype,
    )
