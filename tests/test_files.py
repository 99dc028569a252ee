"""nextvit.files: the one place files are written; a failed write leaves the old file and no temporary."""

from __future__ import annotations

import hashlib

import pytest
import torch

from nextvit.files import atomic_torch_save, atomic_write, atomic_write_bytes, replace_path, sha256_file, staging_folder


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_bytes(tmp_path / "model.bin", b"old")

    def crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_written_files_get_the_usual_permissions_and_folders_are_made(tmp_path):
    path = atomic_torch_save({"x": torch.arange(3)}, tmp_path / "deep" / "ckpt.pth")
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    assert path.stat().st_mode & 0o044  # readable by others under the default umask, not mkstemp's 0600


def test_replace_path_swaps_folders_whole(tmp_path):
    old = tmp_path / "model.mlpackage"
    old.mkdir()
    (old / "weights").write_text("old")
    with staging_folder(old) as staging:
        new = staging / old.name
        new.mkdir()
        (new / "weights").write_text("new")
        (new / "manifest").write_text("new")
        replace_path(new, old)
    assert sorted(p.name for p in old.iterdir()) == ["manifest", "weights"] and (old / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]  # no staging or old copy left


def test_sha256_file_reads_in_chunks(tmp_path):
    data = bytes(range(256)) * 5000
    path = atomic_write_bytes(tmp_path / "blob", data)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(data).hexdigest()
