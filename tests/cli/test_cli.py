"""The command line end to end, on small slices."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from featmux.cli.main import app

runner = CliRunner()


def text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


FAST = ["--epochs", "1", "--threads", "1", "--no-progress", "--embedding-dim", "4"]


def test_train_synthetic_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    args = [
        "train",
        "--dataset-option",
        "rows=3000",
        "--dataset-option",
        "cardinalities=[10, 100, 1000]",
        "--model",
        "deepfm",
        "--model-option",
        "hidden=[16]",
        "--embedding",
        "unified",
        "--budget",
        "1/4",
        "--batch-size",
        "256",
        "--out",
        str(out),
        *FAST,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("test_auc", "test_logloss", "embedding_params", "train_seconds", "samples_per_second"):
        assert data[key] is not None
    assert 0.0 <= data["test_auc"] <= 1.0
    assert data["rows"] == {"train": 3000, "valid": 375, "test": 375}
    # 1/4 of the collisionless count, in whole rows of width 4
    assert data["embedding_params"] == (round(data["collisionless_params"] / 4) // 4) * 4
    assert "test_auc" in text(result)
    assert data["inference"]["rows"] == 375 and "inference ms / 375 rows" in text(result)  # train --out too


@pytest.mark.real_data
def test_train_criteo_sample_each_method(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    results = {}
    for method, budget in (
        ("collisionless", []),
        ("hashing", ["--budget", "1/4"]),
        ("unified", ["--budget", "1/4"]),
    ):
        out = tmp_path / f"{method}.json"
        args = [
            "train",
            "--dataset",
            "criteo",
            "--data",
            str(shared_data / "criteo" / "wide_resdnn"),
            "--model",
            "dcnv2",
            "--model-option",
            "hidden=[16]",
            "--model-option",
            "cross_layers=1",
            "--embedding",
            method,
            *budget,
            "--batch-size",
            "512",
            "--out",
            str(out),
            *FAST,
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        results[method] = json.loads(out.read_text())
    assert results["collisionless"]["rows"] == {"train": 7200, "valid": 409, "test": 391}
    full = results["collisionless"]["embedding_params"]
    assert results["hashing"]["embedding_params"] <= full // 4
    assert results["unified"]["embedding_params"] == (round(full / 4) // 4) * 4


def test_invalid_config_is_rejected_up_front(tmp_path):
    result = runner.invoke(app, ["train", "--budget", "-3", "--no-progress"])
    assert result.exit_code == 2
    assert "budget" in text(result) and "1/16" in text(result)
    result = runner.invoke(app, ["train", "--model", "gpt", "--no-progress"])
    assert result.exit_code == 2 and "unknown model" in text(result)
    result = runner.invoke(app, ["train", "--embedding", "hashing", "--num-tables", "4", "--no-progress"])
    assert result.exit_code == 2 and "options of the unified method, not of hashing" in text(result)
    result = runner.invoke(app, ["train", "--embedding", "nope", "--no-progress"])
    assert result.exit_code == 2 and "unknown embedding method 'nope'; choose one of" in text(result)
    result = runner.invoke(app, ["train", "--embedding-option", "colour=2", "--no-progress"])
    assert result.exit_code == 2 and "unknown unified option(s) ['colour']" in text(result)


def test_bad_rows_stop_with_location_or_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "clicks.csv"
    rows = ["label,user,ad"] + [f"{i % 2},{i % 7},{i % 5}" for i in range(400)]
    rows[37] = "yes,3,4"
    table.write_text("\n".join(rows) + "\n")
    args = [
        "train",
        "--dataset",
        "csv",
        "--data",
        str(table),
        "--dataset-option",
        "label=label",
        "--dataset-option",
        'categorical=["user", "ad"]',
        "--model",
        "lr",
        *FAST,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "clicks.csv:38" in text(result) and "label" in text(result) and "--skip-bad-rows" in text(result)
    result = runner.invoke(app, [*args, "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad row" in text(result)


@pytest.mark.real_data
def test_data_inspect(shared_data):
    result = runner.invoke(
        app,
        [
            "data",
            "inspect",
            str(shared_data / "frappe"),
            "--dataset",
            "frappe",
            "--split",
            "test",
            "--top",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "28,860 rows" in text(result) and "item" in text(result)


def test_train_online_progressive_validation(tmp_path):
    out, plot = tmp_path / "online.json", tmp_path / "online.png"
    args = [
        "train",
        "--online",
        "--dataset-option",
        "cardinalities=[10, 100, 1000]",
        "--partition-rows",
        "2000",
        "--partitions",
        "3",
        "--embedding-dim",
        "4",
        "--model-option",
        "hidden=[8]",
        "--threads",
        "1",
        "--checkpoint-dir",
        str(tmp_path / "run"),
        "--plot",
        str(plot),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["partitions"]) == 3 and plot.stat().st_size > 0
    # the same directory again without --resume is refused rather than overwritten
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "resume" in text(again)
    assert runner.invoke(app, ["train", "--online", "--epochs", "2"]).exit_code == 2


def _csv_args(tmp_path, bad_line: str = "yes,3,4") -> list[str]:
    table = tmp_path / "clicks.csv"
    rows = ["label,user,ad"] + [f"{i % 2},{i % 7},{i % 5}" for i in range(400)]
    rows[37] = bad_line
    table.write_text("\n".join(rows) + "\n")
    options = ["--dataset-option", "label=label", "--dataset-option", 'categorical=["user", "ad"]']
    return ["train", "--dataset", "csv", "--data", str(table), *options, "--model", "lr", *FAST]


def test_strict_run_never_reuses_a_cache_built_while_skipping(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    args = _csv_args(tmp_path)
    lenient = runner.invoke(app, [*args, "--skip-bad-rows"])
    assert lenient.exit_code == 0, lenient.output
    # the bad row is reported once (by the split it belongs to), not once per split
    assert text(lenient).count("skipped 1 bad row") == 1
    strict = runner.invoke(app, args)
    assert strict.exit_code == 2 and "clicks.csv:38" in text(strict)


def test_skip_bad_rows_reaches_movielens_side_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    users = [f"{u}::{'FM'[u % 2]}::25::{u % 20}::{10000 + u}" for u in range(1, 41)]
    users[4] = "5::F::not-an-age::3::12345"
    (tmp_path / "users.dat").write_text("\n".join(users) + "\n")
    (tmp_path / "movies.dat").write_text("".join(f"{m}::M{m} (1999)::Drama|Comedy\n" for m in range(1, 31)))
    ratings = [f"{1 + i % 40}::{1 + i % 30}::{1 + i % 5}::{i}" for i in range(1200)]
    (tmp_path / "ratings.dat").write_text("\n".join(ratings) + "\n")
    args = ["train", "--dataset", "movielens", "--data", str(tmp_path), "--model", "lr", *FAST]
    strict = runner.invoke(app, args)
    assert strict.exit_code == 2 and "users.dat:5" in text(strict) and "--skip-bad-rows" in text(strict)
    lenient = runner.invoke(app, [*args, "--skip-bad-rows"])
    assert lenient.exit_code == 0, lenient.output
    assert "side tables: skipped 1 bad row" in text(lenient)


def test_error_messages_keep_bracketed_text(tmp_path, monkeypatch):
    import polars as pl

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "badlabel.parquet"
    pl.DataFrame({"label": [0, 1, 0, 1, 0, 7, 1], "user": list(range(7))}).write_parquet(table)
    options = ["--dataset-option", "label=label", "--dataset-option", "categorical=user"]
    result = runner.invoke(app, ["train", "--dataset", "csv", "--data", str(table), *options, *FAST])
    assert result.exit_code == 2
    assert "badlabel.parquet[row5]" in "".join(result.output.split())  # rich may wrap inside it


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), ("epochs: [1\nmodel: lr\n", "not valid YAML"), ("- 1\n- 2\n", "mapping")],
)
def test_config_file_problems_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    for extra in ([], ["--online", "--partitions", "1"]):
        result = runner.invoke(app, ["train", "--config", str(path), *extra])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert (
            text(result).startswith("error:")
            and expected in text(result)
            and "Traceback" not in result.output
        )


def test_damaged_or_foreign_checkpoint_is_an_error_and_no_resume_starts_over(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt"
    base = ["train", "--dataset-option", "rows=600", "--model", "lr", "--checkpoint-dir", str(ckpt), *FAST]
    assert runner.invoke(app, base).exit_code == 0
    other = runner.invoke(app, [*base, "--embedding", "hashing"])  # another config, same directory
    assert other.exit_code == 2 and "different model or data" in text(other) and "--no-resume" in text(other)
    (ckpt / "last.pt").write_bytes(b"not a checkpoint")
    (ckpt / "last.prev.pt").write_bytes(b"nor this")
    damaged = runner.invoke(app, base)
    assert (
        damaged.exit_code == 2 and "no usable checkpoint" in text(damaged) and "--no-resume" in text(damaged)
    )
    fresh = runner.invoke(app, [*base, "--embedding", "HASHING", "--no-resume"])  # any case
    assert fresh.exit_code == 0, fresh.output


def test_out_is_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "res" / "r.json"
    written = []

    import featmux.atomic

    real = featmux.atomic.write_json_atomic
    monkeypatch.setattr(featmux.atomic, "write_json_atomic", lambda p, d: (written.append(p), real(p, d)))
    result = runner.invoke(
        app, ["train", "--dataset-option", "rows=600", "--model", "lr", "--out", str(out), *FAST]
    )
    assert result.exit_code == 0, result.output
    assert written == [out] and json.loads(out.read_text())["model"] == "lr"
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


def test_help_loads_neither_torch_nor_sklearn():
    import subprocess
    import sys

    code = (
        "import sys; from featmux.cli.main import app; print(sorted({'torch', 'sklearn'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "bench" in text(result) and "analyze" in text(result)


def test_more_sub_tables_than_slots_is_refused_before_encoding(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["train", "--dataset-option", "cardinalities=[10, 100]", "--num-tables", "3"])
    assert result.exit_code == 2
    assert "num_tables (3) exceeds the 2 (feature, chunk) slots" in text(result)
    assert not (tmp_path / "cache").exists()  # nothing was encoded


def test_data_inspect_infers_a_csv_and_names_the_carved_share(tmp_path):
    table = tmp_path / "clicks.csv"
    table.write_text("label,user,price\n" + "".join(f"{i % 2},{i % 7},{i / 3}\n" for i in range(200)))
    result = runner.invoke(app, ["data", "inspect", str(table)])
    assert result.exit_code == 0, result.output
    out = text(result)
    assert "detected dataset: csv" in out and "numeric=['price']" in out
    assert "train split: 80% of clicks.csv (rows carved by split seed 0)" in out


@pytest.mark.real_data
def test_data_inspect_detects_frappe(shared_data):
    result = runner.invoke(
        app, ["data", "inspect", str(shared_data / "frappe"), "--split", "test", "--top", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "frappe test split: frappe.test.libfm (28,860 rows)" in text(result)
