from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from featmux.analysis.orthogonality import checkpoint_orthogonality
from featmux.benchmarks.cli import bench_app

runner = CliRunner()


def test_dry_run_lists_cells(grid_file, tmp_path):
    done = runner.invoke(bench_app, ["run", str(grid_file), "--out", str(tmp_path / "out"), "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "syn/dcnv2/unified/1/4/seed1" in done.output and "10 todo" in done.output
    assert not (tmp_path / "out").exists()


def test_invalid_grid_is_an_error(grid_dict, tmp_path):
    grid_dict["settings"]["epoch"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(grid_dict))
    done = runner.invoke(bench_app, ["run", str(path), "--dry-run"])
    assert done.exit_code == 2 and "unknown setting(s) ['epoch']" in done.output


def test_run_and_report_end_to_end(grid_dict, tmp_path):
    """Two real cells (hashing, unified) on tiny synthetic data, then the report."""
    grid_dict.update(methods=["hashing", "unified"], budgets=["1/4"], seeds=[0])
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_dict))
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    done = runner.invoke(bench_app, [*args, "--checkpoints"])
    assert done.exit_code == 0, done.output
    assert "2 cells run, 0 skipped" in done.output
    result = json.loads((out / "cells" / "syn__dcnv2__unified__1-4__seed0.json").read_text())
    assert 0.0 < result["test_auc"] < 1.0
    assert result["budget_fraction"] <= 0.25 and result["config"]["threads"] == 1
    assert result["peak_rss_bytes"] > 0 and result["bench"]["method"] == "unified"
    inference = result["inference"]  # timed in the cell, at the cell's thread count
    assert inference["threads"] == 1 and inference["rows"] == result["rows"]["test"] < 4096
    assert inference["median_ms"] > 0 and inference["repeats"] >= 3

    model = out / "checkpoints" / "syn__dcnv2__unified__1-4__seed0" / "model.pt"
    assert result["bench"]["checkpoint_dir"] == str(model.parent)
    assert checkpoint_orthogonality(model).features == ("C1", "C2", "C3")  # the trained cell's first layer

    again = runner.invoke(bench_app, args)
    assert again.exit_code == 0 and "0 cells run, 2 skipped" in again.output

    report = runner.invoke(bench_app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "syn / dcnv2" in report.output
    assert "frontier: syn / dcnv2: the best unified* variant" in report.output  # hashing the other method
    assert (out / "report" / "report.md").is_file() and (out / "report" / "pareto_syn_dcnv2.png").is_file()
    text = (out / "report" / "report.md").read_text()
    assert f"| {inference['median_ms']:.2f} ({inference['rows']:,} rows) |" in text  # one seed: no std
    assert "#### syn / dcnv2 at 1/4" in text and "| syn | dcnv2 | 1/4 | unified |" in text


def test_report_of_an_empty_directory_fails(tmp_path):
    done = runner.invoke(bench_app, ["report", str(tmp_path)])
    assert done.exit_code == 2 and "no result files" in done.output


def test_a_failing_cell_stops_the_run_with_status_1(grid_dict, tmp_path):
    grid_dict["datasets"]["syn"]["dataset_options"]["no_such_option"] = 1  # only the source can tell
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_dict))
    done = runner.invoke(bench_app, ["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert done.exit_code == 1 and "no_such_option" in done.output
    assert len(list((tmp_path / "out" / "failed").glob("*.json"))) == 1
