from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from featmux.benchmarks.report import (
    CellRecord,
    Stat,
    aggregate,
    claim_checks,
    csv_text,
    load_results,
    markdown_table,
    write_report,
)

# test AUCs per (method, budget) over seeds 0, 1, 2, and the embedding size of each budget
AUC = {
    ("collisionless", "1"): [0.80, 0.81, 0.82],
    ("hashing", "1/4"): [0.70, 0.72, 0.74],
    ("hashing", "1/16"): [0.60, 0.60, 0.63],
    ("unified", "1/4"): [0.75, 0.76, 0.77],
    ("unified", "1/16"): [0.70, 0.71, 0.72],
}
PARAMS = {
    ("collisionless", "1"): 1000,
    ("hashing", "1/4"): 250,
    ("hashing", "1/16"): 62,
    ("unified", "1/4"): 248,
    ("unified", "1/16"): 60,
}


def result(method: str, budget: str, seed: int, bench: bool = True) -> dict:
    auc = AUC[(method, budget)][seed]
    out = {
        "dataset": "synthetic",
        "model": "dcnv2",
        "embedding": method,
        "budget": budget,
        "seed": seed,
        "test_auc": auc,
        "test_logloss": 1.0 - auc,
        "embedding_params": PARAMS[(method, budget)],
        "embedding_bytes": 4 * PARAMS[(method, budget)],
        "train_seconds": 10.0 + seed,
        "samples_per_second": 1000.0 * (seed + 1),
        "peak_rss_bytes": 10**8 * (seed + 1),
    }
    if bench:
        out["bench"] = {"dataset": "d", "model": "dcnv2", "method": method, "budget": budget, "seed": seed}
    return out


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    cells = tmp_path / "run" / "cells"
    cells.mkdir(parents=True)
    for method, budget in AUC:
        for seed in range(3):
            name = f"{method}_{budget.replace('/', '-')}_{seed}.json"
            (cells / name).write_text(json.dumps(result(method, budget, seed)))
    return tmp_path / "run"


def test_stat_by_hand():
    s = Stat.of([0.60, 0.60, 0.63])
    assert s.mean == pytest.approx(0.61)
    assert s.std == pytest.approx(math.sqrt((0.01**2 + 0.01**2 + 0.02**2) / 2))
    assert s.n == 3 and s.format(3) == "0.610 ± 0.017"
    one = Stat.of([0.5, None])
    assert (one.mean, one.std, one.n, one.format(2)) == (0.5, None, 1, "0.50")
    assert Stat.of([None]).format() == "—"


def test_aggregate_means_and_stds(results_dir):
    rows = aggregate(load_results(results_dir))
    assert [(r.method, r.budget) for r in rows] == [
        ("collisionless", "1"),
        ("hashing", "1/4"),
        ("hashing", "1/16"),
        ("unified", "1/4"),
        ("unified", "1/16"),
    ]
    hashing = rows[1]
    assert hashing.seeds == (0, 1, 2) and hashing.embedding_params == 250 and hashing.embedding_bytes == 1000
    assert hashing.test_auc.mean == pytest.approx(0.72) and hashing.test_auc.std == pytest.approx(0.02)
    assert hashing.test_logloss.mean == pytest.approx(0.28) and hashing.test_logloss.std == pytest.approx(
        0.02
    )
    assert hashing.train_seconds.mean == pytest.approx(11.0) and hashing.train_seconds.std == pytest.approx(
        1.0
    )
    assert hashing.samples_per_second.mean == pytest.approx(2000.0)
    assert hashing.peak_rss_bytes == 3 * 10**8


def test_claim_check_by_hand(results_dir):
    (check,) = claim_checks(aggregate(load_results(results_dir)))
    assert [g.budget for g in check.gaps] == ["1/4", "1/16"]  # largest budget first
    quarter, sixteenth = check.gaps
    assert quarter.gap == pytest.approx(0.76 - 0.72)
    assert quarter.pooled_std == pytest.approx(math.sqrt((0.01**2 + 0.02**2) / 2))
    assert sixteenth.gap == pytest.approx(0.71 - 0.61)
    assert sixteenth.pooled_std == pytest.approx(math.sqrt((0.01**2 + 0.0003) / 2))
    assert quarter.exceeds_std and sixteenth.exceeds_std
    assert check.ahead_everywhere and check.widens and check.widens_monotonically
    assert check.summary() == (
        "unified ahead of hashing at 2/2 budgets; gap beyond the seed std at 2/2; "
        "gap widens as the budget shrinks (monotonically)."
    )


