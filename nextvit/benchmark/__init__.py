"""Latency benchmarks of Next-ViT against timm and classic peers (deployment/benchmark.py is the
command line): the machine and its compute floor (`machine`), what is timed (`runners`), process
isolation (`workers`) and the reports (`report`)."""

from .machine import ISA_FLAGS, floor_ms, gemm_gflops, machine_info
from .report import ACCURACY, draw_chart, markdown_table, write_csv, write_json, write_markdown
from .runners import DEFAULT_MODES, DTYPES, MODES, Timed, base_name, build_model, combination_exists, make_timed
from .workers import WorkerTimed, start_worker

__all__ = [
    "ISA_FLAGS",
    "floor_ms",
    "gemm_gflops",
    "machine_info",
    "ACCURACY",
    "draw_chart",
    "markdown_table",
    "write_csv",
    "write_json",
    "write_markdown",
    "DEFAULT_MODES",
    "DTYPES",
    "MODES",
    "Timed",
    "base_name",
    "build_model",
    "combination_exists",
    "make_timed",
    "WorkerTimed",
    "start_worker",
]
