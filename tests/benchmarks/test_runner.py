from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from featmux.atomic import write_json_atomic
from featmux.benchmarks.grid import VOLATILE_KEYS, BenchmarkGrid
from featmux.benchmarks.measure import measured
from featmux.benchmarks.runner import (
    CellState,
    EtaEstimator,
    InProcessExecutor,
    StalePolicy,
    StaleResultsError,
    SubprocessExecutor,
    cell_states,
    run_benchmark,
    select_cells,
)


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C: not an Exception, so nothing is recorded for the cell."""


def counting(fake_result, kill_at: int | None = None, fail_keys: tuple[str, ...] = ()):
    calls = []

    def function(config, log):
        calls.append((config.embedding, config.budget, config.seed))
        if kill_at is not None and len(calls) == kill_at:
            raise Killed
        if (config.embedding, config.budget, config.seed) in fail_keys:
            raise RuntimeError("boom")
        log("training")
        return fake_result(config)

    return function, calls


def result_files(out: Path) -> list[Path]:
    return sorted((out / "cells").glob("*.json"))


def test_resume_after_a_kill_skips_finished_cells(grid_file, fake_result, tmp_path):
    grid = BenchmarkGrid.from_yaml(grid_file)
    out = tmp_path / "out"
    first, calls = counting(fake_result, kill_at=4)
    with pytest.raises(Killed):
        run_benchmark(grid, out, executor=InProcessExecutor(first), progress=False)
    assert len(calls) == 4 and len(result_files(out)) == 3  # the cell in flight is lost, nothing else
    assert not list(out.rglob("*.tmp")) and not (out / "failed").exists()
    before = {p.name: p.read_text() for p in result_files(out)}

    second, calls = counting(fake_result)
    summary = run_benchmark(grid, out, executor=InProcessExecutor(second), progress=False)
    assert (summary.skipped, summary.ran, summary.failed) == (3, 7, [])
    assert len(calls) == 7
    files = result_files(out)
    assert len(files) == 10 and {p.name: p.read_text() for p in files if p.name in before} == before
    states = cell_states(grid.cells(), out)
    assert all(s.state is CellState.DONE for s in states)

    third, calls = counting(fake_result)
    summary = run_benchmark(grid, out, executor=InProcessExecutor(third), progress=False)
    assert (summary.skipped, summary.ran, calls) == (10, 0, [])


def test_result_files_carry_cell_labels_and_measurements(grid_file, fake_result, tmp_path):
    grid = BenchmarkGrid.from_yaml(grid_file)
    function, _ = counting(fake_result)
    run_benchmark(
        grid, tmp_path, executor=InProcessExecutor(function), overrides={"threads": 1}, progress=False
    )
    result = json.loads((tmp_path / "cells" / "syn__dcnv2__hashing__1-4__seed1.json").read_text())
    assert result["bench"]["key"] == "syn/dcnv2/hashing/1/4/seed1"
    assert result["bench"]["fingerprint"] == grid.cells()[7].fingerprint
    assert result["threads"] == 1  # overrides reach the cell
    assert result["cell_seconds"] >= 0 and result["peak_rss_bytes"] > 0
    assert result["peak_rss_scope"] in ("cell", "process")
    assert "training" in (tmp_path / "logs" / "syn__dcnv2__hashing__1-4__seed1.log").read_text()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and len(manifest["cells"]) == 10


def test_failed_cells_are_recorded_and_rerun(grid_file, fake_result, tmp_path):
    grid = BenchmarkGrid.from_yaml(grid_file)
    bad = ("unified", "1", 0)
    function, _ = counting(fake_result, fail_keys=(bad,))
    with pytest.raises(RuntimeError, match="boom"):
        run_benchmark(grid, tmp_path, executor=InProcessExecutor(function), progress=False)
    failed = tmp_path / "failed" / "syn__dcnv2__unified__1__seed0.json"
    assert "RuntimeError: boom" in json.loads(failed.read_text())["error"]

    summary = run_benchmark(
        grid, tmp_path, executor=InProcessExecutor(function), keep_going=True, progress=False
    )
    assert summary.failed == ["syn/dcnv2/unified/1/seed0"] and len(result_files(tmp_path)) == 9
    fixed, calls = counting(fake_result)
    summary = run_benchmark(grid, tmp_path, executor=InProcessExecutor(fixed), progress=False)
    assert calls == [bad] and summary.ran == 1 and not failed.exists()


def test_changed_settings_make_results_stale(grid_dict, fake_result, tmp_path):
    function, calls = counting(fake_result)
    run_benchmark(BenchmarkGrid(**grid_dict), tmp_path, executor=InProcessExecutor(function), progress=False)
    grid_dict["settings"]["epochs"] = 2
    changed = BenchmarkGrid(**grid_dict)
    with pytest.raises(StaleResultsError, match="10 finished cell"):
        run_benchmark(changed, tmp_path, executor=InProcessExecutor(function), progress=False)
    kept = run_benchmark(
        changed, tmp_path, executor=InProcessExecutor(function), stale=StalePolicy.KEEP, progress=False
    )
    assert (kept.skipped, kept.ran) == (10, 0)
    calls.clear()
    rerun = run_benchmark(
        changed, tmp_path, executor=InProcessExecutor(function), stale=StalePolicy.RERUN, progress=False
    )
    assert rerun.ran == 10 and len(calls) == 10


def test_selection_and_max_cells(grid_file, fake_result, tmp_path):
    grid = BenchmarkGrid.from_yaml(grid_file)
    chosen = select_cells(grid.cells(), methods=["unified"], seeds=[1])
    assert [c.key for c in chosen] == ["syn/dcnv2/unified/1/seed1", "syn/dcnv2/unified/1/4/seed1"]
    function, calls = counting(fake_result)
    summary = run_benchmark(
        grid, tmp_path, cells=chosen, executor=InProcessExecutor(function), max_cells=1, progress=False
    )
    assert summary.ran == 1 and len(calls) == 1


def test_overrides_that_change_results_are_refused(grid_file, tmp_path):
    with pytest.raises(ValueError, match="would change results"):
        run_benchmark(BenchmarkGrid.from_yaml(grid_file), tmp_path, overrides={"epochs": 3})
    with pytest.raises(ValueError, match="would change results"):  # one directory for every cell: no
        run_benchmark(BenchmarkGrid.from_yaml(grid_file), tmp_path, overrides={"checkpoint_dir": tmp_path})


def test_eta_uses_the_same_dataset_and_model():
    grid_cells = BenchmarkGrid(
        name="eta",
        seeds=[0],
        budgets=["1"],
        methods=["hashing", "unified"],
        datasets={
            "a": {"dataset": "synthetic", "models": {"lr": {}}},
            "b": {"dataset": "synthetic", "models": {"lr": {}}},
        },
    ).cells()
    eta = EtaEstimator()
    assert eta.remaining_seconds(grid_cells) is None
    eta.record(grid_cells[0], 10.0)
    eta.record(grid_cells[1], 20.0)
    assert eta.remaining_seconds(grid_cells[1:]) == 15.0 + 15.0 + 15.0  # b falls back to the overall mean
    eta.record(grid_cells[2], 100.0)
    assert eta.remaining_seconds(grid_cells[3:]) == 100.0


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})

    def crash(*args):
        raise Killed

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Killed):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and list(tmp_path.iterdir()) == [path]


def test_measured_peak_rss_sees_a_large_allocation():
    import numpy as np

    small = measured(lambda: {})
    big = measured(lambda: {"n": int(np.ones(64 * 1024 * 1024 // 8).sum())})  # 64 MiB
    if big["peak_rss_scope"] == "cell":
        assert big["peak_rss_bytes"] - small["peak_rss_bytes"] > 48 * 1024 * 1024


CHILD = """
import os, signal

