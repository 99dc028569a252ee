"""One training epoch and one evaluation pass, with progress output on rank 0."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "DataWaitClock",
    "NonFiniteLossError",
    "Progress",
    "distributed_eval_share",
    "evaluate",
    "to_model_input",
    "train_one_epoch",
    "unwrap_model",
]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class Progress:
    """A progress bar with ETA on a terminal; a line every `every` steps otherwise (logs, torchrun)."""

    def __init__(self, total: int, header: str, every: int = 10, enabled: bool = True, stream=None) -> None:
        self.total, self.header, self.every, self.enabled = total, header, max(1, every), enabled
        self.stream = stream or sys.stdout
        self.tty = self.enabled and self.stream.isatty()
        self.start = time.perf_counter()

    def due(self, step: int) -> bool:
        """Whether `step` gets a line of its own: callers read values back from the GPU only then."""
        done = step + 1
        return self.enabled and (done % self.every == 0 or done == self.total)

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        done = step + 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        text = "  ".join(f"{k}: {v:.4g}" for k, v in values.items())
        if self.tty:
            width = 24
            filled = int(width * done / self.total)
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if done == self.total else ""
            self.stream.write(f"\r{self.header} [{bar}] {done}/{self.total} eta {_hms(eta)}  {text}{end}")
            self.stream.flush()
        elif done % self.every == 0 or done == self.total:
            print(f"{self.header} [{done}/{self.total}] eta {_hms(eta)}  {text}", file=self.stream, flush=True)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A loader batch on the device (an asynchronous copy from pinned memory), in the model's memory format.

    The layout is changed on the device, after the copy: the host keeps the loader's plain NCHW
    batch and the conversion is one fast kernel on the GPU.
    """
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner


