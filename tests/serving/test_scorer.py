"""featmux score: one score per input row, in order, equal to predict; bad rows; dataset formats."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import featmux as fm
from featmux.cli.main import app
from featmux.data.errors import DataError
from featmux.serving.scorer import score_file

runner = CliRunner()


def test_csv_scores_equal_predict(artefacts, rows, tmp_path):
    data = tmp_path / "rows.csv"
    rows.drop("click").write_csv(data)  # no label column: scoring does not need one
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        app, ["score", str(artefacts["fp32"]), str(data), "--out", str(out), "--chunk-rows", "64"]
    )
    assert result.exit_code == 0, result.output
    scores = pl.read_csv(out)["score"].to_numpy()
    expected = fm.load(artefacts["fp32"]).predict(rows)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


def test_parquet_in_and_out(artefacts, rows, tmp_path):
    data = tmp_path / "rows.parquet"
    rows.with_columns(
        pl.col("tags").str.split("|").list.eval(pl.element().cast(pl.Int64, strict=False).drop_nulls())
    ).write_parquet(data)
    summary = score_file(fm.load(artefacts["fp32"]), data, tmp_path / "s.parquet", chunk_rows=50)
    assert (summary.rows, summary.scored, summary.skipped) == (200, 200, 0)
    scores = pl.read_parquet(tmp_path / "s.parquet")["score"].to_numpy()
    np.testing.assert_allclose(scores, fm.load(artefacts["fp32"]).predict(rows), rtol=0, atol=1e-6)


def test_bad_rows_stop_or_score_empty(artefacts, rows, tmp_path):
    lines = rows.write_csv().splitlines()
    header = lines[0].split(",")
    bad = lines[5].split(",")
    bad[header.index("user")] = "abc"  # data row 5, file line 6
    lines[5] = ",".join(bad)
    lines.insert(50, "")  # a blank line is not a row
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    model = fm.load(artefacts["fp32"])
    with pytest.raises(DataError, match=r"bad\.csv:6: field 'user': not an integer"):
        score_file(model, data, tmp_path / "s.csv")
    result = runner.invoke(
        app, ["score", str(artefacts["fp32"]), str(data), "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 2 and "bad.csv:6: field 'user'" in " ".join(result.output.split())
    lines.append("1,2,three")  # too few fields: the last row
    data.write_text("\n".join(lines) + "\n")
    summary = score_file(model, data, tmp_path / "s.csv", skip_bad_rows=True, chunk_rows=16)
    assert (summary.rows, summary.scored, summary.skipped) == (201, 199, 2)
    scores = pl.read_csv(tmp_path / "s.csv")["score"]
    assert scores.len() == 201 and scores.is_null().to_list() == [i in (4, 200) for i in range(201)]
    expected = model.predict(rows)
    np.testing.assert_allclose(scores.drop_nulls().to_numpy(), np.delete(expected, 4), rtol=0, atol=1e-6)


def test_dataset_format_file(tmp_path):
    """--dataset frappe scores a libFM file with a model trained on that format."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "frappe"
    folder.mkdir()
    starts = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149]
    sizes = [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233]
    for name, n in (("train", 600), ("validation", 100), ("test", 100)):
        idx = np.stack([s + rng.integers(0, min(z, 20), n) for s, z in zip(starts, sizes, strict=True)], 1)
        label = np.where(idx[:, 0] % 2 == 0, "1", "-1")
        text = "\n".join(f"{y} " + " ".join(f"{i}:1" for i in row) for y, row in zip(label, idx, strict=True))
        (folder / f"frappe.{name}.libfm").write_text(text + "\n")
    args = ["train", "--dataset", "frappe", "--data", str(folder), "--epochs", "1", "--embedding-dim", "4"]
    args += ["--model", "fm", "--checkpoint-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    assert runner.invoke(app, args).exit_code == 0
    test_file = folder / "frappe.test.libfm"
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        app, ["score", str(tmp_path / "run"), str(test_file), "--dataset", "frappe", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = pl.read_csv(out)["score"].to_numpy()
    from featmux.data.readers.frappe import read_frappe

    expected = fm.load(tmp_path / "run").predict(next(read_frappe(test_file)))
    assert scores.shape == (100,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
