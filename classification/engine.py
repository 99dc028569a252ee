"""One training epoch and one evaluation pass, with progress output on rank 0."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterable

import torch
import torch.distributed as dist
from timm.utils import accuracy

__all__ = ["NonFiniteLossError", "Progress", "train_one_epoch", "evaluate"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class Progress:
    """A progress bar with ETA on a terminal; a line every `every` steps otherwise (logs, torchrun)."""

    def __init__(self, total: int, header: str, every: int = 10, enabled: bool = True, stream=None) -> None:
        self.total, self.header, self.every, self.enabled = total, header, max(1, every), enabled
        self.stream = stream or sys.stdout
        self.tty = self.enabled and self.stream.isatty()
        self.start = time.perf_counter()

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
) -> dict:
    """Train for one epoch; raise NonFiniteLossError (naming epoch and step) on a NaN/inf loss."""
    model.train()
    progress = Progress(len(loader), f"Epoch: [{epoch}]", print_freq, log_enabled)
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        with _autocast(device, amp_dtype):
            loss = criterion(model(images), targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss is {loss_value} at epoch {epoch}, step {step}: training stopped")
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
            model_ema.update(model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        loss_sum += loss_value * images.shape[0]
        seen += images.shape[0]
        progress.update(step, loss=loss_value, lr=optimizer.param_groups[0]["lr"])
    elapsed = time.perf_counter() - start
    mean_loss, images_per_s = _reduce_mean([loss_sum / max(1, seen), seen / elapsed], device)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return dict(loss=mean_loss, lr=optimizer.param_groups[0]["lr"], images_per_s=images_per_s * world, time=elapsed)


@torch.no_grad()
def evaluate(
    loader: Iterable,
    model: torch.nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    print_freq: int = 10,
    log_enabled: bool = True,
    distributed: bool = False,
) -> dict:
    """Top-1, top-5 and cross-entropy loss over the loader (summed over ranks when `distributed`)."""
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    progress = Progress(len(loader), "Test:", print_freq, log_enabled)
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for step, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            output = model(images)
        output = output.float()
        top1, top5 = accuracy(output, targets, topk=(1, min(5, output.shape[1])))
        n = images.shape[0]
        totals += torch.tensor(
            [criterion(output, targets).item(), top1.item() * n / 100, top5.item() * n / 100, n],
            dtype=torch.float64,
            device=device,
        )
        progress.update(step, acc1=100 * totals[1].item() / totals[3].item())
    if distributed and dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    loss, top1, top5, count = totals.tolist()
    return dict(loss=loss / count, acc1=100 * top1 / count, acc5=100 * top5 / count, images=int(count))
