"""ONNX export with either of torch's exporters, checked with ONNX Runtime; ONNX Runtime sessions."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write_bytes, sha256_file
from ..preprocess import Preprocessing
from .errors import EXIT_UNAVAILABLE, EXIT_USAGE, ExportError
from .record import provenance, source_record
from .source import ExportSource
from .verify import compare

__all__ = [
    "MIN_OPSET",
    "MIN_DYNAMO_OPSET",
    "DEFAULT_OPSET",
    "check_opset",
    "export_onnx",
    "export_and_check_onnx",
    "onnx_opset",
    "onnx_input",
    "onnx_is_quantized",
    "onnx_session",
    "run_onnxruntime",
    "simplify_onnx",
]

MIN_OPSET = 14  # scaled_dot_product_attention has an ONNX symbolic from opset 14
MIN_DYNAMO_OPSET = 18  # the dynamo exporter's lowest opset (ReduceMean with axes as an input)
DEFAULT_OPSET = 17


def check_opset(opset: int, exporter: str) -> None:
    if opset < MIN_OPSET:
        raise ExportError(
            f"Next-ViT's attention (scaled_dot_product_attention) exports from opset {MIN_OPSET} on",
            EXIT_USAGE,
            param="opset",
            value=opset,
        )
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise ExportError(
            f"the dynamo exporter starts at opset {MIN_DYNAMO_OPSET}; "
            f"the torchscript exporter covers opsets {MIN_OPSET}-{MIN_DYNAMO_OPSET - 1}",
            EXIT_USAGE,
            param="opset",
            value=opset,
        )


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    dynamic_batch: bool = False,
    input_name: str = "input",
    output_names: Sequence[str] = ("logits",),
):
    """Export to an in-memory `onnx.ModelProto` with either of torch's exporters.

    `torchscript` is `torch.onnx.export(..., dynamo=False)` (tracing; opsets 14+); `dynamo` is the
    torch.export-based exporter (opsets 18+). Both keep the weights inside the model (no external
    data file, which would not survive the rename of an atomic write).
    """
    import onnx

    check_opset(opset, exporter)
    module = module.eval()
    output_names = list(output_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch-internal pytree notices (dynamo)
        if exporter == "torchscript":
            buffer = io.BytesIO()
            dynamic_axes = None
            if dynamic_batch:
                dynamic_axes = {name: {0: "batch"} for name in [input_name, *output_names]}
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
            proto = onnx.load_from_string(buffer.getvalue())
        elif exporter == "dynamo":
            dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
            proto = program.model_proto
        else:
            raise ExportError("must be 'torchscript' or 'dynamo'", EXIT_USAGE, param="exporter", value=exporter)
    return proto


def onnx_opset(proto) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def simplify_onnx(proto) -> tuple[object, dict]:
    """Simplify with onnxsim or onnxslim when one is installed (neither is required)."""
    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None:
        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified, dict(tool="onnxsim", version=getattr(onnxsim, "__version__", None))
        return proto, dict(tool=None, note="onnxsim could not validate its result: the unsimplified model is kept")
    try:
        import onnxslim
    except ImportError:
        return proto, dict(tool=None, note="not simplified: neither onnxsim nor onnxslim is installed")
    return onnxslim.slim(proto), dict(tool="onnxslim", version=getattr(onnxslim, "__version__", None))


def onnx_session(path: str | os.PathLike, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session on the CPU or a CUDA device, refusing a silent fall-back to the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX Runtime is not installed here: pip install onnxruntime", EXIT_UNAVAILABLE) from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise ExportError(f"this onnxruntime has no {provider} (it would fall back silently)", EXIT_UNAVAILABLE)
    provider_options = {"device_id": torch.cuda.current_device()} if device == "cuda" else {}
    return ort.InferenceSession(str(path), options, providers=[(provider, provider_options)])


def run_onnxruntime(path: str | os.PathLike, x: torch.Tensor, input_name: str = "input") -> list:
    """Run an ONNX file once on the CPU, with as many threads as torch uses."""
    return onnx_session(path, torch.get_num_threads()).run(None, {input_name: x.numpy()})


def onnx_input(path: str | os.PathLike) -> tuple[str, list[int | None]]:
    """Name and dimensions (None where symbolic) of an ONNX model's first input."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    return graph_input.name, dims


