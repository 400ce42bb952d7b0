"""Benchmark suite: grids of experiments (datasets x models x methods x budgets x seeds), run resumably,
reported as tables, CSV, Pareto plots and a claim check.

- `grid`: `BenchmarkGrid` (validated YAML) -> `Cell`s, each an `ExperimentConfig`.
- `runner`: `run_benchmark` writes one JSON result per cell, atomically; reruns skip finished cells.
- `report` / `plots`: `write_report` aggregates one or several results directories.
- `verdicts`: the verdict per budget and the unified frontier check, sections of the report.
- `cli`: the `featmux bench` commands (`bench_app`).
"""

from featmux.benchmarks.grid import BenchmarkGrid, Cell, repo_root
from featmux.benchmarks.report import aggregate, claim_checks, load_results, write_report
from featmux.benchmarks.runner import (
    InProcessExecutor,
    RunSummary,
    StalePolicy,
    SubprocessExecutor,
    run_benchmark,
)
from featmux.benchmarks.verdicts import budget_verdicts, frontier_checks

__all__ = [
    "BenchmarkGrid",
    "Cell",
    "InProcessExecutor",
    "RunSummary",
    "StalePolicy",
    "SubprocessExecutor",
    "aggregate",
    "budget_verdicts",
    "claim_checks",
    "frontier_checks",
    "load_results",
    "repo_root",
    "run_benchmark",
    "write_report",
]
