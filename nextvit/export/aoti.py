"""AOTInductor: a Next-ViT as one `.pt2` package, compiled ahead of time for the CPU or a CUDA GPU.

`torch.export` captures the folded model as a graph, and AOTInductor compiles that graph into a
shared library of C++ (CPU) or Triton (CUDA) kernels with the weights inside, packaged as one
`.pt2` file. Loading it needs torch (`torch._inductor.aoti_load_package`), neither this package's
model code nor a compiler, and calling it runs no Python per layer: on a GPU, where an eager batch
of 8 waits on Python's kernel launches, this is the deployable form that removes them (TensorRT
aside).

The package's interface is float32 whatever it computes in: a float32 NCHW batch of normalised
images in, float32 logits (or the four stage maps) out; the cast to `dtype` and back is compiled
in. It is checked against the eager float32 model as the other exporters are (float32: the largest
difference; fp16/bf16: the logits' per-sample cosine) and the sidecar `<file>.pt2.json` records the
input size, preprocessing, class names and provenance. The essentials (input shape, dtype,
normalisation, class names) are also stored in the package's own metadata, so a `.pt2` copied without
its sidecar still says what it takes. A package runs on the kind of device it was compiled for, with
the same torch version (AOTInductor's format is not stable across versions).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..files import replace_path, sha256_file, staging_folder
from .errors import EXIT_UNAVAILABLE, EXIT_USAGE, ExportError
from .record import provenance, source_record
from .source import ExportSource
from .verify import compare, compare_cosine

__all__ = [
    "AOTI_DTYPES",
    "AOTI_DEVICES",
    "MAX_DYNAMIC_BATCH",
    "METADATA_KEY",
    "CastedModel",
    "require_device",
    "export_program",
    "compile_package",
    "load_package",
    "package_metadata",
    "check_package",
    "export_and_check_aoti",
]

AOTI_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AOTI_DEVICES = ("cpu", "cuda")
MAX_DYNAMIC_BATCH = 1024  # the largest batch a dynamic-batch package accepts
METADATA_KEY = "nextvit"  # the package metadata entry holding the input description (a JSON string)


class CastedModel(nn.Module):
    """`module` computing in `dtype` behind a float32 interface: callers never convert."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor):
        out = self.module(x.to(self.dtype))
        if isinstance(out, (tuple, list)):
            return tuple(o.float() for o in out)
        return out.float()