def onnx_is_quantized(path: str | os.PathLike) -> bool:
    """Whether an ONNX model holds QuantizeLinear/DequantizeLinear nodes (a QDQ int8 model)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def _add_metadata(proto, source: ExportSource) -> None:
    """The model's name, task, normalisation and weights, readable by any ONNX tool."""
    prep = source.preprocessing or Preprocessing(source.image_size)
    meta = {
        "nextvit.model": source.name,
        "nextvit.task": "features" if source.features else "classification",
        "nextvit.mean": json.dumps(list(prep.mean)),
        "nextvit.std": json.dumps(list(prep.std)),
        "nextvit.folded": str(source.folded).lower(),
        "nextvit.checkpoint_sha256": (source.checkpoint or {}).get("sha256", "random weights"),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"Next-ViT {source.name} ({meta['nextvit.task']}), exported by nextvit.export"


def export_and_check_onnx(
    source: ExportSource,
    output: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    dynamic_batch: bool = False,
    simplify: bool = True,
    atol: float | None = 1e-4,
    rtol: float | None = 1e-4,
    log: Callable[[str], None] = print,
) -> dict:
    """Export `source` to `output` (atomically, always re-exporting) and check it with ONNX Runtime
    against the PyTorch reference. Returns the sidecar record (not written: `write_sidecar`); its
    `check.passed` is False when the difference is above tolerance (the file is still written, so
    it can be inspected)."""
    output = Path(output)
    check_opset(opset, exporter)
    what = "features" if source.features else "classifier"
    batch_note = ", dynamic batch" if dynamic_batch else ""
    log(f"exporting {source.name} {what} {list(source.input_shape)} with the {exporter} exporter, opset {opset}"
        f"{batch_note}")  # fmt: skip
    proto, simplified = _exported_proto(source, opset, exporter, dynamic_batch, simplify)
    atomic_write_bytes(output, proto.SerializeToString())
    check = _check_with_onnxruntime(source, output, dynamic_batch, atol, rtol)
    record = dict(
        format="onnx",
        output=output.name,
        output_sha256=sha256_file(output),
        **source_record(source),
        exporter=f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        opset=onnx_opset(proto),
        dynamic_batch=dynamic_batch,
        simplifier=simplified,
        onnx_ops=sorted({node.op_type for node in proto.graph.node}),
        check=check,
        **provenance(),
    )
    verdict = "passed" if check["passed"] else "FAILED"
    log(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB)")
    log(
        f"check with ONNX Runtime {verdict}: max abs diff {check['max_abs_diff']:.3g}, "
        f"max rel diff {check['max_rel_diff']:.3g} (atol {atol}, rtol {rtol}, batches {check['batches']})"
    )
    return record


def _exported_proto(source: ExportSource, opset: int, exporter: str, dynamic_batch: bool, simplify: bool):
    """Step 1: the checked, optionally simplified ONNX model with its metadata, and how it was simplified."""
    import onnx

    proto = export_onnx(
        source.deploy,
        source.example_input(),
        opset=opset,
        exporter=exporter,
        dynamic_batch=dynamic_batch,
        input_name=source.input_name,
        output_names=source.output_names,
    )
    actual_opset = onnx_opset(proto)
    if actual_opset != opset:
        raise ExportError(f"the {exporter} exporter produced opset {actual_opset}, not the requested {opset}")
    simplified = dict(tool=None, note="disabled (simplify=False)")
    if simplify:
        proto, simplified = simplify_onnx(proto)
    onnx.checker.check_model(proto)
    if source.folded and any(node.op_type == "BatchNormalization" for node in proto.graph.node):
        raise ExportError("the folded model still exports BatchNormalization nodes")
    _add_metadata(proto, source)
    return proto, simplified


def _check_with_onnxruntime(source: ExportSource, output: Path, dynamic_batch: bool, atol, rtol) -> dict:
    """Step 2: the written file against the PyTorch reference, at the export batch (and a larger one)."""
    batches = [source.input_shape[0]]
    if dynamic_batch:
        batches.append(source.input_shape[0] + 2)
    checks = []
    for batch in batches:
        x = source.example_input(batch)
        outputs = run_onnxruntime(output, x, source.input_name)
        checks.append(dict(batch=batch, **compare(outputs, source.reference_outputs(x), atol, rtol)))
    return dict(
        runtime="onnxruntime (CPUExecutionProvider)",
        reference="the PyTorch eval-mode model as loaded, float32, CPU",
        input="normalised uniform random pixels, seed 0",
        batches=batches,
        max_abs_diff=max(c["max_abs_diff"] for c in checks),
        max_rel_diff=max(c["max_rel_diff"] for c in checks),
        atol=atol,
        rtol=rtol,
        passed=all(c["passed"] for c in checks),
        per_batch=checks,
    )
