"""scripts/gpu_check.sh: its arguments, skip lines, summary and archive, checked on the CPU.

On a machine without a GPU the script records its environment and skips every GPU step with a line
saying why; GPU_CHECK_ALLOW_CPU=1 runs the same steps at tiny sizes on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STEPS = ["cuda_tests", "bench_train", "bench_infer", "predict_cuda", "train_sh"]
RAN = re.compile(r"^(\w+) +exit (\d+) +(\d+)s")
no_gpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")


def gpu_check(*args, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    environment.update({"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env})
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=environment, timeout=timeout
    )


def summary(out: Path) -> dict[str, str]:
    """Step name -> the rest of its summary line."""
    lines = (out / "summary.txt").read_text().splitlines()
    return {line.split()[0]: line.split(None, 1)[1] for line in lines if not line.startswith("no CUDA")}


def archived(out: Path) -> list[str]:
    with tarfile.open(out / "gpu_check.tgz") as tar:
        return sorted(name.removeprefix("./") for name in tar.getnames() if name not in (".", "./"))


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["--dry"]])
def test_usage_errors_exit_2(argv):
    result = gpu_check(*argv)
    assert result.returncode == 2 and result.stderr.startswith("usage: bash scripts/gpu_check.sh OUTDIR")


def test_help_exits_0():
    result = gpu_check("--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_without_torch_nothing_runs(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    result = gpu_check(tmp_path / "out", PYTHON=str(fake))
    assert result.returncode == 1
    assert summary(tmp_path / "out") == {"all": "skipped: " + f"{fake} cannot import torch: nothing to check"}


@no_gpu_only
def test_without_a_gpu_every_gpu_step_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "out"
    result = gpu_check(out)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = summary(out)
    assert list(lines) == ["env", *STEPS]
    assert RAN.match("env " + lines["env"]).group(2) == "0"
    for step in STEPS:
        assert (
            lines[step] == "skipped: no CUDA device visible to torch (GPU_CHECK_ALLOW_CPU=1 runs the steps on the CPU)"
        )
    env_log = (out / "env.log").read_text()
    assert f"torch {torch.__version__}" in env_log and "GPU: none visible to torch" in env_log
    assert archived(out) == ["env.log", "summary.txt"]


def test_missing_timm_and_pytest_are_skipped_with_a_line(tmp_path):
    hidden = tmp_path / "hide"
    for name in ("timm", "pytest"):
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} hidden for this test')\n")
    out = tmp_path / "out"
    result = gpu_check(out, GPU_CHECK_PYTHONPATH=str(hidden), GPU_CHECK_ALLOW_CPU="1", GPU_CHECK_ONLY="env")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = summary(out)
    assert RAN.match("env " + lines.pop("env")).group(2) == "0"
    assert lines == {
        "cuda_tests": "skipped: pytest is not installed",
        "bench_train": "skipped: timm is not installed (it is the benchmark's reference)",
        "bench_infer": "skipped: not in GPU_CHECK_ONLY",
        "predict_cuda": "skipped: not in GPU_CHECK_ONLY",
        "train_sh": "skipped: timm is not installed (classification/main.py uses its data, mixup and optimizer code)",
    }
    assert "timm: not available (ImportError)" in (out / "env.log").read_text()


@pytest.mark.slow
def test_every_step_on_the_cpu_leaves_its_log_a_summary_line_and_the_archive(tmp_path):
    out = tmp_path / "out"
    result = gpu_check(out, GPU_CHECK_ALLOW_CPU="1", timeout=600)
    lines = summary(out)
    assert list(lines) == ["env", *STEPS], result.stdout
    for step, line in lines.items():
        match = RAN.match(f"{step} {line}")
        assert match and match.group(2) == "0", (step, line, (out / f"{step}.log").read_text()[-3000:])
    assert result.returncode == 0
    files = archived(out)
    for step in lines:
        assert f"{step}.log" in files
    expected = {"summary.txt", "benchmark_train_cpu.json", "benchmark_infer_cpu.json", "train_run/log.txt"}
    assert expected | {"predict_checkpoint.csv", "predict_pt2.csv", "predict_model.pt2.json"} <= set(files)
    assert not [f for f in files if f.endswith((".pth", ".safetensors"))]  # checkpoints stay out of the archive
    assert (out / "train_run" / "checkpoint.pth").is_file()
    assert "images/s per process, data wait" in (out / "train_sh.log").read_text()
