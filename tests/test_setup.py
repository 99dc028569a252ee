"""scripts/setup_env.sh: the install is redone when torch's view of the machine (CPU or CUDA) changes.

mmcv's ops are compiled for CUDA only where torch sees a GPU; an install stamp that ignored this
kept CPU-only NMS/RoIAlign on GPU machines. Nothing is installed here: the script's up-to-date
check runs against a scratch venv folder, with the flavour given through NEXTVIT_FLAVOUR.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup_env.sh"


def setup(venv: Path, flavour: str, *args: str, python: str = "python3") -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(venv), NEXTVIT_FLAVOUR=flavour, PYTHON=python)
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=env, timeout=60)


def test_install_stamp_depends_on_cpu_or_cuda(tmp_path):
    venv = tmp_path / "venv"
    digests = {flavour: setup(venv, flavour, "--print-digest").stdout.strip() for flavour in ("cpu", "cuda")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests.values()), digests
    assert digests["cpu"] != digests["cuda"]

    venv.mkdir()
    (venv / ".nextvit-setup").write_text(digests["cpu"] + "\n")  # installed on a CPU-only machine
    same = setup(venv, "cpu")
    assert same.returncode == 0 and same.stdout == "" and same.stderr == ""  # up to date: returns at once
    # on a GPU machine the same venv is stale; `false` as Python stops the install at its first step
    gpu = setup(venv, "cuda", python="false")
    assert gpu.returncode != 0 and f"[setup] creating {venv}" in gpu.stdout
    assert sorted(p.name for p in venv.iterdir()) == [".nextvit-setup"]
