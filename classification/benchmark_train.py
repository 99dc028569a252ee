"""Training-step throughput: this package's nextvit_small against timm's (and, on a GPU, ResNet-50), in one run.

    python classification/benchmark_train.py --output logs/benchmark_train_cpu.json   # CPU, fp32
    python classification/benchmark_train.py --modes fp32 fp32-cl                      # CPU: NCHW and channels_last
    python classification/benchmark_train.py --device cuda --output logs/benchmark_train_cuda.json

A step is forward + backward + AdamW step with the recipe's loss (soft-target cross entropy). The
models (ours and timm's port, with the same weights; peers from timm with random weights) are
stepped in alternation so all see the same machine state, after warm-up steps that are not timed
(the first of them holds cuDNN's autotuning and torch.compile's compilation, and is reported on
its own); the median images/s and the ratio to timm's port are printed.

A mode names the precision, then options: `fp32`, `fp16` or `bf16` (autocast; fp16 with a grad
scaler, CUDA only), `-cl` for a channels_last model and input, `-compile` for torch.compile (the
forward, and through it the backward), e.g. `fp16-cl-compile`.

CPU (defaults: batch 32, 64x64 and 224x224, mode fp32, ours and timm's): plain AdamW, no gradient
clipping, wall-clock timing. Peak memory is measured for each model alone, in a fresh process (its
peak resident set).

CUDA (defaults: batch 128, 224x224, modes fp16 fp16-cl fp16-cl-compile bf16 bf16-cl, ours, timm's and
timm's resnet50): the trainer's step on a GPU, fused AdamW and gradient clipping at 5, timed with
CUDA events. Peak memory is torch.cuda.max_memory_allocated over the model's own build and warm-up
(weights, optimizer state, gradients, activations), counted from before it was built. Results are
written after every mode, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.loss import SoftTargetCrossEntropy

import nextvit
from nextvit.files import atomic_write

AMPS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
OPTIONS = ("cl", "compile")
# defaults per device: (batch, sizes, steps, warm-up steps, modes, peers)
DEFAULTS = {
    "cpu": (32, [64, 224], 10, 2, ["fp32"], []),
    "cuda": (128, [224], 30, 5, ["fp16", "fp16-cl", "fp16-cl-compile", "bf16", "bf16-cl"], ["resnet50"]),
}
CUDA_CLIP_GRAD = 5.0  # the recipe's --clip-grad


@dataclass(frozen=True)
class Mode:
    """A precision (fp32, fp16, bf16) with channels_last and torch.compile switched on or off."""

    name: str
    amp: str
    channels_last: bool
    compile: bool

    @property
    def dtype(self) -> torch.dtype | None:
        return AMPS[self.amp]


def parse_mode(text: str) -> Mode:
    """'fp16-cl-compile' -> Mode(fp16, channels_last, compile); an unknown part is an argparse error."""
    amp, *options = text.split("-")
    if amp not in AMPS or any(o not in OPTIONS for o in options) or len(set(options)) != len(options):
        raise argparse.ArgumentTypeError(
            f"mode {text!r}: expected fp32, fp16 or bf16, then -cl and/or -compile (e.g. fp16-cl-compile)"
        )
    return Mode(text, amp, "cl" in options, "compile" in options)


def model_key(which: str) -> str:
    """The name a model has in the rows: ours, timm, or the peer's timm name."""
    return which.removeprefix("timm:")


def build(which: str, model_name: str, seed: int = 0) -> torch.nn.Module:
    """'ours' (this package's model), 'timm' (timm's port with our weights) or 'timm:<name>' (a peer)."""
    import timm

    torch.manual_seed(seed)
    if which.startswith("timm:"):
        return timm.create_model(which.removeprefix("timm:"))
    ours = nextvit.create_model(model_name)
    if which == "ours":
        return ours
    theirs = timm.create_model(model_name)
    theirs.load_state_dict(ours.state_dict())
    return theirs


def timm_has(model_name: str) -> bool:
    """Whether timm defines the model (it has no nextvit_tiny, this package's test-size variant)."""
    import timm

    return timm.is_model(model_name)


class WallTimer:
    """Seconds per timed step by the host's clock (CPU: the work is done when the call returns)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self) -> float:
        return time.perf_counter()

    def stop(self, start: float) -> None:
        self.times.append(time.perf_counter() - start)

    def seconds(self) -> list[float]:
        return list(self.times)


class CudaEventTimer:
    """Seconds per timed step by CUDA events on the current stream: the GPU's time, read back at the end."""

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def start(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, start: torch.cuda.Event) -> None:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.pairs.append((start, end))

    def seconds(self) -> list[float]:
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1000 for start, end in self.pairs]