def test_claim_check_that_fails():
    records = [
        CellRecord.from_result(result(m, b, s))
        for m, b in [("hashing", "1/4"), ("unified", "1/4")]
        for s in range(3)
    ]
    # swap the roles: hashing's AUCs are the higher ones here
    (check,) = claim_checks(aggregate(records), treatment="hashing", baseline="unified")
    assert check.gaps[0].gap == pytest.approx(-0.04) and not check.gaps[0].exceeds_std
    assert not check.ahead_everywhere and check.widens is None


def test_markdown_and_csv(results_dir):
    rows = aggregate(load_results(results_dir))
    table = markdown_table(rows)
    assert "| d | dcnv2 | hashing | 1/4 | 250 | 1.0 kB | 3 |  | 0.7200 ± 0.0200 | 0.2800 ± 0.0200 |" in table
    assert table.count("\n") == 2 + len(rows)
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert len(parsed) == 5
    unified = parsed[4]
    assert (unified["method"], unified["budget"], unified["seeds"]) == ("unified", "1/16", "3")
    assert float(unified["test_auc_mean"]) == pytest.approx(0.71)
    assert float(unified["test_auc_std"]) == pytest.approx(0.01)
    assert float(unified["embedding_params"]) == 60


def test_write_report_files(results_dir):
    (results_dir / "manifest.json").write_text(
        json.dumps({"name": "demo", "cells": [{"key": "d/dcnv2/hashing/1/4/seed9"}]})
    )
    files = write_report(results_dir)
    text = files.markdown.read_text()
    assert text.startswith("# Benchmark report: demo")
    assert "1 have no result yet" in text and "`d/dcnv2/hashing/1/4/seed9`" in text
    assert "### d / dcnv2" in text and "| 1/16 | 60 | 0.7100 ± 0.0100 | 0.6100 ± 0.0173 | +0.1000 |" in text
    assert files.csv.read_text().startswith("dataset,model,method,embedding,budget,seeds")
    assert [p.name for p in files.plots] == ["pareto_d_dcnv2.png"]
    assert files.plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![pareto_d_dcnv2](pareto_d_dcnv2.png)" in text