def run(config, log):
    log("child running")
    if config.seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash / OOM kill in the middle of a cell
    return {"dataset": config.dataset, "embedding": config.embedding, "pid": os.getpid()}
"""


def test_cell_entry_point_writes_a_measured_result(tmp_path, monkeypatch):
    from featmux.benchmarks import cell
    from featmux.training.experiment import ExperimentConfig

    (tmp_path / "fakecell.py").write_text(textwrap.dedent(CHILD))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "config.json"
    config.write_text(ExperimentConfig(dataset="synthetic", seed=0).model_dump_json())
    out, log = tmp_path / "result.json", tmp_path / "cell.log"
    cell.main([str(config), str(out), "--log", str(log), "--target", "fakecell:run", "--orphan-ok"])
    result = json.loads(out.read_text())
    assert result["pid"] == os.getpid() and result["peak_rss_bytes"] > 0 and result["cell_seconds"] >= 0
    assert log.read_text() == "child running\n"


def test_subprocess_cell_survives_a_killed_child(grid_dict, tmp_path):
    (tmp_path / "fakecell.py").write_text(textwrap.dedent(CHILD))
    grid_dict.update(methods=["hashing"], budgets=["1/4"], seeds=[1])
    grid = BenchmarkGrid(**grid_dict)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    executor = SubprocessExecutor(target="fakecell:run", env=env, timeout=120)
    summary = run_benchmark(grid, tmp_path / "out", executor=executor, keep_going=True, progress=False)
    assert summary.ran == 0 and summary.failed == ["syn/dcnv2/hashing/1/4/seed1"]
    assert not (tmp_path / "out" / "cells").exists()
    error = json.loads((tmp_path / "out" / "failed" / "syn__dcnv2__hashing__1-4__seed1.json").read_text())
    assert "status -9" in error["error"] and "child running" in error["error"]


def _machine(monkeypatch, native: bool) -> None:
    """Pretend the CPU has (or lacks) native bf16, as `resolve_bf16` sees it."""
    import featmux.training.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu", cpuinfo=None: (native, "fake cpu"))


def test_a_grid_resumed_on_a_machine_of_the_other_kind_does_not_mix_precisions(
    grid_dict, fake_result, tmp_path, monkeypatch
):
    """bf16 on auto: fingerprints hold the resolved choice, so the other machine's cells are stale."""
    grid_dict["settings"]["batch_size"] = 512  # auto bf16 needs batches of 512 or more on the CPU
    grid = BenchmarkGrid(**grid_dict)
    function, calls = counting(fake_result)
    _machine(monkeypatch, native=False)
    fp32 = [c.fingerprint for c in grid.cells()]
    run_benchmark(grid, tmp_path, executor=InProcessExecutor(function), max_cells=4, progress=False)
    _machine(monkeypatch, native=True)
    assert all(c.fingerprint != f for c, f in zip(grid.cells(), fp32, strict=True))
    with pytest.raises(StaleResultsError, match="4 finished cell"):
        run_benchmark(grid, tmp_path, executor=InProcessExecutor(function), progress=False)
    calls.clear()
    rerun = run_benchmark(
        grid, tmp_path, executor=InProcessExecutor(function), stale=StalePolicy.RERUN, progress=False
    )
    assert rerun.ran == 10 and len(calls) == 10
    cells = json.loads((tmp_path / "manifest.json").read_text())["cells"]
    assert [c["fingerprint"] for c in cells] == [c.fingerprint for c in grid.cells()]
    _machine(monkeypatch, native=False)  # and back: the bf16 cells are stale on the fp32 machine
    assert all(s.state is CellState.STALE for s in cell_states(grid.cells(), tmp_path))


