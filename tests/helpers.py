"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def randomize_and_calibrate(model: nn.Module, size: int = 96, seed: int = 0, steps: int = 3) -> nn.Module:
    """Random BN affine parameters, then BN statistics calibrated on random images.

    The init values (weight 1, bias 0, mean 0, var 1) hide folding mistakes; calibrated statistics
    also keep activations in a sane range through the whole depth, so outputs are informative.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(steps):
        model(torch.randn(4, 3, size, size, generator=gen))
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


_next_port = [29300 + os.getpid() % 300]


def run_launcher(folder: Path, script: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a task folder's dist_*.sh with this interpreter on a fresh port; fail with its output."""
    _next_port[0] += 1
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_next_port[0]), OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(folder / script), *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=folder, timeout=timeout)  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "classification" / "train.sh"
_port = [29700 + os.getpid() % 200]


def next_port() -> str:
    """A rendezvous port of its own for each launched run (runs of one test session never share one)."""
    _port[0] += 1
    return str(_port[0])


def run_train(nproc: int, *args, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """`bash classification/train.sh NPROC ARGS...` on one thread per process; its output on failure."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=next_port(), OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", str(TRAIN_SH), str(nproc), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO / "classification",
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.sh failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result
