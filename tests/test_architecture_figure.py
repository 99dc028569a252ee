"""The architecture figure is drawn from the model: its stage plan must be the paper's hybrid strategy."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import nextvit
from nextvit.model import HEAD_DIM

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "draw_architecture.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def figure_script():
    spec = importlib.util.spec_from_file_location("draw_architecture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    """Build each variant once for this module (building dominates the run time); freed afterwards."""
    built: dict[str, nextvit.NextViT] = {}

    def get(name: str) -> nextvit.NextViT:
        if name not in built:
            built[name] = nextvit.create_model(name).eval()
        return built[name]

    yield get
    built.clear()


def variant_config(name: str) -> dict:
    """VARIANTS[name] completed with NextViT's defaults for the fields it leaves out."""
    defaults = {k: p.default for k, p in inspect.signature(nextvit.NextViT).parameters.items()}
    return {**defaults, **nextvit.VARIANTS[name]}


def hybrid_strategy(depths) -> list[list[str]]:
    """The paper's Next Hybrid Strategy, written out independently of the model code:
    stage 1 all NCB; stages 2 and 4 NCBs closed by one NTB; stage 3 repeats (NCB x4, NTB x1)."""
    d1, d2, d3, d4 = depths
    return [
        ["NCB"] * d1,
        ["NCB"] * (d2 - 1) + ["NTB"],
        (["NCB"] * 4 + ["NTB"]) * (d3 // 5),
        ["NCB"] * (d4 - 1) + ["NTB"],
    ]


def stages_of(plan: list[dict]) -> list[dict]:
    return [entry for entry in plan if entry["kind"] == "stage"]


@pytest.mark.parametrize("name", sorted(nextvit.VARIANTS))
def test_stage_plan_follows_the_variant_table(figure_script, model, name):
    cfg = variant_config(name)
    plan = figure_script.stage_plan(model(name), input_size=64)
    assert [entry["kind"] for entry in plan] == ["stem"] + ["stage"] * 4 + ["head"]
    stages = stages_of(plan)
    expected = hybrid_strategy(cfg["depths"])
    assert sum(s["num_blocks"] for s in stages) == sum(cfg["depths"])
    for i, (stage, kinds, depth, widths) in enumerate(zip(stages, expected, cfg["depths"], cfg["widths"])):
        assert stage["kinds"] == kinds
        assert stage["num_blocks"] == depth == len(stage["blocks"])
        assert sum(count for _, count in stage["runs"]) == depth
        assert sum(count for _, count in stage["pattern"]) * stage["repeats"] == depth
        if i == 0:
            assert "NTB" not in stage["kinds"] and stage["sr_ratio"] is None and stage["ntb"] is None
            assert stage["widths"] == {"NCB": [widths[0]]}
        else:
            assert stage["kinds"][-1] == "NTB"
            assert stage["widths"]["NTB"] == [widths[1]]
            assert stage["widths"].get("NCB", [widths[0]]) == [widths[0]]
            assert stage["sr_ratio"] == cfg["sr_ratios"][i]
    repeats = cfg["depths"][2] // 5
    assert stages[2]["label"] == (f"(NCB ×4, NTB ×1) ×{repeats}" if repeats > 1 else "NCB ×4, NTB ×1")
    assert stages[2]["pattern"] == [("NCB", 4), ("NTB", 1)] and stages[2]["repeats"] == repeats

    stem_chs = cfg["stem_chs"]
    chain = [cfg["in_chans"], *stem_chs, stem_chs[-1]]
    assert [(c["in_chs"], c["out_chs"]) for c in plan[0]["convs"]] == list(zip(chain[:-1], chain[1:]))
    assert plan[-1]["num_classes"] == cfg["num_classes"] and plan[-1]["in_chs"] == stages[-1]["out_chs"]


def test_channels_and_strides_equal_feature_info(figure_script, model):
    small = model("nextvit_small")
    plan = figure_script.stage_plan(small, input_size=224)
    assert plan[0]["stride"] == 4 and plan[0]["resolution"] == (56, 56)
    for stage, info in zip(stages_of(plan), small.feature_info, strict=True):
        assert stage["out_chs"] == info["num_chs"]
        assert stage["stride"] == info["reduction"]
        assert stage["resolution"] == (224 // info["reduction"],) * 2
        assert f"stages.{stage['index']}" == info["module"]


def test_resolutions_are_what_the_model_computes(figure_script, model):
    """Odd, non-square inputs: the plan's resolutions are the shapes of the real multi-scale outputs."""
    tiny = model("nextvit_tiny")
    plan = figure_script.stage_plan(tiny, input_size=(97, 130))
    with torch.no_grad():
        maps = tiny.forward_intermediates(torch.zeros(1, 3, 97, 130), intermediates_only=True)
    assert [s["resolution"] for s in stages_of(plan)] == [tuple(m.shape[2:]) for m in maps]
    assert [s["out_chs"] for s in stages_of(plan)] == [m.shape[1] for m in maps]


def test_ntb_channel_split_is_read_from_the_model(figure_script, model):
    small = model("nextvit_small")
    plan = figure_script.stage_plan(small)
    for stage, module in zip(stages_of(plan), small.stages):
        for block, info in zip(module.blocks, stage["blocks"], strict=True):
            if info["kind"] != "NTB":
                continue
            assert info["mhsa_chs"] == block.mhsa_out_chs and info["mhca_chs"] == block.mhca_out_chs
            assert info["mhsa_chs"] + info["mhca_chs"] == info["out_chs"]
            assert info["mhsa_heads"] * HEAD_DIM == info["mhsa_chs"]
            assert info["mhca_heads"] * HEAD_DIM == info["mhca_chs"]
            assert info["kv_tokens"] == info["tokens"] // info["sr_ratio"] ** 2  # 1-D pooling, the default


@pytest.mark.parametrize("name", ["nextvit_small", "nextvit_tiny"])
def test_figure_has_no_overlapping_labels(figure_script, model, tmp_path, name):
    plan = figure_script.stage_plan(model(name))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # draw() warns about any label that spills or overlaps
        path = figure_script.draw(plan, tmp_path / "arch.png", f"{name} test title")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_script_writes_png_from_another_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "nextvit_tiny", "--output", "arch.png", "--input-size", "160"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "architecture figure:" not in result.stderr
    data = (tmp_path / "arch.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
