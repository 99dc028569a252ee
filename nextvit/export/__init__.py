"""Exporting Next-ViT for deployment: what the scripts in `deployment/` share, one concern per file.

Every export follows the same steps:

1. `source`: load the checkpoint through `nextvit.loading` (any layout the package reads, matched by
   name and shape; the variant and input size from the flags, config.json, the checkpoint's metadata
   or its weights) and keep that eval-mode model as the reference; the model to export is a folded copy
   and, for dense tasks, a wrapper returning the four stage outputs (`BackboneFeatures`).
2. The exporter (`onnx`, `coreml`, `tensorrt` with `trtexec`, `openvino`, `quantize` for int8)
   writes its file atomically (`nextvit.files`): a crash never leaves a half-written model, and an
   existing file at the output path is replaced, never reused.
3. `verify.compare`: the result against the reference on the same input, the largest absolute
   difference and that difference relative to the largest reference value.
4. `record`: a JSON sidecar `<output>.json` says what was exported, how, and with what (its schema,
   version and atomic writing: `nextvit.records`).

`cli` is the command-line layer: the shared flags, and library errors (`errors.ExportError`,
which name parameters, not flags) reported under the script's flags with the shared exit codes:
0 success, 1 the export does not match PyTorch, 2 a usage error, 3 the toolchain is missing here.

This module imports torch and the package only; each exporter's toolkit is imported when used.
"""

from .cli import (
    FLAGS,
    HelpFormatter,
    add_bool_flag,
    add_image_reading_args,
    add_source_args,
    check_image_reading_args,
    check_image_size_flag,
    check_source_args,
    check_summary,
    cli_main,
    parse_bool,
    report_source,
    source_from_args,
)
from .errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, ExportError
from .onnx import (
    DEFAULT_OPSET,
    MIN_DYNAMO_OPSET,
    MIN_OPSET,
    check_opset,
    export_and_check_onnx,
    export_onnx,
    onnx_input,
    onnx_is_quantized,
    onnx_session,
    run_onnxruntime,
)
from .record import preprocessing, provenance, sidecar_path, source_record, write_sidecar
from .source import (
    FEATURE_NAMES,
    BackboneFeatures,
    ExportSource,
    default_stem,
    image_hw,
    load_source,
    source_from_model,
)
from .verify import compare

__all__ = [
    "EXIT_OK",
    "EXIT_CHECK_FAILED",
    "EXIT_USAGE",
    "EXIT_UNAVAILABLE",
    "ExportError",
    "FEATURE_NAMES",
    "ExportSource",
    "BackboneFeatures",
    "load_source",
    "source_from_model",
    "image_hw",
    "default_stem",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MIN_DYNAMO_OPSET",
    "check_opset",
    "export_onnx",
    "export_and_check_onnx",
    "onnx_input",
    "onnx_is_quantized",
    "onnx_session",
    "run_onnxruntime",
    "compare",
    "preprocessing",
    "provenance",
    "sidecar_path",
    "source_record",
    "write_sidecar",
    "FLAGS",
    "HelpFormatter",
    "check_image_size_flag",
    "add_bool_flag",
    "add_image_reading_args",
    "check_image_reading_args",
    "add_source_args",
    "check_source_args",
    "cli_main",
    "parse_bool",
    "source_from_args",
    "report_source",
    "check_summary",
]
