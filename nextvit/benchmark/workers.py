"""Process isolation: each (model, mode, dtype) in a worker process of its own, which sleeps while
another is timed, so that no runtime's thread pool competes with the one being measured."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .runners import DEFAULT_COMPILE_MODE, Timed, base_name, build_model, prepare_timed

__all__ = ["WorkerTimed", "start_worker"]


def _worker(conn, spec: str, mode: str, dtype: str, size: int, batch: int, workdir: str, device: str,
            threads: int | None, warmup: int, compile_mode: str) -> None:  # fmt: skip
    """A worker process: build one (model, mode, dtype), warm it, then time calls when asked."""
    try:
        if threads:
            torch.set_num_threads(threads)
        shared = build_model(base_name(spec)).state_dict() if spec.startswith("timm:nextvit") else None
        model = build_model(spec, shared)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size * 1000 + batch))
        timed = prepare_timed(spec, model, mode, dtype, x, Path(workdir), device, warmup, compile_mode)
        conn.send(("ready", dict(cosine=timed.cosine, prepare_s=timed.prepare_s, note=timed.note,
                                 cuda_events=timed.cuda_events)))  # fmt: skip
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

    def __init__(self, name: str, process, conn, cosine: float | None = None, prepare_s: float | None = None,
                 note: str | None = None, cuda_events: bool = False) -> None:  # fmt: skip
        self.name, self.process, self.conn = name, process, conn
        self.times: list[float] = []
        self.cosine, self.prepare_s, self.note, self.cuda_events = cosine, prepare_s, note, cuda_events

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
                 threads: int | None = None, warmup: int = 5,
                 compile_mode: str = DEFAULT_COMPILE_MODE) -> WorkerTimed:  # fmt: skip
    """Start a worker for one (model, mode, dtype) and wait until it is built and warm."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_worker, args=(child, spec, mode, dtype, size, batch, str(workdir), device,
                                                    threads, warmup, compile_mode), daemon=True)  # fmt: skip
    process.start()
    status, payload = parent.recv()
    if status != "ready":
        process.join(timeout=30)
        raise RuntimeError(payload)
    return WorkerTimed(spec, process, parent, **payload)
