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
    assert result.exit_code == 2 and "unified method only" in text(result)


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