def test_plain_experiment_results_and_duplicates(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(result("unified", "1/4", 0, bench=False)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps(result("unified", "1/4", 1, bench=False)))
    (rec_a, rec_b) = load_results(tmp_path)
    assert (rec_a.dataset, rec_a.method, rec_a.budget, rec_b.seed) == ("synthetic", "unified", "1/4", 1)
    (tmp_path / "c.json").write_text(json.dumps(result("unified", "1/4", 1, bench=False)))
    with pytest.raises(ValueError, match="are both results of synthetic/dcnv2/unified/1/4/seed1"):
        load_results(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a featmux result"):
        load_results(tmp_path)


def test_device_of_each_cell_is_reported():
    gpu = {
        **result("unified", "1/4", 1),
        "config": {"device": "cuda:0"},
        "environment": {"gpu": "NVIDIA H100 80GB HBM3"},
    }
    records = [
        CellRecord.from_result(result("unified", "1/4", 0)),
        CellRecord.from_result(gpu),
        CellRecord.from_result({**result("hashing", "1/4", 0), "config": {"device": "cpu"}}),
    ]
    assert [r.device for r in records] == ["cpu", "H100", "cpu"]
    rows = {r.method: r for r in aggregate(records)}
    assert rows["unified"].devices == ("H100", "cpu") and rows["hashing"].devices == ("cpu",)
    assert markdown_table(list(rows.values())).splitlines()[2].endswith("| cpu |")
    assert next(csv.DictReader(io.StringIO(csv_text(list(rows.values())))))["devices"] == "cpu"


def _trained(epochs: float, cap: int, best_step: int, eval_steps: list[int], patience: int = 2) -> dict:
    return {
        "epochs": epochs,
        "steps": eval_steps[-1],
        "best_step": best_step,
        "history": [{"step": k, "valid_auc": 0.5} for k in eval_steps],
        "config": {"epochs": cap, "patience": patience, "max_steps": None},
    }


def test_cells_stopped_at_their_epoch_cap_are_marked(tmp_path):
    from featmux.benchmarks.report import stopped_at_cap

    assert stopped_at_cap(_trained(20.0, 20, best_step=20, eval_steps=[10, 20])) is True  # still improving
    assert stopped_at_cap(_trained(20.0, 20, best_step=10, eval_steps=[10, 15, 20])) is False  # patience hit
    assert stopped_at_cap(_trained(12.0, 20, best_step=8, eval_steps=[8, 10, 12])) is False
    assert stopped_at_cap(_trained(20.0, 20, best_step=15, eval_steps=[10, 15, 20])) is True  # 1 < patience
    assert stopped_at_cap({"epochs": 3}) is None  # no config: unknown
    cells = tmp_path / "cells"
    cells.mkdir()
    for seed, epochs in enumerate((20.0, 20.0, 12.0)):
        best = 20 if epochs == 20.0 else 8
        steps = [10, 20] if epochs == 20.0 else [8, 10, 12]
        (cells / f"{seed}.json").write_text(
            json.dumps({**result("hashing", "1/4", seed), **_trained(epochs, 20, best, steps)})
        )
    files = write_report(tmp_path, plots=False)
    text = files.markdown.read_text()
    assert "| 1/4 | 250 | 1.0 kB | 3 | 2 | 0.7200 ± 0.0200 |" in text
    assert "2 of 3 cells stopped at their epoch (or step) cap" in text
    assert next(csv.DictReader(io.StringIO(files.csv.read_text())))["at_cap"] == "2"


def test_report_says_which_variance_the_std_is(tmp_path):
    from featmux.benchmarks.report import variance_source

    def records(pairs):
        return [
            CellRecord.from_result({**result("unified", "1/4", seed, bench=False), "split_seed": split})
            for seed, split in pairs
        ]

    assert "over initialization seeds" in variance_source(records([(0, None), (1, None), (2, None)]))
    assert "split seed 0" in variance_source(records([(0, None), (1, None)]))
    assert "split seed(s) [3]" in variance_source(records([(0, 3), (1, 3)]))
    assert "over data-split seeds" in variance_source(records([(0, 1), (0, 2)]))
    both = variance_source(records([(0, 1), (1, 2), (2, 3)]))
    assert "initialization seeds and data-split seeds together" in both
    # two results of one cell that differ only by split seed are not duplicates
    for i, split in enumerate((1, 2)):
        cell = {
            **result("unified", "1/4", 0),
            "bench": {**result("unified", "1/4", 0)["bench"], "split_seed": split},
        }
        (tmp_path / f"{i}.json").write_text(json.dumps(cell))
    assert sorted(r.split_seed for r in load_results(tmp_path)) == [1, 2]


def test_a_grid_cell_without_a_split_axis_keeps_its_key():
    """The run records the split seed it used; a grid without a split axis keys the cell without it."""
    from featmux.benchmarks.report import record_key

    cell = {**result("unified", "1/4", 0), "split_seed": 0}
    assert record_key(CellRecord.from_result(cell)) == "d/dcnv2/unified/1/4/seed0"


def test_inference_time_column_and_old_results_without_it(tmp_path):
    """Mean ± std of the median forward ms over seeds; n/a for results written before it was measured."""
    from featmux.benchmarks.report import inference_cell

    def timed(method, seed, ms, rows=4096):
        return {**result(method, "1/4", seed), "inference": {"rows": rows, "median_ms": ms, "repeats": 10}}

    cells = tmp_path / "cells"
    cells.mkdir()
    files = {
        "u0": timed("unified", 0, 2.0),
        "u1": timed("unified", 1, 3.0),
        "u2": timed("unified", 2, 4.0),
        "h0": timed("hashing", 0, 1.5),
        "h1": result("hashing", "1/4", 1),  # an old cell: no inference field
        "h2": timed("hashing", 2, 2.5),
        "c0": result("collisionless", "1", 0),
    }
    for name, data in files.items():
        (cells / f"{name}.json").write_text(json.dumps(data))
    rows = {r.method: r for r in aggregate(load_results(tmp_path))}
    unified, hashing, collisionless = rows["unified"], rows["hashing"], rows["collisionless"]
    assert unified.inference_ms.mean == pytest.approx(3.0) and unified.inference_ms.std == pytest.approx(1.0)
    assert unified.inference_rows == (4096,) and inference_cell(unified) == "3.00 ± 1.00"
    assert inference_cell(hashing) == "2.00 ± 0.71 (2/3 cells)"
    assert collisionless.inference_ms.n == 0 and inference_cell(collisionless) == "n/a"
    small = aggregate([CellRecord.from_result(timed("unified", 0, 0.5, rows=2000))])[0]
    assert inference_cell(small) == "0.50 (2,000 rows)"  # a test split smaller than one batch
    table = markdown_table(list(rows.values()))
    assert "| samples/s | infer ms / 4096 rows | peak RSS |" in table
    assert "| 1,000 | n/a | 100.0 MB | cpu |" in table  # collisionless: 1 seed, not measured
    assert "| 2,000 ± 1,000 | 3.00 ± 1.00 | 300.0 MB | cpu |" in table
    parsed = {r["method"]: r for r in csv.DictReader(io.StringIO(csv_text(list(rows.values()))))}
    assert float(parsed["unified"]["inference_ms_mean"]) == pytest.approx(3.0)
    assert parsed["unified"]["inference_rows"] == "4096"
    assert parsed["collisionless"]["inference_ms_mean"] == parsed["collisionless"]["inference_rows"] == ""
    report = write_report(tmp_path, plots=False).markdown.read_text()
    assert "## Verdict per budget" in report and "## Frontier check" in report


def test_grids_that_share_a_cell_report_together(tmp_path):
    """A zoo grid and the beyond grid both run `unified`: a parent folder counts that cell once."""
    for grid, methods in (("zoo", ("hashing", "unified")), ("beyond", ("unified",))):
        cells = tmp_path / grid / "cells"
        cells.mkdir(parents=True)
        for method in methods:
            cell = result(method, "1/4", 0)
            cell["bench"]["fingerprint"] = f"settings-of-{method}"
            (cells / f"{method}.json").write_text(json.dumps(cell))
    records = load_results(tmp_path)
    assert sorted(r.method for r in records) == ["hashing", "unified"]
    (unified,) = [r for r in records if r.method == "unified"]
    assert unified.source.endswith("beyond/cells/unified.json")  # path order: beyond/ before zoo/
    assert unified.duplicates == (str(tmp_path / "zoo" / "cells" / "unified.json"),)
    text = write_report(tmp_path, plots=False).markdown.read_text()
    assert "1 further file(s) hold a cell already counted, with the same settings" in text
    other = json.loads((tmp_path / "zoo" / "cells" / "unified.json").read_text())
    other["bench"]["fingerprint"] = "other-settings"
    (tmp_path / "zoo" / "cells" / "unified.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="are both results of d/dcnv2/unified/1/4/seed0, with different"):
        load_results(tmp_path)


def test_several_results_directories_report_together(results_dir, tmp_path):
    from typer.testing import CliRunner

    from featmux.benchmarks.cli import bench_app

    extra = tmp_path / "beyond"
    (extra / "cells").mkdir(parents=True)
    cell = result("unified", "1/4", 0)
    cell["bench"]["method"], cell["test_auc"] = "unified-int8", 0.79
    (extra / "cells" / "a.json").write_text(json.dumps(cell))
    (extra / "manifest.json").write_text(json.dumps({"name": "beyond", "cells": [{"key": "x"}]}))
    files = write_report([results_dir, extra], tmp_path / "both", plots=False)
    text = files.markdown.read_text()
    assert text.startswith("# Benchmark report: run + beyond") and "Grid beyond has 1 cells; 1 have" in text
    assert "| d | dcnv2 | 1/4 | unified-int8 |" in text  # the frontier check sees both directories
    runner = CliRunner()
    done = runner.invoke(bench_app, ["report", str(results_dir), str(extra)])
    assert done.exit_code == 2 and "needs an output directory" in done.output
    done = runner.invoke(bench_app, ["report", str(results_dir), str(extra), "--out", str(tmp_path / "o")])
    assert done.exit_code == 0, done.output
