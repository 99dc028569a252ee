"""Training-step throughput on CPU: this package's nextvit_small against timm's, in one run.

    python classification/benchmark_train.py --output logs/benchmark_train_cpu.json

A step is forward + backward + AdamW step with the recipe's loss (soft-target cross entropy),
at batch 32, at the demo's 64x64 and at 224x224. The two models (same weights) are stepped in
alternation so both see the same machine state; the median images/s and the ratio ours/timm are
printed. Peak memory is measured for each model alone, in a fresh process (its peak resident set).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from timm.loss import SoftTargetCrossEntropy

import nextvit


def build(which: str, model_name: str, seed: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    ours = nextvit.create_model(model_name)
    if which == "ours":
        return ours
    theirs = timm.create_model(model_name)
    theirs.load_state_dict(ours.state_dict())
    return theirs


class Stepper:
    def __init__(self, model: torch.nn.Module, batch: int, size: int) -> None:
        self.model = model.train()
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        self.loss = SoftTargetCrossEntropy()
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, generator=gen)
        self.y = torch.softmax(torch.randn(batch, 1000, generator=gen), dim=1)
        self.times: list[float] = []

    def step(self, timed: bool = True) -> None:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()
        if timed:
            self.times.append(time.perf_counter() - start)


def peak_memory_mb(which: str, model_name: str, batch: int, size: int, steps: int = 2) -> float:
    """Peak resident memory of a fresh process that builds one model and runs `steps` steps."""
    code = (
        "import resource, sys; sys.argv = sys.argv[:1];"
        f"from benchmark_train import build, Stepper; s = Stepper(build({which!r}, {model_name!r}), {batch}, {size});"
        f"[s.step() for _ in range({steps})];"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    import timm

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    info = dict(
        cpu=cpu,
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        timm=timm.__version__,
        python=platform.python_version(),
        batch=args.batch_size,
        dtype="float32",
    )
    print(
        f"# {args.model} training steps (forward + backward + AdamW), batch {args.batch_size}, fp32, {cpu}, "
        f"{info['torch_threads']} threads, torch {torch.__version__}, timm {timm.__version__}"
    )
    rows = []
    for size in args.sizes:
        pair = {w: Stepper(build(w, args.model), args.batch_size, size) for w in ("ours", "timm")}
        for stepper in pair.values():
            for _ in range(args.warmup):
                stepper.step(timed=False)
        for _ in range(args.steps):
            for stepper in pair.values():
                stepper.step()
        ips = {w: args.batch_size / statistics.median(s.times) for w, s in pair.items()}
        del pair
        mem = {w: peak_memory_mb(w, args.model, args.batch_size, size) for w in ("ours", "timm")}
        row = dict(
            size=size,
            images_per_s={k: round(v, 2) for k, v in ips.items()},
            ratio_ours_timm=round(ips["ours"] / ips["timm"], 3),
            peak_memory_mb={k: round(v) for k, v in mem.items()},
            steps=args.steps,
            warmup=args.warmup,
        )
        rows.append(row)
        print(
            f"{size}x{size}: ours {ips['ours']:.1f} img/s, timm {ips['timm']:.1f} img/s, ours/timm "
            f"{row['ratio_ours_timm']:.3f}; peak memory ours {mem['ours']:.0f} MB, timm {mem['timm']:.0f} MB",
            flush=True,
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(dict(model=args.model, machine=info, rows=rows), indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
