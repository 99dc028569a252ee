"""What an export's sidecar says of the model and of how it was made (`source_record`, `provenance`).

The sidecar's schema, its version and its atomic writing and checked reading are `nextvit.records`
(`write_sidecar`, `read_sidecar`); exporters build their record here and write it there.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..preprocess import Preprocessing
from ..records import preprocessing_block, sidecar_path, write_sidecar
from .source import ExportSource

__all__ = [
    "sidecar_path",  # from nextvit.records: exporters write their sidecars through this module
    "write_sidecar",
    "git_commit",
    "library_versions",
    "provenance",
    "preprocessing",
    "source_record",
]


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python and of the libraries that shape an export (those installed)."""
    import importlib.metadata

    from .. import __version__

    versions = {"python": platform.python_version(), "nextvit": __version__, "torch": torch.__version__}
    for name in ("numpy", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnxslim", *extra):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git_commit() -> str | None:
    """The short commit of the checkout this package runs from, or None (an installed copy, no git)."""
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
    return commit or None


def provenance(extra_libraries: Sequence[str] = ()) -> dict:
    """When, where and with what an export was made."""
    commit = git_commit()
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        platform=platform.platform(),
        machine=platform.machine(),
        versions=library_versions(extra_libraries),
        git_commit=commit or None,
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
    )


def preprocessing(source: ExportSource) -> dict:
    """How an image becomes the exported model's input (before anything baked into the model)."""
    if source.preprocessing is not None:
        return preprocessing_block(source.preprocessing)
    return preprocessing_block(Preprocessing(source.image_size), crop=False)


def source_record(source: ExportSource) -> dict:
    """The sidecar fields describing the model, its weights and its input and outputs."""
    return dict(
        model=source.name,
        task="features" if source.features else "classification",
        num_classes=source.num_classes,
        kv_pool=source.kv_pool,
        checkpoint=source.checkpoint,
        random_weights=source.checkpoint is None,
        folded=source.folded,
        input=dict(name=source.input_name, shape=list(source.input_shape), dtype="float32"),
        outputs=source.outputs_info(),
        preprocessing=preprocessing(source),
        class_names=source.class_names,
        decided_from=source.decided_from,
        notes=list(source.notes),
    )