def test_fingerprint_holds_the_resolved_bf16_choice(grid_dict, monkeypatch):
    grid_dict["settings"]["batch_size"] = 512  # auto bf16 needs batches of 512 or more on the CPU
    _machine(monkeypatch, native=False)
    auto = BenchmarkGrid(**grid_dict).cells()[0]
    auto_off = auto.fingerprint
    grid_dict["settings"]["bf16"] = True
    pinned_on = BenchmarkGrid(**grid_dict).cells()[0]
    grid_dict["settings"]["bf16"] = False
    pinned_off = BenchmarkGrid(**grid_dict).cells()[0]
    assert pinned_off.fingerprint == auto_off != pinned_on.fingerprint  # the choice, not how it was asked
    # float32 cells keep the hash they had before bf16 entered the fingerprint (committed grids stay current)
    kept = {k: v for k, v in auto.spec.items() if k not in VOLATILE_KEYS}
    assert auto_off == hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
    _machine(monkeypatch, native=True)
    assert auto.fingerprint == pinned_on.fingerprint  # auto resolves on here: the same precision, same hash
    assert pinned_off.fingerprint == auto_off  # pinned: the machine does not matter
    # a result stored before this change by a cell pinning bf16: false ran float32: still current
    legacy = {k: v for k, v in pinned_off.spec.items() if k not in VOLATILE_KEYS}
    legacy_hash = hashlib.sha256(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert legacy_hash != auto_off and pinned_off.accepts(legacy_hash) and not auto.accepts(legacy_hash)
    assert pinned_off.accepts(auto_off) and not auto.accepts(auto_off)  # the old hash of an auto cell
    # ...unless that result recorded that it ran bf16 (auto, before bf16 entered fingerprints)
    assert auto.accepts(auto_off, ran_bf16=True) and not pinned_off.accepts(auto_off, ran_bf16=True)
    del grid_dict["settings"]["bf16"]
    grid_dict["settings"]["batch_size"] = 256  # small batches: auto stays off here, as the run decides
    small = BenchmarkGrid(**grid_dict).cells()[0]
    plain = {k: v for k, v in small.spec.items() if k not in VOLATILE_KEYS}
    assert small.fingerprint == hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
    # a result that ran bf16 (auto before the batch-size floor) is stale where the cell now runs float32
    assert small.accepts(small.fingerprint) and not small.accepts(small.fingerprint, ran_bf16=True)