class DataWaitClock:
    """Seconds spent blocked on the loader (creating its iterator included): the time the model waited for data.

    Measured on the host without synchronising with the GPU: while the GPU is the bottleneck the
    host runs ahead and the wait stays near zero; when the loader is, the wait grows.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def iterate(self, loader: Iterable):
        start = time.perf_counter()
        batches = iter(loader)
        self.seconds += time.perf_counter() - start
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield batch


def _reduce_mean(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    clip_grad: float | None = None,
    mixup_fn=None,
    model_ema=None,
    print_freq: int = 10,
    log_enabled: bool = True,
    channels_last: bool = False,
    cudagraph_steps: bool = False,
) -> dict:
    """Train for one epoch; raise NonFiniteLossError (naming epoch and step) on a NaN/inf loss.

    The loop never waits for the GPU: losses are summed on the device and read back only at
    logging steps and at the end of the epoch, where a non-finite loss is also caught (so within
    `print_freq` steps of the one that produced it, which the error names). The one exception is
    the first step, timed to its end (one synchronisation per epoch): it holds cuDNN's autotuning
    and torch.compile's compilation.

    `model` may be compiled (torch.compile) and wrapped in DistributedDataParallel; the EMA is
    updated from the plain module. `channels_last`: each batch is converted on the device, after
    mixup. `cudagraph_steps`: mark each step's start for torch.compile's CUDA graphs
    (reduce-overhead, max-autotune), whose outputs are reused by the next step.

    Returns the mean loss, the lr, images/s (all processes, and per process), the fraction of the
    epoch spent waiting for data (mean over processes), the epoch's seconds and the first step's.
    """
    model.train()
    progress = Progress(len(loader), f"Epoch: [{epoch}]", print_freq, log_enabled)
    # on the device: loss sum, first non-finite step (-1: none yet), the loss there
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    bad_step = torch.full((), -1, dtype=torch.float64, device=device)
    bad_loss = torch.zeros((), dtype=torch.float64, device=device)
    ema_source = unwrap_model(model) if model_ema is not None else None
    wait = DataWaitClock()
    seen, total, first_step = 0, 0.0, 0.0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(wait.iterate(loader)):
        step_start = time.perf_counter() if step == 0 else 0.0
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if cudagraph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        with _autocast(device, amp_dtype):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        if model_ema is not None:
            model_ema.update(ema_source)
        if step == 0:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - step_start
        value = loss.detach().double()
        first_bad = (bad_step < 0) & ~torch.isfinite(value)
        bad_step = torch.where(first_bad, float(step), bad_step)
        bad_loss = torch.where(first_bad, value, bad_loss)
        loss_sum += value * images.shape[0]
        seen += images.shape[0]
        if (step + 1) % max(1, print_freq) == 0 or step + 1 == len(loader):  # the same steps on every rank
            # one read-back (it waits for the GPU); the last step's also ends the epoch's timing
            last, total, bad_at, bad_value = torch.stack([value, loss_sum, bad_step, bad_loss]).tolist()
            _raise_if_non_finite(bad_at, bad_value, epoch)
            progress.update(step, loss=last, avg=total / seen, lr=optimizer.param_groups[0]["lr"])
    elapsed = time.perf_counter() - start
    mean_loss, images_per_s, data_wait = _reduce_mean(
        [total / max(1, seen), seen / elapsed, wait.seconds / elapsed], device
    )
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return dict(
        loss=mean_loss,
        lr=optimizer.param_groups[0]["lr"],
        images_per_s=images_per_s * world,
        images_per_s_per_process=images_per_s,
        data_wait=data_wait,
        time=elapsed,
        first_step_time=first_step,
        steps=len(loader),
    )


def _raise_if_non_finite(bad_step: float, bad_loss: float, epoch: int) -> None:
    if bad_step >= 0:
        raise NonFiniteLossError(f"loss is {bad_loss} at epoch {epoch}, step {int(bad_step)}: training stopped")


def distributed_eval_share(dataset_size: int, num_replicas: int, rank: int) -> int:
    """How many of the samples a DistributedSampler (drop_last=False) gives `rank` are real ones.

    The sampler pads the index list to a multiple of the world size with indices from its start;
    the padded positions, global position >= dataset_size, are the last ones of the ranks that
    get them (rank r holds global positions r, r + world, ...). Counting only the first
    `distributed_eval_share(...)` samples of each rank counts every image exactly once.
    """
    return len(range(rank, dataset_size, num_replicas))


@torch.no_grad()
def evaluate(
    loader: Iterable,
    model: torch.nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    print_freq: int = 10,
    log_enabled: bool = True,
    distributed: bool = False,
    count_first: int | None = None,
    channels_last: bool = False,
) -> dict:
    """Top-1, top-5 and cross-entropy loss over the loader (summed over ranks when `distributed`).

    `count_first`: count only this many leading samples of the loader (the rest are a distributed
    sampler's padding, see `distributed_eval_share`). Sums stay on the device until the end.
    `channels_last`: batches are converted on the device, for a model in that memory format.
    """
    model.eval()
    progress = Progress(len(loader), "Test:", print_freq, log_enabled)
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    offset = 0
    for step, (images, targets) in enumerate(loader):
        n = images.shape[0]
        keep = n if count_first is None else max(0, min(n, count_first - offset))
        offset += n
        if keep == 0:
            continue  # padding only: nothing to count
        images = to_model_input(images[:keep], device, channels_last)
        targets = targets[:keep].to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            output = model(images)
        output = output.float()
        k = min(5, output.shape[1])
        top = output.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        loss = torch.nn.functional.cross_entropy(output, targets, reduction="sum")
        totals += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.sum().double(), totals.new_tensor(keep)])
        if progress.due(step) or step + 1 == len(loader):
            top1, count = totals[1].item(), totals[3].item()
            progress.update(step, acc1=100 * top1 / max(1.0, count))
    if distributed and dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    loss, top1, top5, count = totals.tolist()
    denominator = max(1.0, count)
    return dict(
        loss=loss / denominator, acc1=100 * top1 / denominator, acc5=100 * top5 / denominator, images=int(count)
    )
