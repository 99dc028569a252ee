"""Writing files so that a crash never leaves a half-written one.

Every file the package writes as a result goes through these: checkpoints, exported models, their
sidecars and run records (`nextvit.records`), the benchmark's JSON, CSV, Markdown and chart
(`nextvit.benchmark.report`), the dense-task demo's outputs. Prediction results
(`nextvit.predict.ResultWriter`) are atomic in the same way, by their own route: written row by row
to a hidden partial file that is renamed onto its name when the run completes. The one exception is
the generated datasets of `nextvit.synthetic`, written image by image into a folder of their own:
regenerate the folder after an interrupted run.

A file is written to a temporary name in the destination folder and renamed over the target (a
rename within one file system is atomic). A folder (a CoreML .mlpackage, an OpenVINO IR pair) is
built in a temporary folder beside the target and then moved into place by `replace_path`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_torch_save", "replace_path", "staging_folder", "sha256_file"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """`torch.save` to `path` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def replace_path(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a finished file or folder onto `target`, replacing what is there.

    A file replaces a file atomically; where a folder is involved the two are swapped with two
    renames, so `target` is always either the old or the new one, never a mixture.
    """
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or not (new.is_dir() or target.is_dir()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def staging_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `target` (same file system, so the final moves are renames),
    removed with whatever is left in it when the block ends."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        yield Path(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
