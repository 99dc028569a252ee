"""A benchmark's results as JSON, a CSV file, a Markdown table and a latency-accuracy chart, each
written atomically (`nextvit.files`): an interrupted run never leaves a truncated result behind, nor
destroys the one it would have replaced."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..files import atomic_write, atomic_write_bytes
from .runners import base_name

__all__ = [
    "ACCURACY",
    "MIN_COSINE",
    "write_json",
    "write_csv",
    "write_markdown",
    "draw_chart",
    "markdown_table",
    "fastest_accurate",
]

# ImageNet-1K top-1 (%) at 224 of the published weights, for the latency-accuracy chart; the
# benchmark itself times random weights of the same architectures.
ACCURACY = {
    "nextvit_small": (82.5, "Next-ViT paper / original README"),
    "nextvit_base": (83.2, "Next-ViT paper / original README"),
    "nextvit_large": (83.6, "Next-ViT paper / original README"),
    "resnet50": (80.4, "Wightman et al. 2021, ResNet strikes back (A1)"),
    "convnext_tiny": (82.1, "Liu et al. 2022, ConvNeXt"),
    "efficientformer_l1": (79.2, "Li et al. 2022, EfficientFormer"),
}


# an entry counts as accurate when its logits' cosine to PyTorch fp32 (same weights, same input) is at
# least this, per sample: what bf16 and a good int8 reach, and what a broken conversion does not
MIN_COSINE = 0.999


def fastest_accurate(result: dict, min_cosine: float = MIN_COSINE) -> list[dict]:
    """Per input size and batch, the fastest row whose output check passed (`output_cosine` >=
    `min_cosine`), with the fastest row of any kind for comparison. Rows without a check (timm's
    eager baseline, old result files) are not candidates."""
    groups: dict = {}
    for row in result["rows"]:
        groups.setdefault((row["input_size"], row["batch"]), []).append(row)
    picks = []
    for (size, batch), rows in groups.items():
        checked = [r for r in rows if r.get("output_cosine") is not None and r["output_cosine"] >= min_cosine]
        best = min(checked, key=lambda r: r["median_ms"]) if checked else None
        picks.append(dict(input_size=size, batch=batch, best=best, fastest=min(rows, key=lambda r: r["median_ms"])))
    return picks


def write_json(result: dict, path: str | os.PathLike) -> Path:
    """The whole result (rows, machine, command) as indented JSON."""
    return atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())


def write_markdown(result: dict, path: str | os.PathLike) -> Path:
    """`markdown_table` of the result."""
    return atomic_write_bytes(path, markdown_table(result).encode())


def write_csv(result: dict, path: str | os.PathLike) -> Path:
    """One row per measurement, with the machine and versions on every row."""
    info = result["machine"]
    provenance = dict(cpu=info["cpu"], gpu=info.get("gpu", ""), torch_threads=info["torch_threads"],
                      torch=info["versions"]["torch"], onnxruntime=info["versions"].get("onnxruntime", ""),
                      timm=info["versions"].get("timm", ""), commit=info["git_commit"], date=info["date"])  # fmt: skip
    # every key of any row (some only on some rows: a baseline's ratio, the compile mode on CUDA)
    fields = list(dict.fromkeys(key for row in result["rows"] for key in row))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*fields, *provenance])
            writer.writeheader()
            for row in result["rows"]:
                writer.writerow(row | provenance)

    return atomic_write(path, write)


def draw_chart(result: dict, path: str | os.PathLike, mode: str) -> Path:
    """Top-1 (published) against latency (measured here) at batch 1, the smallest input size, as an image
    in the format of `path`'s suffix (PNG, SVG, PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["mode"] == mode and r["batch"] == 1 and r["dtype"] == "float32"]
    if not rows:
        raise ValueError(f"no batch-1 float32 rows in mode {mode!r} to draw")
    size = min(r["input_size"] for r in rows)
    rows = [r for r in rows if r["input_size"] == size and base_name(r["model"]) in ACCURACY]
    info = result["machine"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=150)
    ours = sorted((r for r in rows if not r["model"].startswith("timm:")), key=lambda r: r["median_ms"])
    ax.plot([r["median_ms"] for r in ours], [ACCURACY[r["model"]][0] for r in ours], "o-", color="tab:red",
            label="Next-ViT (this package, BatchNorm folded)")  # fmt: skip
    for r in ours:
        label = "Next-ViT-" + r["model"].split("_")[-1][0].upper()
        ax.annotate(label, (r["median_ms"], ACCURACY[r["model"]][0]), textcoords="offset points", xytext=(6, -10))
    for r in rows:
        if r["model"].startswith("timm:"):
            acc = ACCURACY[base_name(r["model"])][0]
            ax.plot(r["median_ms"], acc, "s", color="tab:blue")
            ax.annotate(r["model"], (r["median_ms"], acc), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel(f"latency, ms (batch 1, {size}x{size}, float32, median; {mode})")
    ax.set_ylabel("ImageNet-1K top-1, % (published)")
    where = info.get("gpu") or f"{info['cpu']}, {info['torch_threads']} threads"
    ax.set_title(f"Latency measured on {where}\ntorch {info['versions']['torch']}, commit {info['git_commit']}",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png"))
    finally:
        plt.close(fig)


def _ms_cell(ms: float) -> str:
    """A latency with a tenth of a millisecond on CPUs and 3 significant digits below 10 ms (GPU rows)."""
    return f"{ms:.3g}" if ms < 10 else f"{ms:.1f}"


def markdown_table(result: dict) -> str:
    """A table per input and batch size: a line per model, a column per mode and dtype, each cell the
    median ms and, where a baseline was timed, the ratio to it."""
    info = result["machine"]
    gpu = f"{info['gpu']} (CUDA {info['versions'].get('cuda', '-')}), host " if info.get("gpu") else ""
    lines = [f"Measured on {gpu}{info['cpu']} ({', '.join(info['cpu_isa']) or 'no AVX2'}), {info['torch_threads']} "
             f"threads, {info['date'][:10]}; torch {info['versions']['torch']}, onnxruntime "
             f"{info['versions'].get('onnxruntime', '-')}, openvino {info['versions'].get('openvino', '-')}; "
             f"median of timed calls after warm-up, "
             f"{'each runtime in its own process' if result.get('isolation') == 'process' else 'all in one process'}"
             + (f"; ratios to {result['baseline']}" if result.get("baseline") else "")
             + (f"; ratios to {result['reference']} in the same mode and dtype"
                if result.get("reference") and not result.get("baseline") else "") + "."]  # fmt: skip
    groups: dict = {}
    for row in result["rows"]:
        groups.setdefault((row["input_size"], row["batch"]), []).append(row)
    for (size, batch), rows in groups.items():
        columns = list(dict.fromkeys((r["mode"], r["dtype"]) for r in rows))
        names = list(dict.fromkeys(r["model"] for r in rows))
        lines += ["", f"{size}x{size}, batch {batch}, ms (x baseline):", "",
                  "| model | " + " | ".join(f"{m} {d}" for m, d in columns) + " |",
                  "|---|" + "---:|" * len(columns)]  # fmt: skip
        for name in names:
            cells = []
            for mode, dtype in columns:
                hit = [r for r in rows if (r["model"], r["mode"], r["dtype"]) == (name, mode, dtype)]
                if not hit:
                    cells.append("")
                    continue
                ratio = hit[0].get("ratio_to_baseline", hit[0].get("ratio_to_reference"))
                cells.append(_ms_cell(hit[0]["median_ms"]) + (f" ({ratio:.2f})" if ratio is not None else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Fastest accurate entry on this CPU (logits' cosine to PyTorch fp32 >= {MIN_COSINE}, per sample):",
        "",
    ]
    for pick in fastest_accurate(result):
        where = f"{pick['input_size']}x{pick['input_size']}, batch {pick['batch']}"
        best = pick["best"]
        if best is None:
            lines.append(f"- {where}: no entry has an output check (rerun with this version of benchmark.py)")
            continue
        line = (f"- {where}: {best['model']} {best['mode']} {best['dtype']}, {best['median_ms']:.1f} ms "
                f"(cosine {best['output_cosine']:.5f})")  # fmt: skip
        fastest = pick["fastest"]
        if fastest is not best:
            line += (f"; the fastest of all, {fastest['model']} {fastest['mode']} {fastest['dtype']} "
                     f"({fastest['median_ms']:.1f} ms), " + (f"has cosine {fastest['output_cosine']:.5f}"
                     if fastest.get("output_cosine") is not None else "has no output check"))  # fmt: skip
        lines.append(line)
    return "\n".join(lines) + "\n"