class Stepper:
    """One model's training step on fixed random data, in one mode, on one device."""

    def __init__(
        self,
        model: torch.nn.Module,
        batch: int,
        size: int,
        device: str | torch.device = "cpu",
        mode: Mode | None = None,
        clip_grad: float | None = None,
        timer: WallTimer | CudaEventTimer | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.mode = mode or parse_mode("fp32")
        if self.mode.amp == "fp16" and self.device.type != "cuda":
            raise SystemExit(f"mode {self.mode.name}: fp16 autocast needs CUDA (on CPU use bf16 or fp32)")
        memory_format = torch.channels_last if self.mode.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05, **fused)
        self.forward = torch.compile(self.model) if self.mode.compile else self.model
        self.loss = SoftTargetCrossEntropy()
        self.scaler = torch.amp.GradScaler("cuda") if self.mode.amp == "fp16" else None
        self.clip_grad = clip_grad
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=gen)
        self.x = x.to(self.device).contiguous(memory_format=memory_format)
        self.y = torch.softmax(torch.randn(batch, 1000, generator=gen), dim=1).to(self.device)
        self.timer = timer or WallTimer()

    @property
    def times(self) -> list[float]:
        return self.timer.seconds()

    def step(self, timed: bool = True) -> None:
        start = self.timer.start() if timed else None
        self.opt.zero_grad(set_to_none=True)
        if self.mode.dtype is None:
            loss = self.loss(self.forward(self.x), self.y)
        else:
            with torch.autocast(self.device.type, dtype=self.mode.dtype):
                loss = self.loss(self.forward(self.x), self.y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.opt.step()
        if timed:
            self.timer.stop(start)

    def warm_up(self, steps: int) -> float:
        """Untimed steps; returns the first one's seconds (autotuning, compilation), waited for to its end."""
        first = 0.0
        for i in range(steps):
            start = time.perf_counter()
            self.step(timed=False)
            if i == 0:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                first = time.perf_counter() - start
        return first


def peak_memory_mb(which: str, model_name: str, batch: int, size: int, steps: int = 2, mode: str = "fp32") -> float:
    """Peak resident memory of a fresh process that builds one model and runs `steps` steps (CPU)."""
    code = (
        "import resource, sys; sys.argv = sys.argv[:1];"
        "from benchmark_train import build, parse_mode, Stepper;"
        f"s = Stepper(build({which!r}, {model_name!r}), {batch}, {size}, mode=parse_mode({mode!r}));"
        f"[s.step() for _ in range({steps})];"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def make_row(
    size: int, mode: Mode, batch: int, seconds: dict[str, list[float]], memory_mb: dict, first_step_s: dict, args
) -> dict:
    """One (size, mode) result: median images/s per model, ratios to timm's port, peak memory, first step."""
    ips = {key: batch / statistics.median(times) for key, times in seconds.items()}
    row = dict(
        size=size,
        mode=mode.name,
        images_per_s={k: round(v, 2) for k, v in ips.items()},
        ratio_ours_timm=round(ips["ours"] / ips["timm"], 3) if "timm" in ips else None,
        ratio_to_timm={k: round(v / ips["timm"], 3) for k, v in ips.items() if k != "timm"} if "timm" in ips else {},
        peak_memory_mb={k: round(v) for k, v in memory_mb.items()},
        first_step_s={k: round(v, 2) for k, v in first_step_s.items()},
        steps=args.steps,
        warmup=args.warmup,
    )
    return row


def format_row(row: dict, with_mode: bool) -> str:
    """The printed line of a row (for the CPU default, the same line as before modes existed)."""
    ips, memory = row["images_per_s"], row["peak_memory_mb"]
    label = f"{row['size']}x{row['size']}" + (f" {row['mode']}" if with_mode else "")
    rates = ", ".join(f"{k} {v:.1f} img/s" for k, v in ips.items())
    ratios = f", ours/timm {row['ratio_ours_timm']:.3f}" if row["ratio_ours_timm"] is not None else ""
    peers = [k for k in row["ratio_to_timm"] if k != "ours"]
    ratios += "".join(f", {k}/timm {row['ratio_to_timm'][k]:.3f}" for k in peers)
    peaks = ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items())
    return f"{label}: {rates}{ratios}; peak memory {peaks}"


def speedups(rows: list[dict]) -> dict:
    """Each mode's images/s over the first mode's, per size and model: what channels_last and compile give."""
    out: dict[str, dict] = {}
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"])
        if row is base:
            continue
        ratios = {k: round(v / base["images_per_s"][k], 3) for k, v in row["images_per_s"].items()}
        out.setdefault(f"{row['size']}x{row['size']}, against {base['mode']}", {})[row["mode"]] = ratios
    return out


def measure(args, size: int, modes: list[Mode]) -> list[dict]:
    """Build and warm every model in each of `modes` at one size, time them all in alternation, free them again.

    The CPU compares its modes in one alternation (a layout's ratio is then immune to the machine's
    load drifting between modes); on CUDA each mode is its own group, so only one mode's models
    take GPU memory at a time.
    """
    cuda = args.device == "cuda"
    steppers, memory, first = {}, {}, {}
    for mode in modes:
        for which in args.models:
            key = (mode.name, model_key(which))
            if cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            stepper = Stepper(
                build(which, args.model), args.batch_size, size, args.device, mode,
                clip_grad=CUDA_CLIP_GRAD if cuda else None, timer=CudaEventTimer() if cuda else WallTimer(),
            )  # fmt: skip
            first[key] = stepper.warm_up(args.warmup)
            if cuda:
                memory[key] = (torch.cuda.max_memory_allocated() - before) / 2**20
            steppers[key] = stepper
    for _ in range(args.steps):
        for stepper in steppers.values():
            stepper.step()
        if cuda:
            torch.cuda.synchronize()  # the next round starts with an idle GPU, as this one did
    seconds = {key: stepper.times for key, stepper in steppers.items()}
    del steppers, stepper
    gc.collect()
    if any(mode.compile for mode in modes):
        torch._dynamo.reset()  # the compiled graphs go with their models
    if cuda:
        torch.cuda.empty_cache()
    rows = []
    for mode in modes:
        keys = [model_key(w) for w in args.models]
        if not cuda:
            for which, key in zip(args.models, keys):
                memory[mode.name, key] = peak_memory_mb(which, args.model, args.batch_size, size, mode=mode.name)
        seconds_of, memory_of, first_of = ({k: table[mode.name, k] for k in keys} for table in (seconds, memory, first))
        rows.append(make_row(size, mode, args.batch_size, seconds_of, memory_of, first_of, args))
    return rows


def machine(args) -> dict:
    """Where and how it ran: CPU (and its int8/bf16 instruction sets) or GPU, versions, batch, precision."""
    import timm

    from nextvit.benchmark.machine import machine_info

    full = machine_info(args.device)
    info = dict(
        cpu=full["cpu"],
        cpu_isa=full["cpu_isa"],
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        timm=timm.__version__,
        python=platform.python_version(),
        batch=args.batch_size,
        dtype="float32" if all(m.amp == "fp32" for m in args.modes) else "autocast per mode",
    )
    if args.device == "cuda":
        info.update(gpu=full["gpu"], cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def header(args, info: dict) -> str:
    if args.device == "cpu":
        precision = (
            "fp32" if [m.name for m in args.modes] == ["fp32"] else "modes " + " ".join(m.name for m in args.modes)
        )
        return (
            f"# {args.model} training steps (forward + backward + AdamW), batch {args.batch_size}, {precision}, "
            f"{info['cpu']}, {info['torch_threads']} threads, torch {info['torch']}, timm {info['timm']}"
        )
    return (
        f"# {args.model} training steps (forward + backward + fused AdamW, clipping at {CUDA_CLIP_GRAD:g}), batch "
        f"{args.batch_size}, {info['gpu']}, torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), "
        f"timm {info['timm']}; {args.warmup} warm-up steps per model (the first: autotuning, compilation), then "
        f"{args.steps} steps in alternation timed by CUDA events, median"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="nextvit_small")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on CPU, 128 on CUDA")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 64 224 on CPU, 224 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model (default: 10 CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model (default: 2 CPU, 5 CUDA)")
    parser.add_argument(
        "--modes", type=parse_mode, nargs="+", default=None,
        help="precision[-cl][-compile] each (default: fp32 on CPU; fp16 fp16-cl fp16-cl-compile bf16 bf16-cl on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--peers", nargs="*", default=None, help="timm models timed beside ours and timm's (default: resnet50 on CUDA)"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    batch, sizes, steps, warmup, modes, peers = DEFAULTS[args.device]
    args.batch_size = args.batch_size or batch
    args.sizes = args.sizes or sizes
    args.steps = args.steps or steps
    args.warmup = warmup if args.warmup is None else args.warmup
    args.modes = args.modes or [parse_mode(m) for m in modes]
    args.peers = peers if args.peers is None else args.peers
    args.models = ["ours", *(["timm"] if timm_has(args.model) else []), *(f"timm:{p}" for p in args.peers)]
    if args.device == "cuda" and args.warmup < 1:
        parser.error("--warmup must be at least 1 on CUDA: the first step autotunes and must not be timed")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    if args.device == "cpu" and any(m.amp == "fp16" for m in args.modes):
        parser.error("--modes: fp16 autocast needs CUDA (on CPU use bf16 or fp32)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer: fixed input sizes
    info = machine(args)
    print(header(args, info), flush=True)
    if "timm" not in args.models:
        print(f"# timm has no {args.model}: ours and the peers only, without the ratio to timm's port")
    rows = []
    with_mode = len(args.modes) > 1 or args.device == "cuda"
    groups = [[mode] for mode in args.modes] if args.device == "cuda" else [args.modes]
    for size in args.sizes:
        for modes in groups:
            for row in measure(args, size, modes):
                rows.append(row)
                print(format_row(row, with_mode), flush=True)
            result = dict(model=args.model, device=args.device, machine=info, rows=rows, speedups=speedups(rows))
            if args.output:
                atomic_write(args.output, lambda tmp, r=result: Path(tmp).write_text(json.dumps(r, indent=2) + "\n"))
    for title, by_mode in speedups(rows).items():
        parts = [f"{mode} {ratios['ours']:.2f}x" for mode, ratios in by_mode.items()]
        print(f"ours, {title}: {', '.join(parts)}")
    if args.output:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
