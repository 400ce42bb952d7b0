"""Run a benchmark grid, one JSON result per cell, resumable.

Layout of an output directory:

    <out>/manifest.json          the grid and its cells (key, file, fingerprint), rewritten at each start
    <out>/cells/<cell>.json      one result per finished cell (written atomically)
    <out>/failed/<cell>.json     the error of a cell that raised (removed once the cell succeeds)
    <out>/logs/<cell>.log        the cell's progress messages
    <out>/checkpoints/<cell>/    with `checkpoints=True`: resumable training state (a killed cell
                                 continues where it stopped) and the trained model.pt

A rerun skips every cell whose result file exists with the same fingerprint (the hash of the settings
that change a result), so a killed run loses only the cell in flight. A result whose fingerprint differs
(the grid changed) is "stale": by default that is an error; `stale="rerun"` replaces it and
`stale="keep"` keeps it as done.

Example:
    >>> grid = BenchmarkGrid.from_yaml("benchmarks/configs/frappe_pareto.yaml")
    >>> summary = run_benchmark(grid, "runs/frappe", root=repo_root("benchmarks/configs"), threads=1)
    >>> summary.ran, summary.skipped
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, unique
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from featmux.atomic import write_json_atomic
from featmux.benchmarks.grid import VOLATILE_KEYS, BenchmarkGrid, Cell
from featmux.benchmarks.measure import DEFAULT_TARGET, measured

if TYPE_CHECKING:
    from featmux.training.experiment import ExperimentConfig

RESULT_FORMAT = 1
CELLS, FAILED, LOGS, CHECKPOINTS = "cells", "failed", "logs", "checkpoints"

Log = Callable[[str], None]
CellFunction = Callable[["ExperimentConfig", Log], dict[str, Any]]
"""What runs one experiment: `run_experiment(config, log)` or a stand-in with that signature."""


@unique
class StalePolicy(Enum):
    """What to do with a finished cell whose settings changed since it ran."""

    ERROR = "error"
    RERUN = "rerun"
    KEEP = "keep"


@unique
class CellState(Enum):
    TODO = "todo"
    DONE = "done"
    STALE = "stale"
    FAILED = "failed"  # raised last time; it is run again


class Executor(Protocol):
    """Runs one cell's experiment and returns its result with `cell_seconds` and `peak_rss_bytes`."""

    def __call__(self, config: ExperimentConfig, log_path: Path) -> dict[str, Any]: ...


def _default_function() -> CellFunction:
    from featmux.training.experiment import run_experiment

    return run_experiment


class InProcessExecutor:
    """Run cells in this process, one after another (per-cell peak RSS where Linux allows a reset).

    Args:
        function: the experiment function (default `run_experiment`).

    Example:
        >>> run_benchmark(grid, "runs/x", executor=InProcessExecutor())
    """

    def __init__(self, function: CellFunction | None = None) -> None:
        self.function = function

    def __call__(self, config: ExperimentConfig, log_path: Path) -> dict[str, Any]:
        function = self.function or _default_function()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as f:

            def log(message: str) -> None:
                f.write(message + "\n")
                f.flush()

            return measured(lambda: function(config, log))


class CellProcessError(RuntimeError):
    """A cell's subprocess ended without a result (crash, kill, out of memory)."""


