"""Draw Next-ViT's overall architecture (the paper's Figure 1) from a built model.

    python tools/draw_architecture.py [--model nextvit_small] [--output images/nextvit_architecture.png]

The block order and repetitions, widths, resolutions, strides, the E-MHSA / MHCA channel split,
head counts, pooling ratios, MLP ratios, parameters and FLOPs are all read from a built model (one
hooked forward pass in `stage_plan`), so the picture cannot drift from `nextvit/model.py`; only the
wording of the block internals is fixed text.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch
from matplotlib.text import Text
from torch import nn

import nextvit
from nextvit.model import NextConvBlock, NextTransformerBlock

__all__ = ["stage_plan", "pattern_label", "draw", "describe", "main"]

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "images" / "nextvit_architecture.png"
SHORT_NAMES = {"nextvit_small": "Next-ViT-S", "nextvit_base": "Next-ViT-B", "nextvit_large": "Next-ViT-L"}

# --------------------------------------------------------------------------------------------
# Reading the plan from the model
# --------------------------------------------------------------------------------------------


def _block_kind(block: nn.Module) -> str:
    if isinstance(block, NextConvBlock):
        return "NCB"
    if isinstance(block, NextTransformerBlock):
        return "NTB"
    return type(block).__name__


def _embed_stride(patch_embed: nn.Module) -> int:
    """A PatchEmbed downsamples exactly when its pool is a real pooling layer."""
    pool = getattr(patch_embed, "pool", None)
    if isinstance(pool, nn.AvgPool2d):
        stride = pool.stride
        return int(stride[0] if isinstance(stride, tuple) else stride)
    return 1


def _groups(conv_attention: nn.Module) -> int:
    """MHCA's head count is the group count of its 3x3 conv."""
    return int(conv_attention.group_conv3x3.groups)