def require_device(device: str) -> None:
    """Refuse a device this machine lacks (exit code 3), or one AOTInductor does not compile for (2)."""
    if device not in AOTI_DEVICES:
        raise ExportError(f"must be one of {AOTI_DEVICES}", EXIT_USAGE, param="device", value=device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("no CUDA device here: a CUDA package is compiled on the GPU it targets", EXIT_UNAVAILABLE,
                          param="device", value=device)  # fmt: skip


def export_program(module: nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    """`torch.export` of an eval-mode module on `example` (its device and dtype), the batch left free
    (1 to MAX_DYNAMIC_BATCH) when `dynamic_batch`. A batch of 1 is traced as 2 there: torch.export
    takes a dimension of size 1 for a constant and refuses to leave it free."""
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
    if dynamic_batch and example.shape[0] == 1:
        example = example.expand(2, *example.shape[1:]).contiguous()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch-internal pytree notices
        return torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic_shapes, strict=False)


def compile_package(program, output: str | os.PathLike, metadata: dict[str, str] | None = None,
                    inductor_configs: dict | None = None) -> Path:  # fmt: skip
    """Compile an exported program with AOTInductor into `output` (.pt2), atomically: it is built in a
    folder beside the target and moved in when complete. `metadata` (strings) is stored in the package."""
    output = Path(output)
    configs = dict(inductor_configs or {})
    if metadata:
        configs["aot_inductor.metadata"] = dict(metadata)
    with staging_folder(output) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        built = torch._inductor.aoti_compile_and_package(
            program, package_path=str(tmp / output.name), inductor_configs=configs
        )
        replace_path(built, output)
    return output


def load_package(path: str | os.PathLike, device: str = "cpu") -> Callable:
    """The compiled model of a `.pt2` package: call it with a float32 batch on `device`."""
    require_device(device)
    if not Path(path).is_file():
        raise ExportError("no such file", EXIT_USAGE, param="output", value=str(path))
    return torch._inductor.aoti_load_package(str(path))


def package_metadata(source: ExportSource, device: str, dtype: str, dynamic_batch: bool) -> dict[str, str]:
    """What a `.pt2` carries about its input, in its own metadata: enough to feed it without the sidecar."""
    prep = source.preprocessing
    info = dict(
        model=source.name,
        task="features" if source.features else "classification",
        device=device,
        dtype=dtype,
        input=dict(shape=list(source.input_shape), dtype="float32", layout="NCHW", dynamic_batch=dynamic_batch),
        mean=list(prep.mean) if prep else None,
        std=list(prep.std) if prep else None,
        outputs=source.output_names,
        class_names=source.class_names,
    )
    return {METADATA_KEY: json.dumps(info)}


@contextlib.contextmanager
def _tf32_off() -> Iterator[None]:
    """cuDNN convolutions in float32 use TF32 by default: off for a float32 check against the CPU."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _outputs(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def check_package(runner: Callable, source: ExportSource, device: str, dtype: str, dynamic_batch: bool, *,
                  atol: float | None, rtol: float | None, min_cosine: float) -> dict:  # fmt: skip
    """A loaded package against the eager float32 reference on the same inputs, at the export batch and,
    with `dynamic_batch`, at a batch two larger (see `export_and_check_aoti` for the criteria)."""
    batches = [source.input_shape[0]] + ([source.input_shape[0] + 2] if dynamic_batch else [])
    checks = []
    for batch in batches:
        x = source.example_input(batch)
        with torch.no_grad(), _tf32_off():
            got = [o.float().cpu() for o in _outputs(runner(x.to(device)))]
        refs = source.reference_outputs(x)
        if dtype == "fp32":
            tol = 1e-4 if device == "cpu" else 1e-3
            result = compare(got, refs, tol if atol is None else atol, tol if rtol is None else rtol)
            checks.append(dict(batch=batch, kind="max difference", **result))
        else:
            checks.append(dict(batch=batch, **compare_cosine(got, refs, min_cosine)))
    check = dict(
        runtime=f"AOTInductor ({device})",
        reference="the PyTorch eval-mode model as loaded, float32, CPU",
        input="ImageNet-normalised uniform random pixels, seed 0",
        batches=batches,
        passed=all(c["passed"] for c in checks),
        per_batch=checks,
    )
    if dtype == "fp32":
        check.update(max_abs_diff=max(c["max_abs_diff"] for c in checks), atol=checks[0]["atol"],
                     rtol=checks[0]["rtol"])  # fmt: skip
        if device == "cuda":
            check["tf32"] = "off during the check"
    else:
        check.update(cosine_min=min(c["cosine_min"] for c in checks), min_cosine=min_cosine)
    return check


def export_and_check_aoti(
    source: ExportSource,
    output: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    dynamic_batch: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float = 0.999,
    log: Callable[[str], None] = print,
) -> dict:
    """Export `source` (its folded module) to an AOTInductor package at `output` for `device` in
    `dtype`, load it back, and check it against the eager float32 reference on the CPU (float32:
    within atol + rtol * max|reference|, default 1e-4 each on the CPU and 1e-3 on CUDA, checked with
    TF32 off; fp16/bf16: the logits' per-sample cosine >= `min_cosine`). With `dynamic_batch` the
    check also runs a batch two larger. Returns the sidecar record (not written)."""
    output = Path(output)
    if output.suffix != ".pt2":
        raise ExportError("an AOTInductor package is a .pt2 file", EXIT_USAGE, param="output", value=str(output))
    if dtype not in AOTI_DTYPES:
        raise ExportError(f"must be one of {sorted(AOTI_DTYPES)}", EXIT_USAGE, param="dtype", value=dtype)
    require_device(device)
    module = CastedModel(copy.deepcopy(source.deploy), AOTI_DTYPES[dtype]).to(device).eval()
    example = source.example_input().to(device)
    batch_note = f", dynamic batch 1-{MAX_DYNAMIC_BATCH}" if dynamic_batch else ""
    log(f"exporting {source.name} {list(source.input_shape)} for {device} in {dtype}{batch_note} (torch.export)")
    started = time.perf_counter()
    program = export_program(module, example, dynamic_batch)
    exported_s = time.perf_counter() - started
    log("compiling with AOTInductor (a minute or more: C++/Triton kernels are generated and built)")
    compile_package(program, output, package_metadata(source, device, dtype, dynamic_batch))
    compiled_s = time.perf_counter() - started - exported_s
    del program, module

    check = check_package(load_package(output, device), source, device, dtype, dynamic_batch,
                          atol=atol, rtol=rtol, min_cosine=min_cosine)  # fmt: skip
    return dict(
        format="aoti-pt2",
        output=output.name,
        output_sha256=sha256_file(output),
        device=device,
        dtype=dtype,
        dynamic_batch=dynamic_batch,
        max_batch=MAX_DYNAMIC_BATCH if dynamic_batch else source.input_shape[0],
        **source_record(source),
        load=dict(
            call="torch._inductor.aoti_load_package(path)",
            device=device,
            metadata_key=METADATA_KEY,
            note="input: float32 NCHW on the package's device; the cast to dtype is inside",
        ),  # fmt: skip
        export_s=round(exported_s, 1),
        compile_s=round(compiled_s, 1),
        check=check,
        **provenance(),
    )