class SubprocessExecutor:
    """Run each cell in a fresh Python process (`python -m featmux.benchmarks.cell`).

    A crash, an out-of-memory kill or a leak stays inside the cell, and its peak RSS is its own.

    Args:
        target: `module:function` the child calls as `function(config, log)`.
        python: the interpreter.
        env: environment of the child (default: this process's).
        timeout: seconds before the child is killed (None: no limit).

    Example:
        >>> run_benchmark(grid, "runs/x", executor=SubprocessExecutor(timeout=3600))
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self.python = python
        self.env = dict(env) if env is not None else None
        self.timeout = timeout

    def __call__(self, config: ExperimentConfig, log_path: Path) -> dict[str, Any]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="featmux-cell-") as tmp:
            config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
            config_path.write_text(config.model_dump_json())
            command = [
                self.python, "-m", "featmux.benchmarks.cell", str(config_path), str(result_path),
                "--log", str(log_path), "--target", self.target,
            ]  # fmt: skip
            with log_path.open("a") as log_file:
                done = subprocess.run(
                    command, stdout=log_file, stderr=subprocess.STDOUT, env=self.env, timeout=self.timeout
                )
            if done.returncode != 0 or not result_path.is_file():
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-20:])
                raise CellProcessError(
                    f"cell process exited with status {done.returncode}; log tail:\n{tail}"
                )
            return json.loads(result_path.read_text())


@dataclass(frozen=True)
class CellStatus:
    """A cell and where it stands in an output directory."""

    cell: Cell
    state: CellState
    result_path: Path
    seconds: float | None = None  # wall time of its finished result


def cell_states(cells: Sequence[Cell], out_dir: str | Path, device: str | None = None) -> list[CellStatus]:
    """The state of each cell in `out_dir` (unreadable result files count as not done).

    Args:
        cells: the cells.
        out_dir: the results directory.
        device: the device the cells would run on (their fingerprints resolve bf16 for it).
    """
    out = Path(out_dir)
    states = []
    for cell in cells:
        path = out / CELLS / cell.filename
        result = _read(path)
        if result is not None:
            bench = result.get("bench", {})
            ran_bf16 = (result.get("autocast") or {}).get("bf16")
            fresh = cell.accepts(bench.get("fingerprint"), device, ran_bf16)
            state = CellState.DONE if fresh else CellState.STALE
            seconds = result.get("cell_seconds")
            states.append(CellStatus(cell, state, path, float(seconds) if seconds is not None else None))
        elif (out / FAILED / cell.filename).is_file():
            states.append(CellStatus(cell, CellState.FAILED, path))
        else:
            states.append(CellStatus(cell, CellState.TODO, path))
    return states


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class EtaEstimator:
    """Time left for the remaining cells: mean wall time of finished cells of the same dataset and model.

    Cells of a (dataset, model) group cost about the same whatever the method and budget (the data
    dominates); a group with no finished cell yet uses the mean over all finished cells.

    Example:
        >>> eta = EtaEstimator()
        >>> eta.record(cells[0], 12.0)
        >>> eta.remaining_seconds(cells[1:])
    """

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], tuple[float, int]] = {}

    def record(self, cell: Cell, seconds: float) -> None:
        total, count = self._sums.get((cell.dataset, cell.model), (0.0, 0))
        self._sums[(cell.dataset, cell.model)] = (total + seconds, count + 1)

    def remaining_seconds(self, cells: Sequence[Cell]) -> float | None:
        """Estimated seconds for `cells`; None before any cell has finished."""
        if not self._sums:
            return None
        overall = sum(t for t, _ in self._sums.values()) / sum(n for _, n in self._sums.values())
        group_mean = {g: t / n for g, (t, n) in self._sums.items()}
        return sum(group_mean.get((c.dataset, c.model), overall) for c in cells)


def format_seconds(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`, or `?`."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class RunSummary:
    """What `run_benchmark` did."""

    total: int
    skipped: int = 0
    ran: int = 0
    failed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0


class StaleResultsError(RuntimeError):
    """Finished results whose grid settings have changed."""


def select_cells(
    cells: Sequence[Cell],
    datasets: Sequence[str] = (),
    models: Sequence[str] = (),
    methods: Sequence[str] = (),
    seeds: Sequence[int] = (),
    budgets: Sequence[str] = (),
) -> list[Cell]:
    """The cells matching every non-empty filter (labels as in the grid).

    The budget filter leaves collisionless cells in: their size is fixed, they are every budget's reference.
    """
    return [
        c
        for c in cells
        if (not datasets or c.dataset in datasets)
        and (not models or c.model in models)
        and (not methods or c.method in methods)
        and (not seeds or c.seed in seeds)
        and (not budgets or c.budget in budgets or c.method == "collisionless")
    ]


def run_benchmark(
    grid: BenchmarkGrid,
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    cells: Sequence[Cell] | None = None,
    executor: Executor | None = None,
    overrides: Mapping[str, Any] | None = None,
    stale: StalePolicy = StalePolicy.ERROR,
    keep_going: bool = False,
    max_cells: int | None = None,
    checkpoints: bool = False,
    progress: bool = True,
    log: Log | None = None,
    lock: str | Path | None = None,
) -> RunSummary:
    """Run the unfinished cells of `grid`, writing one result file per cell into `out_dir`.

    Args:
        grid: the benchmark.
        out_dir: where results go (see the module docstring); reruns resume here.
        root: directory that relative data paths start from (default: the current directory).
        cells: a subset of `grid.cells()` to run (default: all).
        executor: runs one cell (default `InProcessExecutor()`).
        overrides: ExperimentConfig values applied to every cell that do not change results (threads,
            cache_dir, progress, device); they are not part of the cells' fingerprints.
        stale: what to do with results whose settings changed.
        keep_going: after a cell raises, record it and go on (default: record it and stop).
        max_cells: stop after running this many cells (None: all).
        checkpoints: give every cell a checkpoint directory, `<out>/checkpoints/<cell>/`: a killed
            cell resumes mid-training on the next run, and its trained model.pt is kept (e.g. for
            `featmux analyze orthogonality`).
        progress: show a progress bar over cells with an ETA (on stderr).
        log: receives one line per event (cell started, finished, failed).
        lock: a lock file held (flock, exclusive) while each cell runs, so cells never overlap other
            measurements that take the same lock; it is released between cells.

    Returns:
        Counts of skipped, run and failed cells.

    Raises:
        StaleResultsError: stale results with `stale=StalePolicy.ERROR` (before anything runs).
        Exception: the first cell's error, when `keep_going` is False.
    """
    say = log or (lambda _m: None)
    out = Path(out_dir)
    all_cells = grid.cells()
    chosen = list(all_cells if cells is None else cells)
    extra = {"progress": False, **(overrides or {})}
    changing = sorted(set(extra) - (VOLATILE_KEYS - {"checkpoint_dir"}))  # cells get their own checkpoint_dir
    if changing:
        raise ValueError(f"overrides {changing} would change results; put them in the grid instead")
    device = extra.get("device")
    states = cell_states(chosen, out, device)
    stale_keys = [s.cell.key for s in states if s.state is CellState.STALE]
    if stale_keys and stale is StalePolicy.ERROR:
        raise StaleResultsError(
            f"{len(stale_keys)} finished cell(s) were run with other settings (e.g. {stale_keys[0]}); "
            "rerun them (stale=rerun), keep them (stale=keep), or use another output directory"
        )
    _write_manifest(out, grid, all_cells, device)
    eta = EtaEstimator()
    todo: list[Cell] = []
    summary = RunSummary(total=len(chosen), stale=stale_keys)
    for s in states:
        done = s.state is CellState.DONE or (s.state is CellState.STALE and stale is StalePolicy.KEEP)
        if done:
            summary.skipped += 1
            if s.seconds is not None:
                eta.record(s.cell, s.seconds)
        else:
            todo.append(s.cell)
    if max_cells is not None:
        todo = todo[:max_cells]
    run = executor or InProcessExecutor()
    start = time.perf_counter()
    say(f"{grid.name}: {len(chosen)} cells, {summary.skipped} already done, {len(todo)} to run")
    with _Progress(len(todo), enabled=progress) as bar:
        for i, cell in enumerate(todo):
            bar.update(i, cell.key, eta.remaining_seconds(todo[i:]))
            say(f"[{i + 1}/{len(todo)}] {cell.key}")
            stem = cell.filename.removesuffix(".json")
            checkpoint_dir = out / CHECKPOINTS / stem if checkpoints else None
            cell_extra = {**extra, "checkpoint_dir": checkpoint_dir} if checkpoint_dir is not None else extra
            config = cell.experiment_config(root, cell_extra)
            started = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                with machine_lock(lock):
                    result = run(config, out / LOGS / f"{stem}.log")
            except Exception as err:
                summary.failed.append(cell.key)
                write_json_atomic(
                    out / FAILED / cell.filename,
                    {
                        "bench": {
                            **cell.labels(),
                            "key": cell.key,
                            "fingerprint": cell.fingerprint_on(device),
                        },
                        "error": f"{type(err).__name__}: {err}",
                        "traceback": traceback.format_exc(),
                        "started": started,
                    },
                )
                say(f"  failed: {type(err).__name__}: {err}")
                if not keep_going:
                    raise
                continue
            result["bench"] = {
                **cell.labels(),
                "key": cell.key,
                "grid": grid.name,
                "fingerprint": cell.fingerprint_on(device),
                "started": started,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "format": RESULT_FORMAT,
                "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
            }
            write_json_atomic(out / CELLS / cell.filename, result)
            (out / FAILED / cell.filename).unlink(missing_ok=True)
            summary.ran += 1
            seconds = float(result.get("cell_seconds", 0.0))
            eta.record(cell, seconds)
            say(f"  done in {format_seconds(seconds)}: test AUC {result.get('test_auc')}")
        bar.update(len(todo), "done", 0.0)
    summary.seconds = time.perf_counter() - start
    return summary


@contextlib.contextmanager
def machine_lock(path: str | Path | None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (no-op for None): one measurement at a time on a shared machine."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_manifest(out: Path, grid: BenchmarkGrid, cells: Sequence[Cell], device: str | None) -> None:
    write_json_atomic(
        out / "manifest.json",
        {
            "name": grid.name,
            "grid": grid.model_dump(mode="json"),
            "cells": [
                {"key": c.key, "file": c.filename, "fingerprint": c.fingerprint_on(device)} for c in cells
            ],
        },
    )


class _Progress:
    """A rich progress bar over cells with the `EtaEstimator`'s ETA; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("cells", total=self.total, eta="?")
        return self

    def update(self, completed: int, current: str, eta_seconds: float | None) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=completed, description=current, eta=format_seconds(eta_seconds)
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