def _runs(kinds: Sequence[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return runs


def _shortest_period(runs: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], int]:
    """Split runs into (pattern, repeats) with the shortest pattern that tiles them exactly."""
    n = len(runs)
    for period in range(1, n + 1):
        if n % period == 0 and runs[:period] * (n // period) == runs:
            return runs[:period], n // period
    return runs, 1


def pattern_label(pattern: Sequence[tuple[str, int]], repeats: int) -> str:
    """'NCB ×3, NTB ×1', or '(NCB ×4, NTB ×1) ×2' when the pattern repeats."""
    body = ", ".join(f"{kind} ×{count}" for kind, count in pattern)
    return f"({body}) ×{repeats}" if repeats > 1 else body


@torch.no_grad()
def stage_plan(model: nn.Module, input_size: int | tuple[int, int] = 224) -> list[dict]:
    """The model's layout as [stem, stage 1, ..., stage 4, head], read from its modules.

    One forward pass at `input_size` with hooks records every block's real input and output shape,
    so resolutions (odd sizes and ceil-mode pooling included) are what the model computes rather
    than what a formula predicts.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    in_chans = getattr(model, "in_chans", 3)
    shapes: dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shapes[module] = (tuple(inputs[0].shape), tuple(output.shape))

    watched = list(model.stem) + [block for stage in model.stages for block in stage.blocks]
    handles = [m.register_forward_hook(record) for m in watched]
    was_training = model.training
    model.eval()
    try:
        model.forward_features(torch.zeros(1, in_chans, h, w))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    convs = []
    for unit in model.stem:
        conv = unit.conv
        convs.append(
            dict(
                in_chs=conv.in_channels,
                out_chs=conv.out_channels,
                kernel=conv.kernel_size[0],
                stride=conv.stride[0],
            )
        )
    stem_out = shapes[model.stem[-1]][1]
    reduction = 1
    for conv in convs:
        reduction *= conv["stride"]
    plan: list[dict] = [
        dict(
            kind="stem",
            name="Stem",
            input_size=(h, w),
            in_chs=in_chans,
            convs=convs,
            out_chs=stem_out[1],
            stride=reduction,
            resolution=stem_out[2:],
        )
    ]

    for index, stage in enumerate(model.stages):
        blocks = []
        for block in stage.blocks:
            (_, c_in, *_), (_, c_out, bh, bw) = shapes[block]
            stride = _embed_stride(block.patch_embed)
            reduction *= stride
            info = dict(kind=_block_kind(block), in_chs=c_in, out_chs=c_out, stride=stride, resolution=(bh, bw))
            if isinstance(block, NextConvBlock):
                info.update(mhca_heads=_groups(block.mhca), mlp_hidden=block.mlp.fc1.out_channels)
            elif isinstance(block, NextTransformerBlock):
                attn = block.e_mhsa
                tokens = bh * bw
                kv_tokens = tokens
                if attn.sr_ratio > 1:
                    kv_tokens = attn.pool_tokens(torch.zeros(1, tokens, 1), (bh, bw)).shape[1]
                info.update(
                    mhsa_chs=block.mhsa_out_chs,
                    mhca_chs=block.mhca_out_chs,
                    mhsa_heads=attn.num_heads,
                    mhca_heads=_groups(block.mhca),
                    sr_ratio=attn.sr_ratio,
                    kv_pool=attn.kv_pool,
                    tokens=tokens,
                    kv_tokens=kv_tokens,
                    mlp_hidden=block.mlp.fc1.out_channels,
                )
            blocks.append(info)
        kinds = [b["kind"] for b in blocks]
        runs = _runs(kinds)
        pattern, repeats = _shortest_period(runs)
        widths: dict[str, list[int]] = {}
        for b in blocks:
            widths.setdefault(b["kind"], [])
            if b["out_chs"] not in widths[b["kind"]]:
                widths[b["kind"]].append(b["out_chs"])
        ntbs = [b for b in blocks if b["kind"] == "NTB"]
        plan.append(
            dict(
                kind="stage",
                name=f"Stage {index + 1}",
                index=index,
                blocks=blocks,
                kinds=kinds,
                runs=runs,
                pattern=pattern,
                repeats=repeats,
                label=pattern_label(pattern, repeats),
                num_blocks=len(blocks),
                widths=widths,
                in_chs=blocks[0]["in_chs"],
                out_chs=blocks[-1]["out_chs"],
                stride=reduction,
                resolution=blocks[-1]["resolution"],
                sr_ratio=ntbs[0]["sr_ratio"] if ntbs else None,
                ntb=ntbs[0] if ntbs else None,
            )
        )

    head = model.head
    plan.append(
        dict(
            kind="head",
            name="Head",
            norm=type(model.norm).__name__,
            pool=getattr(head, "pool_type", "avg"),
            in_chs=model.num_features,
            num_classes=model.num_classes,
        )
    )
    return plan


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

COLORS = {
    "input": ("#f3f3f3", "#666666"),
    "stem": ("#e8e8e8", "#555555"),
    "stage": ("#fbfbfb", "#444444"),
    "NCB": ("#d6e6f5", "#2f6fad"),
    "NTB": ("#fde3cc", "#d2741f"),
    "head": ("#dcefd9", "#3c8a3c"),
    "out": ("#ece2f4", "#7a4fa0"),
    "op": ("#ffffff", "#777777"),
    "panel": ("#fafafa", "#bbbbbb"),
}
WIDTH, HEIGHT = 140.0, 84.0  # drawing units: 10 per inch, so circles stay round
BLOCK_H, PLUS_R = 5.0, 1.1


class _Canvas:
    """An axes in inch-proportional units that remembers which text belongs in which box,
    so the finished figure can check itself for overlaps."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.ax = fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, WIDTH)
        self.ax.set_ylim(0, HEIGHT)
        self.ax.set_axis_off()
        self.contained: list[tuple[Text, FancyBboxPatch]] = []

    def box(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        style: str,
        text: str = "",
        size: float = 9,
        weight: str = "normal",
        dashed: bool = False,
        text_y: float | None = None,
        zorder: float = 1,
    ) -> FancyBboxPatch:
        face, edge = COLORS[style]
        patch = FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.8",
            facecolor="none" if dashed else face,
            edgecolor=edge,
            linewidth=1.0 if dashed else 1.3,
            linestyle=(0, (4, 2)) if dashed else "solid",
            zorder=zorder,
        )
        self.ax.add_patch(patch)
        if text:
            self.text(x + w / 2, y + h / 2 if text_y is None else text_y, text, size, weight, inside=patch)
        return patch

    def text(
        self,
        x: float,
        y: float,
        text: str,
        size: float = 9,
        weight: str = "normal",
        inside: FancyBboxPatch | None = None,
        ha: str = "center",
        va: str = "center",
        color: str = "#222222",
        style: str = "normal",
        align: str | None = None,
    ) -> Text:
        artist = self.ax.text(
            x,
            y,
            text,
            fontsize=size,
            fontweight=weight,
            ha=ha,
            va=va,
            color=color,
            fontstyle=style,
            multialignment=align or ha,
            zorder=5,
            linespacing=1.25,
        )
        if inside is not None:
            self.contained.append((artist, inside))
        return artist

    def arrow(self, start: tuple[float, float], end: tuple[float, float], color: str = "#444444") -> None:
        self.ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2, shrinkA=0, shrinkB=0, mutation_scale=10),
            zorder=3,
        )

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str = "#444444") -> None:
        self.ax.plot(xs, ys, color=color, lw=1.2, zorder=3, solid_capstyle="butt")

    def plus(self, x: float, y: float, r: float = PLUS_R) -> None:
        self.ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor="#444444", lw=1.2, zorder=4))
        for xs, ys in (([x - 0.6 * r, x + 0.6 * r], [y, y]), ([x, x], [y - 0.6 * r, y + 0.6 * r])):
            self.ax.plot(xs, ys, color="#444444", lw=1.2, zorder=5)

    def problems(self) -> list[str]:
        """Texts that spill out of their box or overlap another text (in pixels, after rendering)."""
        renderer = self.fig.canvas.get_renderer()
        found = []
        for text, patch in self.contained:
            t, p = text.get_window_extent(renderer), patch.get_window_extent(renderer)
            if t.x0 < p.x0 - 0.5 or t.x1 > p.x1 + 0.5 or t.y0 < p.y0 - 0.5 or t.y1 > p.y1 + 0.5:
                found.append(f"text {text.get_text()!r} spills out of its box")
        texts = [t for t in self.ax.texts if t.get_text()]
        extents = [t.get_window_extent(renderer) for t in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                a, b = extents[i], extents[j]
                if a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5:
                    found.append(f"texts {texts[i].get_text()!r} and {texts[j].get_text()!r} overlap")
        return found


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _res(hw: Sequence[int]) -> str:
    return f"{hw[0]}×{hw[1]}"


def _draw_pipeline(c: _Canvas, plan: list[dict]) -> None:
    """Top: image -> stem -> 4 stages -> head; under each stage, its multi-scale output."""
    stem, stages, head = plan[0], [p for p in plan if p["kind"] == "stage"], plan[-1]
    top, bottom = 76.0, 49.5
    mid = (top + bottom) / 2
    gap = 4.0
    x = 3.0

    w = 9.0
    c.box(x, mid - 5, w, 10, "input", f"Image\n{stem['in_chs']}×{_res(stem['input_size'])}", size=9)
    x += w + gap
    c.arrow((x - gap, mid), (x, mid))

    w = 16.5
    p = c.box(x, bottom, w, top - bottom, "stem")
    c.text(x + w / 2, top - 2.2, "Stem", 10.5, "bold", inside=p)
    lines = [
        f"Conv{cv['kernel']}×{cv['kernel']}{' s' + str(cv['stride']) if cv['stride'] > 1 else ''}  "
        f"{cv['in_chs']}→{cv['out_chs']}"
        for cv in stem["convs"]
    ]
    c.text(x + w / 2, mid + 2.5, "\n".join(lines), 8.5, inside=p, align="left")
    c.text(x + w / 2, mid - 7.2, "each + BN + ReLU", 8, inside=p, style="italic", color="#555555")
    c.text(x + w / 2, bottom + 2.2, f"{stem['out_chs']} ch · {_res(stem['resolution'])}", 8, inside=p)
    x += w + gap
    c.arrow((x - gap, mid), (x, mid))

    w = 16.5
    out_top, out_h = 44.5, 6.2
    for stage in stages:
        _draw_stage(c, stage, x, bottom, w, top - bottom)
        right = x + w
        x_mid = x + w / 2
        c.arrow((x_mid, bottom), (x_mid, out_top))
        c.box(
            x + 1.5,
            out_top - out_h,
            w - 3,
            out_h,
            "out",
            f"{stage['out_chs']}×{_res(stage['resolution'])}\nstride {stage['stride']}",
            size=8.5,
        )
        x = right + gap
        c.arrow((right, mid), (x, mid))

    w = 18.5
    p = c.box(x, bottom + 4, w, top - bottom - 8, "head")
    c.text(x + w / 2, top - 6.2, "Classification head", 9.5, "bold", inside=p)
    norm = "BN" if "BatchNorm" in head["norm"] else head["norm"]
    pool = "global avg pool" if head["pool"] == "avg" else "no pooling"
    classifier = f"Linear {head['in_chs']}→{head['num_classes']}" if head["num_classes"] else "no classifier"
    c.text(
        x + w / 2,
        mid - 1.5,
        f"{norm} ({head['in_chs']})\n↓\n{pool}\n↓\n{classifier}",
        8.5,
        inside=p,
    )
    c.text(
        3.0,
        out_top - out_h / 2,
        "Multi-scale features\nfor detection and\nsegmentation (FPN,\nUperNet):",
        8.5,
        ha="left",
        style="italic",
        color="#5b3a7a",
    )


def _draw_stage(c: _Canvas, stage: dict, x: float, y: float, w: float, h: float) -> None:
    """A stage box: its name, one chip per run of equal blocks, a dashed bracket for repeats."""
    p = c.box(x, y, w, h, "stage")
    c.text(x + w / 2, y + h - 2.2, stage["name"], 10.5, "bold", inside=p)
    chips = stage["pattern"]
    chip_h, chip_gap = 5.6, 1.2
    stack = len(chips) * chip_h + (len(chips) - 1) * chip_gap
    center = y + h / 2 + 0.3
    cy = center + stack / 2
    inner = (x + 1.6, w - 3.2)
    for kind, count in chips:
        cy -= chip_h
        widths = "/".join(str(v) for v in stage["widths"][kind])
        detail = f"{widths} ch"
        if kind == "NTB" and stage["sr_ratio"] is not None:
            detail += f" · sr {stage['sr_ratio']}"
        chip = c.box(inner[0], cy, inner[1], chip_h, kind if kind in COLORS else "op", zorder=2)
        c.text(inner[0] + inner[1] / 2, cy + chip_h * 0.68, f"{kind} ×{count}", 9, "bold", inside=chip)
        c.text(inner[0] + inner[1] / 2, cy + chip_h * 0.28, detail, 7.5, inside=chip)
        cy -= chip_gap
    if stage["repeats"] > 1:
        pad = 0.7
        bottom = center - stack / 2 - pad
        c.box(inner[0] - pad, bottom, inner[1] + 2 * pad, stack + 2 * pad, "stage", dashed=True, zorder=2)
        c.text(x + w / 2, bottom - 1.6, f"× {stage['repeats']}", 9, "bold", inside=p)
    blocks = stage["num_blocks"]
    c.text(x + w / 2, y + 2.2, _count(blocks, "block"), 8, inside=p, color="#444444")


def _chain(
    c: _Canvas, x: float, y: float, items: Sequence[tuple[str, str | None, float, str]], gap: float = 1.8
) -> tuple[dict[str, tuple[float, float]], float]:
    """Boxes (or a ⊕ when the label is None) joined left to right by arrows; returns their x spans."""
    spans = {}
    for key, label, width, style in items:
        c.arrow((x, y), (x + gap, y))
        x += gap
        if label is None:
            c.plus(x + width / 2, y)
        else:
            c.box(x, y - BLOCK_H / 2, width, BLOCK_H, style, label, size=8.5)
        spans[key] = (x, x + width)
        x += width
    return spans, x


def _skip(c: _Canvas, start_x: float, y_from: float, lane: float, plus: tuple[float, float]) -> None:
    """A residual: from the main line at start_x, along the lane, into the ⊕ at `plus`."""
    px, py = plus
    c.line([start_x, start_x, px], [y_from, lane, lane])
    c.arrow((px, lane), (px, py + (PLUS_R if lane > py else -PLUS_R)))


def _draw_ncb(c: _Canvas, plan: list[dict], x0: float, y0: float, w: float, h: float) -> None:
    stages = [p for p in plan if p["kind"] == "stage" and "NCB" in p["widths"]]
    panel = c.box(x0, y0, w, h, "panel", zorder=0)
    c.text(x0 + 1.5, y0 + h - 2.4, "NCB  (Next Convolution Block)", 10, "bold", inside=panel, ha="left")
    y = y0 + h - 13.0
    c.text(x0 + 2.5, y, "x", 9.5, style="italic", inside=panel)
    items = [
        ("embed", "Patch\nEmbed", 6.0, "NCB"),
        ("mhca", "MHCA", 6.0, "NCB"),
        ("add1", None, 2 * PLUS_R, "op"),
        ("bn", "BN", 4.0, "op"),
        ("mlp", "MLP", 5.5, "NCB"),
        ("add2", None, 2 * PLUS_R, "op"),
    ]
    spans, x = _chain(c, x0 + 3.6, y, items, gap=2.2)
    c.arrow((x, y), (x + 2.2, y))
    c.text(x + 3.6, y, "out", 9.5, style="italic", inside=panel)
    lane = y + BLOCK_H / 2 + 1.6
    for start, end in (("embed", "add1"), ("add1", "add2")):
        _skip(c, spans[start][1] + 1.1, y, lane, (sum(spans[end]) / 2, y))

    ncb = next(b for s in stages for b in s["blocks"] if b["kind"] == "NCB")
    ratio = ncb["mlp_hidden"] / ncb["out_chs"]
    head_dim = ncb["out_chs"] // ncb["mhca_heads"]
    widths = " / ".join(str(s["widths"]["NCB"][0]) for s in stages)
    heads = " / ".join(str(next(b["mhca_heads"] for b in s["blocks"] if b["kind"] == "NCB")) for s in stages)
    notes = [
        f"MHCA: grouped Conv3×3 (one {head_dim}-ch group per head) → BN → ReLU → Conv1×1",
        f"MLP: Conv1×1 C→{ratio:g}C → ReLU → Conv1×1 {ratio:g}C→C",
        "Patch Embed: AvgPool 2×2 + Conv1×1 + BN where a stage",
        "downsamples or changes width, identity otherwise",
        f"NCB width per stage: {widths} ch;  MHCA heads: {heads}",
    ]
    c.text(x0 + 1.5, y0 + 1.6, "\n".join(notes), 8, inside=panel, ha="left", va="bottom", color="#333333")


def _draw_ntb(c: _Canvas, plan: list[dict], x0: float, y0: float, w: float, h: float) -> None:
    stages = [p for p in plan if p["kind"] == "stage" and p["ntb"] is not None]
    panel = c.box(x0, y0, w, h, "panel", zorder=0)
    c.text(x0 + 1.5, y0 + h - 2.4, "NTB  (Next Transformer Block)", 10, "bold", inside=panel, ha="left")
    ya = y0 + h - 9.0  # E-MHSA path
    yb = ya - 7.0  # MHCA branch
    ym = (ya + yb) / 2
    gap = 1.7
    c.text(x0 + 2.5, ya, "x", 9.5, style="italic", inside=panel)
    top, x = _chain(
        c,
        x0 + 3.6,
        ya,
        [
            ("embed", "Patch\nEmbed", 6.0, "NTB"),
            ("bn1", "BN", 3.6, "op"),
            ("mhsa", "E-MHSA", 7.2, "NTB"),
            ("add1", None, 2 * PLUS_R, "op"),
        ],
        gap,
    )
    fork = x + 1.4
    c.line([x, fork, fork], [ya, ya, yb])
    branch, bx = _chain(
        c,
        fork,
        yb,
        [("proj", "Conv1×1\nC₁→C₂", 6.4, "op"), ("mhca", "MHCA", 5.5, "NTB"), ("add2", None, 2 * PLUS_R, "op")],
        gap,
    )
    cx, cw = bx + gap, 5.6
    concat = c.box(cx, yb - BLOCK_H / 2, cw, ya - yb + BLOCK_H, "op")
    c.text(cx + cw / 2, ym, "Concat", 8.5, inside=concat)
    c.arrow((fork, ya), (cx, ya))
    c.text((fork + cx) / 2, ya + 0.9, "C₁", 8.5, color="#8a4a10")
    c.text(bx + gap / 2, yb + 1.6, "C₂", 8.5, color="#8a4a10")
    c.arrow((bx, yb), (cx, yb))
    tail, x = _chain(
        c,
        cx + cw,
        ym,
        [("bn2", "BN", 3.6, "op"), ("mlp", "MLP", 5.5, "NTB"), ("add3", None, 2 * PLUS_R, "op")],
        gap,
    )
    c.arrow((x, ym), (x + gap, ym))
    c.text(x + gap + 1.6, ym, "out", 9.5, style="italic", inside=panel)
    lane = ya + BLOCK_H / 2 + 1.4
    _skip(c, top["embed"][1] + gap / 2, ya, lane, (sum(top["add1"]) / 2, ya))
    _skip(c, cx + cw + gap / 2, ym, lane, (sum(tail["add3"]) / 2, ym))
    _skip(c, branch["proj"][1] + gap / 2, yb, yb - BLOCK_H / 2 - 1.2, (sum(branch["add2"]) / 2, yb))

    ntb = stages[0]["ntb"]
    ratio = ntb["mlp_hidden"] / ntb["out_chs"]
    pool = "consecutive runs of sr² tokens" if ntb["kv_pool"] == "1d" else "sr×sr windows"
    head_dim = ntb["mhsa_chs"] // ntb["mhsa_heads"]
    rows = [
        f"E-MHSA: queries from all tokens; keys/values from tokens average-pooled by sr ({pool}), then BN",
        f"MLP: Conv1×1 C→{ratio:g}C → ReLU → Conv1×1.  Heads have {head_dim} channels.  Split C = C₁ + C₂ per stage:",
    ]
    for s in stages:
        b = s["ntb"]
        share = round(100 * b["mhsa_chs"] / b["out_chs"])
        rows.append(
            f"    {s['name']}:  {b['out_chs']} = {b['mhsa_chs']} + {b['mhca_chs']} ({share}% / {100 - share}%);"
            f"  E-MHSA {_count(b['mhsa_heads'], 'head')}, sr {b['sr_ratio']},"
            f" K/V {b['tokens']}→{b['kv_tokens']} tokens;"
            f"  MHCA {_count(b['mhca_heads'], 'head')}"
        )
    c.text(x0 + 1.5, y0 + 1.6, "\n".join(rows), 8, inside=panel, ha="left", va="bottom", color="#333333")


def draw(plan: list[dict], path: str | Path, title: str) -> Path:
    """Render the plan to `path` (PNG); warns if any label spills out of its box or overlaps another."""
    path = Path(path)
    fig = Figure(figsize=(WIDTH / 10, HEIGHT / 10), dpi=150)  # Agg canvas, no pyplot: no GUI, no global state
    FigureCanvasAgg(fig)
    c = _Canvas(fig)
    c.text(WIDTH / 2, HEIGHT - 3.2, title, 12, "bold")
    _draw_pipeline(c, plan)
    _draw_ncb(c, plan, 3.0, 2.0, 50.0, 31.0)
    _draw_ntb(c, plan, 56.0, 2.0, 81.0, 31.0)
    fig.canvas.draw()
    for problem in c.problems():
        warnings.warn(f"architecture figure: {problem}", stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, facecolor="white")
    return path


def describe(name: str, model: nn.Module, input_size: int, flops: bool = True) -> str:
    """The figure's caption: variant, parameters and (when fvcore is installed) FLOPs."""
    from nextvit.flops import count_flops, count_params

    label = SHORT_NAMES.get(name, name)
    label = f"{label} ({name})" if label != name else name
    text = f"{label}: {count_params(model) / 1e6:.2f} M parameters"
    if flops:
        try:
            text += f", {count_flops(model, input_size) / 1e9:.2f} GFLOPs at {input_size}×{input_size}"
        except ImportError:
            pass
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nextvit_small", choices=nextvit.list_models(), help="variant name")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write (default: the repo's images/)"
    )
    parser.add_argument("--input-size", type=int, default=224, help="image side the resolutions are given for")
    args = parser.parse_args(argv)
    model = nextvit.create_model(args.model)
    plan = stage_plan(model, args.input_size)
    path = draw(plan, args.output, describe(args.model, model, args.input_size))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
