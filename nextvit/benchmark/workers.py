"""Process isolation: each (model, mode, dtype) in a worker process of its own, which sleeps while
another is timed, so that no runtime's thread pool competes with the one being measured."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .runners import Timed, base_name, build_model, make_timed, output_cosine

__all__ = ["WorkerTimed", "start_worker"]


def _worker(conn, spec: str, mode: str, dtype: str, size: int, batch: int, workdir: str, device: str,
            threads: int | None, warmup: int) -> None:  # fmt: skip
    """A worker process: build one (model, mode, dtype), warm it, then time calls when asked."""
    try:
        if threads:
            torch.set_num_threads(threads)
        shared = build_model(base_name(spec)).state_dict() if spec.startswith("timm:nextvit") else None
        model = build_model(spec, shared)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size * 1000 + batch))
        timed = make_timed(spec, model, mode, dtype, x, Path(workdir), device)
        timed.warm(1 + warmup + (2 if mode == "compile" else 0))
        conn.send(("ready", output_cosine(timed, model, x)))
    except Exception as err:  # noqa: BLE001 - reported by the parent
        conn.send(("error", f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"))
        return
    while True:
        command, count = conn.recv()
        if command == "stop":
            return
        timed.times = []
        for _ in range(count):
            timed.time_once()
        conn.send(timed.times)


class WorkerTimed:
    """A `Timed` whose model lives in a worker process: `time_once` asks it for one timed call."""

    def __init__(self, name: str, process, conn, cosine: float | None = None) -> None:
        self.name, self.process, self.conn = name, process, conn
        self.times: list[float] = []
        self.cosine = cosine

    def time_once(self) -> None:
        self.conn.send(("time", 1))
        self.times += self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop", 0))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()

    summary = Timed.summary


def start_worker(spec: str, mode: str, dtype: str, size: int, batch: int, workdir: Path, *, device: str = "cpu",
                 threads: int | None = None, warmup: int = 5) -> WorkerTimed:  # fmt: skip
    """Start a worker for one (model, mode, dtype) and wait until it is built and warm."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_worker, args=(child, spec, mode, dtype, size, batch, str(workdir), device,
                                                    threads, warmup), daemon=True)  # fmt: skip
    process.start()
    status, payload = parent.recv()
    if status != "ready":
        process.join(timeout=30)
        raise RuntimeError(payload)
    return WorkerTimed(spec, process, parent, cosine=payload)
