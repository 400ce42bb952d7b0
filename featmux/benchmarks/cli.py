"""`featmux bench`: run benchmark grids and report them.

featmux bench run benchmarks/configs/frappe_pareto.yaml --threads 1          # resumable
featmux bench run benchmarks/configs/smoke.yaml --out runs/smoke --dry-run   # list cells and states
featmux bench report runs/bench/frappe-pareto                               # report.md, results.csv, PNGs
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from featmux.benchmarks.grid import BenchmarkGrid, repo_root
from featmux.benchmarks.runner import (
    CellState,
    InProcessExecutor,
    StalePolicy,
    StaleResultsError,
    SubprocessExecutor,
    cell_states,
    format_seconds,
    run_benchmark,
    select_cells,
)
from featmux.cli.common import console, fail, say

bench_app = typer.Typer(no_args_is_help=True, help="Benchmark grids: budget-vs-AUC Pareto studies.")


@bench_app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="Benchmark grid YAML (benchmarks/configs/*.yaml).")],
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default runs/bench/<grid name>).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per cell.")] = None,
    device: Annotated[str | None, typer.Option(help="Train every cell on this device (cpu, cuda).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Encoded-data cache directory.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Only these dataset labels.")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only these model labels.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Only these method labels.")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Only these seeds.")] = None,
    budget: Annotated[
        list[str] | None, typer.Option(help="Only these budgets (collisionless cells always run).")
    ] = None,
    max_cells: Annotated[int | None, typer.Option(help="Stop after running this many cells.")] = None,
    isolate: Annotated[
        bool, typer.Option(help="Run each cell in a fresh subprocess (crash isolation, own peak RSS).")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --isolate: seconds before a cell is killed.")
    ] = None,
    stale: Annotated[
        StalePolicy, typer.Option(help="Results whose settings changed: error, rerun or keep.")
    ] = StalePolicy.ERROR,
    keep_going: Annotated[bool, typer.Option(help="Go on after a cell fails.")] = False,
    checkpoints: Annotated[
        bool, typer.Option(help="Per-cell checkpoints: resume a killed cell mid-training, keep model.pt.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="List the cells and their states; run nothing.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar over cells.")] = True,
    lock: Annotated[
        Path | None, typer.Option(help="Lock file held while each cell runs (shared-machine measurements).")
    ] = None,
) -> None:
    """Run a benchmark grid: one JSON result per cell; a rerun skips finished cells."""
    try:
        grid = BenchmarkGrid.from_yaml(config)
        cells = select_cells(grid.cells(), dataset or (), model or (), method or (), seed or (), budget or ())
    except (ValidationError, ValueError, OSError) as err:
        fail(f"invalid benchmark grid {config}:\n{err}")
    root = repo_root(config)
    out_dir = out if out is not None else root / "runs" / "bench" / grid.name
    if dry_run:
        _print_states(cells, out_dir, device)
        return
    overrides: dict[str, Any] = {}
    if threads is not None:
        overrides["threads"] = threads
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    if device is not None:
        overrides["device"] = device
    executor = SubprocessExecutor(timeout=timeout) if isolate else InProcessExecutor()
    try:
        summary = run_benchmark(
            grid,
            out_dir,
            root=root,
            cells=cells,
            executor=executor,
            overrides=overrides,
            stale=stale,
            keep_going=keep_going,
            max_cells=max_cells,
            checkpoints=checkpoints,
            progress=progress and sys.stderr.isatty(),
            log=say,
            lock=lock,
        )
    except StaleResultsError as err:
        fail(str(err))
    except Exception as err:  # a cell's error: recorded in <out>/failed, the finished cells are kept
        console.print(f"[bold red]cell failed:[/] {type(err).__name__}: {err}")
        console.print(f"details in {out_dir / 'failed'}; rerun to resume, or use --keep-going")
        raise typer.Exit(1) from err
    console.print(
        f"{summary.ran} cells run, {summary.skipped} skipped (done), {len(summary.failed)} failed "
        f"in {format_seconds(summary.seconds)}; results in {out_dir}"
    )
    if summary.failed:
        console.print("failed: " + ", ".join(summary.failed) + f" (errors in {out_dir / 'failed'})")
        raise typer.Exit(1)


def _print_states(cells: list, out_dir: Path, device: str | None) -> None:
    table = Table(title=f"cells ({out_dir})")
    for col in ("cell", "state", "seconds"):
        table.add_column(col)
    states = cell_states(cells, out_dir, device)
    for s in states:
        table.add_row(s.cell.key, s.state.value, format_seconds(s.seconds) if s.seconds is not None else "")
    Console().print(table)
    counts = {state: sum(s.state is state for s in states) for state in CellState}
    console.print(", ".join(f"{n} {state.value}" for state, n in counts.items() if n))


@bench_app.command("report")
def report(
    results: Annotated[
        list[Path], typer.Argument(help="Results directories of `featmux bench run`, reported together.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default <results>/report; needed for several).")
    ] = None,
    treatment: Annotated[str, typer.Option(help="Method expected to win the claim check.")] = "unified",
    baseline: Annotated[str, typer.Option(help="Method it is compared with.")] = "hashing",
    plots: Annotated[bool, typer.Option(help="Draw the Pareto plots.")] = True,
) -> None:
    """Aggregate results: table, CSV, Pareto plots, claim check, verdict per budget, frontier check."""
    from featmux.benchmarks.report import aggregate, claim_checks, load_results, write_report
    from featmux.benchmarks.verdicts import frontier_checks, frontier_summaries

    try:
        files = write_report(results, out, treatment, baseline, plots)
    except (ValueError, OSError) as err:
        fail(str(err))
    rows = aggregate(load_results(results))
    for check in claim_checks(rows, treatment, baseline):
        console.print(f"[bold]{check.dataset} / {check.model}[/]: {check.summary()}")
    for line in frontier_summaries(frontier_checks(rows)):
        console.print(f"frontier: {line}")
    console.print(f"report: {files.markdown}\ntable: {files.csv}")
    for png in files.plots:
        console.print(f"plot: {png}")
