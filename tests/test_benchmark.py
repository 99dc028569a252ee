"""deployment/benchmark.py: rows with provenance, CSV, chart; timing itself is not asserted."""

from __future__ import annotations

import csv
import json

import pytest


def test_benchmark_writes_rows_with_provenance(import_script, tmp_path):
    benchmark = import_script("deployment", "benchmark")
    out, table, chart = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.png"
    argv = "--models nextvit_tiny timm:resnet18 --input-sizes 64 --batch-sizes 1 2 --runs 2 --warmup 1".split()
    argv += "--modes eager folded onnxruntime tensorrt --dtypes float32 bfloat16".split()
    argv += ["--output", str(out), "--csv", str(table), "--chart", str(chart)]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    # 2 batches x (3 float32 modes + 2 bfloat16 PyTorch modes) x 2 models; TensorRT skipped with a reason
    assert len(rows) == 2 * 5 * 2
    assert result["skipped"]["tensorrt"] and not any(r["mode"] == "tensorrt" for r in rows)
    assert {r["dtype"] for r in rows if r["mode"] == "onnxruntime"} == {"float32"}
    for row in rows:
        assert row["median_ms"] > 0 and row["p25_ms"] <= row["median_ms"] <= row["p75_ms"]
        assert row["runs"] == 5 and row["input_size"] == 64  # at least 5 timed calls
    firsts = [r for r in rows if r["model"] == "nextvit_tiny"]
    assert all(r["ratio_to_first"] == 1.0 for r in firsts)
    machine = result["machine"]
    assert machine["versions"]["torch"] and machine["torch_threads"] >= 1 and machine["cpu"]
    with table.open() as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(rows) and lines[0]["torch"] == machine["versions"]["torch"]
    assert chart.stat().st_size > 10_000


def test_timm_nextvit_shares_our_weights(import_script):
    import torch

    benchmark = import_script("deployment", "benchmark")
    ours = benchmark.build_model("nextvit_small")
    theirs = benchmark.build_model("timm:nextvit_small", ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-4)


def test_bad_model_names_are_refused(import_script):
    benchmark = import_script("deployment", "benchmark")
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--models", "nextvit_huge"])


def test_a_model_that_cannot_run_is_reported_and_the_run_goes_on(import_script):
    benchmark = import_script("deployment", "benchmark")
    # EfficientFormer's attention biases are fixed to 224x224 inputs
    args = benchmark.parse_args("--models nextvit_tiny timm:efficientformer_l1 --input-sizes 64 --batch-sizes 1 "
                                "--modes folded --runs 1 --warmup 0".split())  # fmt: skip
    result = benchmark.run(args)
    assert [r["model"] for r in result["rows"]] == ["nextvit_tiny"]
    (failed,) = result["failed"]
    assert failed["model"] == "timm:efficientformer_l1" and failed["input_size"] == 64 and failed["error"]
